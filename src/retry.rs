//! The one HTTP retry policy, for registry and Debian archive requests
//! alike: how many attempts, how long to wait between them, and which
//! failures are worth another attempt. Callers classify nothing themselves.
use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode, header};

/// How often to try and how long to wait in between.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Attempts in all, the first one included.
    pub attempts: u32,
    /// The first wait; each further one doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        // Sixteen: a registry failing half its requests (as the fault
        // tests' worst case does) still lets one through in all but 1 of
        // 65,000 cases; waits are capped low so that costs seconds.
        Retry {
            attempts: 16,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// A server's `Retry-After` is waited for, but not longer than this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// An answer worth asking again: the server timed out waiting, asked us to
/// slow down, or failed on its side.
pub fn transient_status(s: StatusCode) -> bool {
    s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

/// An exchange worth trying again: no connection, a timeout, a request or
/// a body cut short.
pub fn transient_error(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode()
}

/// The wait a server asked for with `Retry-After: SECONDS`.
pub fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// One attempt's failure: worth another attempt (after the wait the
/// server asked for, if any) or not.
#[derive(Debug)]
pub enum Failure<E> {
    Transient { error: E, wait: Option<Duration> },
    Fatal(E),
}

impl<E> Failure<E> {
    /// Worth another attempt after the usual wait.
    pub fn again(error: E) -> Failure<E> {
        Failure::Transient { error, wait: None }
    }
}

impl<E> From<E> for Failure<E> {
    fn from(e: E) -> Failure<E> {
        Failure::Fatal(e)
    }
}

/// The waits of one operation's attempts, for loops that decide more than
/// "again or not" (answering auth challenges, resuming uploads).
#[derive(Debug, Clone)]
pub struct Backoff {
    left: u32,
    delay: Duration,
    max: Duration,
    /// No wait runs past this.
    deadline: Option<Instant>,
}

impl Backoff {
    /// After a failed attempt: how long to wait before the next one (what
    /// the server `asked`, else the doubling delay), or None when the
    /// attempts or the time budget are used up.
    pub fn next(&mut self, asked: Option<Duration>) -> Option<Duration> {
        if self.left == 0 {
            return None;
        }
        let wait = asked.unwrap_or(self.delay);
        if self.deadline.is_some_and(|d| Instant::now() + wait > d) {
            return None;
        }
        self.left -= 1;
        self.delay = (self.delay * 2).min(self.max);
        Some(wait)
    }
}

impl Retry {
    /// The waits for one operation, starting afresh.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            left: self.attempts.saturating_sub(1),
            delay: self.first_delay,
            max: self.max_delay,
            deadline: None,
        }
    }

    /// The waits for one operation that must be over by `deadline`.
    pub fn backoff_until(&self, deadline: Instant) -> Backoff {
        Backoff {
            deadline: Some(deadline),
            ..self.backoff()
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts
    /// run out, waiting longer each time.
    pub async fn run<T, E, F, Fut>(&self, mut attempt: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure<E>>>,
    {
        let mut backoff = self.backoff();
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(Failure::Transient { error, wait }) => match backoff.next(wait) {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return Err(error),
                },
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_honour_the_server() {
        let policy = Retry {
            attempts: 5,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        let mut b = policy.backoff();
        let ms = Duration::from_millis;
        assert_eq!(b.next(None), Some(ms(100)));
        assert_eq!(b.next(Some(ms(5000))), Some(ms(5000)));
        assert_eq!(b.next(None), Some(ms(300)));
        assert_eq!(b.next(None), Some(ms(300)));
        assert_eq!(b.next(None), None, "five attempts, four waits");
    }

    #[test]
    fn no_wait_runs_past_the_deadline() {
        let policy = Retry {
            attempts: 100,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(1),
        };
        let mut b = policy.backoff_until(Instant::now() + Duration::from_millis(2500));
        assert_eq!(b.next(None), Some(Duration::from_secs(1)));
        assert_eq!(b.next(Some(Duration::from_secs(60))), None, "past it");
        let mut spent = policy.backoff_until(Instant::now());
        assert_eq!(spent.next(None), None, "no budget left");
    }

    #[test]
    fn transient_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 416] {
            assert!(!transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn run_stops_at_fatal_and_after_the_last_attempt() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let policy = Retry {
            attempts: 3,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        let mut n = 0;
        let r: Result<(), u32> = rt.block_on(policy.run(|| {
            n += 1;
            let k = n;
            async move { Err(Failure::again(k)) }
        }));
        assert_eq!((r, n), (Err(3), 3));
        let mut n = 0;
        let r: Result<(), u32> = rt.block_on(policy.run(|| {
            n += 1;
            async { Err(Failure::Fatal(7)) }
        }));
        assert_eq!((r, n), (Err(7), 1));
    }
}
