//! The network and the caches: signed indexes of a mirror's suites, and
//! `.deb` downloads verified against them.
//!
//! Layout below the cache directory:
//! `indexes/<sha256>` (compressed indexes, by the hash the Release gave),
//! `debs/sha256/<sha256>.deb` and `<sha256>.partial` while downloading.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::{StatusCode, header};
use sha2::{Digest, Sha256};

use super::control::{self, ControlError};
use super::package::Package;
use super::release::{self, FileEntry, Keyring, Release, ReleaseError};
use super::sources::{Mirror, SignedBy, Suite};
use crate::retry::{self, Retry};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("setting up the HTTP client: {0}")]
    Setup(String),
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{url}: {source}")]
    Release { url: String, source: ReleaseError },
    #[error("{url} is signed as suite {found:?}, not {expected:?}")]
    WrongSuite {
        url: String,
        expected: String,
        found: String,
    },
    #[error("{url}: the Release lists no {path}")]
    NotListed { url: String, path: String },
    #[error(
        "index {path} does not match its Release: expected {expected_size} bytes with SHA256 {expected_sha256}, got {actual_size} bytes with SHA256 {actual_sha256}"
    )]
    IndexMismatch {
        path: String,
        expected_size: u64,
        expected_sha256: String,
        actual_size: u64,
        actual_sha256: String,
    },
    #[error("{url}: {reason}")]
    Decode { url: String, reason: String },
    #[error("{url}: {source}")]
    Parse { url: String, source: ControlError },
    #[error(
        "{package} {version}: the download does not match the index: expected {expected_size} bytes with SHA256 {expected_sha256}, got {actual_size} bytes with SHA256 {actual_sha256}"
    )]
    DebMismatch {
        package: String,
        version: String,
        expected_size: u64,
        expected_sha256: String,
        actual_size: u64,
        actual_sha256: String,
    },
    #[error("{package} {version}: bad SHA256 in the index: {sha256:?}")]
    BadHash {
        package: String,
        version: String,
        sha256: String,
    },
}

/// Download progress. The library reports; the command line draws.
pub trait Progress: Sync {
    fn started(&self, _name: &str, _size: u64) {}
    fn advanced(&self, _bytes: u64) {}
    fn finished(&self, _name: &str) {}
    /// Already in the cache: nothing to download.
    fn cached(&self, _name: &str, _size: u64) {}
}

/// Reports nowhere.
pub struct Silent;
impl Progress for Silent {}

/// A package and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePackage {
    pub package: Package,
    /// `bookworm-security`.
    pub suite: Arc<str>,
    /// The repository root its `Filename` is below: `http://deb.debian.org/debian-security`.
    pub base: Arc<str>,
}

/// What [`Archive::indexes`] read: each suite's verified Release, and
/// every package of their indexes.
#[derive(Debug, Clone)]
pub struct Indexes {
    pub releases: Vec<(Suite, Release)>,
    pub packages: Vec<ArchivePackage>,
}

impl Indexes {
    /// The newest `Date` of the suites' Releases (a SOURCE_DATE_EPOCH).
    pub fn date(&self) -> i64 {
        newest_date(&self.releases)
    }
}

fn newest_date(releases: &[(Suite, Release)]) -> i64 {
    releases.iter().map(|(_, r)| r.date).max().unwrap_or(0)
}

/// What [`Archive::parsed_indexes`] read: as [`Indexes`], each index's
/// packages in a list of their own.
#[derive(Debug, Clone)]
pub struct ParsedIndexes {
    pub releases: Vec<(Suite, Release)>,
    pub files: Vec<ParsedIndex>,
}

/// The packages of one index, in its order.
#[derive(Debug, Clone)]
pub struct ParsedIndex {
    /// `bookworm-security`.
    pub suite: Arc<str>,
    /// The repository root the packages' `Filename`s are below.
    pub base: Arc<str>,
    pub packages: Vec<Package>,
}

impl ParsedIndexes {
    /// The newest `Date` of the suites' Releases (a SOURCE_DATE_EPOCH).
    pub fn date(&self) -> i64 {
        newest_date(&self.releases)
    }

    /// Every package of the indexes in order, and (same position) the
    /// repository each came from. The first index's list is grown in place,
    /// so the largest (the main suite's) is not copied.
    pub fn into_lists(self) -> (Vec<Package>, Vec<Arc<str>>) {
        let total = self.files.iter().map(|f| f.packages.len()).sum();
        let mut packages: Vec<Package> = Vec::new();
        let mut bases = Vec::with_capacity(total);
        for f in self.files {
            bases.extend(std::iter::repeat_n(f.base, f.packages.len()));
            if packages.is_empty() {
                packages = f.packages;
                packages.reserve(total - packages.len());
            } else {
                packages.extend(f.packages);
            }
        }
        (packages, bases)
    }
}

/// A verified index, still compressed.
#[derive(Debug, Clone)]
pub struct IndexFile {
    pub suite: Suite,
    pub url: String,
    /// `main/binary-amd64/Packages`.
    pub path: String,
    data: Vec<u8>,
    compression: Compression,
    /// The Release's entry for the decompressed text, when it lists one.
    plain: Option<FileEntry>,
    /// False when it came from the cache.
    pub downloaded: bool,
}

impl IndexFile {
    /// Decompresses and parses the index (CPU-bound: off the async
    /// threads).
    pub fn parse(self) -> Result<Vec<Package>, FetchError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parsed = match self.compression {
            Compression::None => {
                let text = std::str::from_utf8(&self.data)
                    .map_err(|_| self.decode("not UTF-8 text".into()))?;
                control::parse_packages_in(text, threads)
            }
            Compression::Gzip => {
                self.parse_stream(flate2::read::GzDecoder::new(&self.data[..]), threads)?
            }
            Compression::Xz => {
                self.parse_stream(liblzma::read::XzDecoder::new(&self.data[..]), threads)?
            }
        };
        parsed.map_err(|source| FetchError::Parse {
            url: self.url.clone(),
            source,
        })
    }

    fn decode(&self, reason: String) -> FetchError {
        FetchError::Decode {
            url: self.url.clone(),
            reason,
        }
    }

    /// Decompresses on this thread, hashing the text as it comes, while
    /// other threads parse it in parts (cut at blank lines): the main
    /// suite's index takes about as long to inflate as to parse, together
    /// most of `imgbuild lock`'s work. Once the text is read, this thread
    /// parses too. Errors are those of one pass over the whole: the
    /// decoder's, a text that does not match the Release, then the
    /// parser's.
    fn parse_stream(
        &self,
        mut decoder: impl Read,
        threads: usize,
    ) -> Result<Result<Vec<Package>, ControlError>, FetchError> {
        /// Small enough that parsing starts early and the last part left
        /// when the text is all read is short.
        const PART: usize = 1 << 20;
        let (send, receive) = std::sync::mpsc::channel::<(usize, Vec<u8>)>();
        let receive = Mutex::new(receive);
        let work = || {
            let mut done = Vec::new();
            loop {
                let next = receive.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((k, part)) = next else { break };
                done.push((k, std::str::from_utf8(&part).ok().map(control::Part::parse)));
            }
            done
        };
        let (read, mut parts) = std::thread::scope(|s| {
            // The text comes at the decoder's pace, which two or three
            // parsers keep up with, whatever the cores.
            let helpers = threads.saturating_sub(1).clamp(1, 3);
            let helpers: Vec<_> = (0..helpers).map(|_| s.spawn(work)).collect();
            let mut read = || -> Result<(u64, String), FetchError> {
                let mut hasher = Sha256::new();
                let mut size = 0;
                let mut text: Vec<u8> = Vec::new();
                for k in 0.. {
                    let start = text.len();
                    text.reserve(PART);
                    let n = (&mut decoder)
                        .take(PART as u64)
                        .read_to_end(&mut text)
                        .map_err(|e| self.decode(e.to_string()))?;
                    hasher.update(&text[start..]);
                    size += n as u64;
                    if n == 0 {
                        break;
                    }
                    if let Some(cut) = control::last_cut(&text) {
                        let rest = text[cut..].to_vec();
                        text.truncate(cut);
                        // The receivers outlive this loop.
                        let _ = send.send((k, std::mem::replace(&mut text, rest)));
                    }
                }
                if !text.is_empty() {
                    let _ = send.send((usize::MAX, text));
                }
                Ok((size, hex::encode(hasher.finalize())))
            };
            let read = read();
            drop(send);
            let mut parts = work();
            for h in helpers {
                parts.extend(
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                );
            }
            (read, parts)
        });
        let (size, sha256) = read?;
        // The decompressed text is listed too: a decoder bug must not
        // pass for the signed index.
        if let Some(plain) = &self.plain
            && (size != plain.size || sha256 != plain.sha256)
        {
            return Err(FetchError::IndexMismatch {
                path: self.path.clone(),
                expected_size: plain.size,
                expected_sha256: plain.sha256.clone(),
                actual_size: size,
                actual_sha256: sha256,
            });
        }
        parts.sort_by_key(|&(k, _)| k);
        let parts: Option<Vec<control::Part>> = parts.into_iter().map(|(_, p)| p).collect();
        let parts = parts.ok_or_else(|| self.decode("not UTF-8 text".into()))?;
        Ok(control::join_parts(parts))
    }
}

/// A mirror's suites, the keys that must sign them, and the cache.
pub struct Archive {
    http: reqwest::Client,
    suites: Vec<(Suite, Arc<Keyring>)>,
    cache: PathBuf,
    pub retry: Retry,
    /// Downloads at once.
    pub parallel: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Xz,
}

/// One attempt's failure: worth another attempt or not.
type Failure = retry::Failure<FetchError>;

impl Archive {
    /// The suites of `suite` on `mirror` (see [`Mirror::suites`]); a
    /// repository without its own `Signed-By` must be signed by a key in
    /// the `keyrings` files.
    pub fn new(
        mirror: &Mirror,
        suite: &str,
        keyrings: &[PathBuf],
        cache: &Path,
    ) -> Result<Archive, FetchError> {
        let mut default: Option<Arc<Keyring>> = None;
        let mut suites = Vec::new();
        for s in mirror.suites(suite) {
            let url = s.dist_url();
            let in_release = |source| FetchError::Release {
                url: url.clone(),
                source,
            };
            let ring = match &s.repository.signed_by {
                Some(SignedBy::File(p)) => Arc::new(Keyring::load(&[p]).map_err(in_release)?),
                Some(SignedBy::Inline(text)) => {
                    let mut k = Keyring::default();
                    k.add_bytes(text.as_bytes(), "the inline Signed-By key")
                        .map_err(in_release)?;
                    Arc::new(k)
                }
                None => match &default {
                    Some(k) => k.clone(),
                    None => {
                        let k = Arc::new(Keyring::load(keyrings).map_err(in_release)?);
                        if k.is_empty() {
                            return Err(in_release(ReleaseError::Keyring {
                                name: "(none)".into(),
                                reason: "no keyring given to verify the archive with".into(),
                            }));
                        }
                        default = Some(k.clone());
                        k
                    }
                },
            };
            suites.push((s, ring));
        }
        let builder = || {
            reqwest::Client::builder()
                .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(15))
                .read_timeout(Duration::from_secs(60))
        };
        // The system's CA certificates are needed for https:// only: a
        // machine without them (no ca-certificates package) still reads an
        // http:// mirror, whose InRelease signature is what is trusted.
        let plain = suites
            .iter()
            .all(|(s, _)| s.dist_url().starts_with("http://"));
        let http = match builder().build() {
            Ok(h) => h,
            Err(_) if plain => builder()
                .tls_certs_only(Vec::new())
                .build()
                .map_err(|e| FetchError::Setup(crate::registry::client::describe(&e)))?,
            Err(e) => {
                return Err(FetchError::Setup(format!(
                    "{}; is the ca-certificates package installed?",
                    crate::registry::client::describe(&e)
                )));
            }
        };
        Ok(Archive {
            http,
            suites,
            cache: cache.to_path_buf(),
            retry: Retry {
                attempts: 4,
                first_delay: Duration::from_millis(300),
                max_delay: Duration::from_secs(5),
            },
            parallel: 8,
        })
    }

    pub fn suites(&self) -> impl Iterator<Item = &Suite> {
        self.suites.iter().map(|(s, _)| s)
    }

    /// Where a verified `.deb` with this SHA256 lives in the cache.
    pub fn deb_path(&self, sha256: &str) -> PathBuf {
        self.cache.join("debs/sha256").join(format!("{sha256}.deb"))
    }

    /// Fetches and verifies each suite's InRelease, then its
    /// `<component>/binary-<arch>/Packages` indexes (from the cache when
    /// the Release still lists the same hash), and parses them. `now` is
    /// unix seconds.
    pub async fn indexes(&self, arch: &str, now: i64) -> Result<Indexes, FetchError> {
        let parsed = self.parsed_indexes(arch, now).await?;
        let packages = parsed
            .files
            .into_iter()
            .flat_map(|f| {
                let (suite, base) = (f.suite, f.base);
                f.packages.into_iter().map(move |package| ArchivePackage {
                    package,
                    suite: suite.clone(),
                    base: base.clone(),
                })
            })
            .collect();
        Ok(Indexes {
            releases: parsed.releases,
            packages,
        })
    }

    /// As [`Archive::indexes`], without tagging each package with its
    /// origin: one list per index file.
    pub async fn parsed_indexes(&self, arch: &str, now: i64) -> Result<ParsedIndexes, FetchError> {
        // Each index is parsed as soon as it is verified, while the other
        // suites' Releases are still being fetched and checked; their
        // errors come first all the same.
        let (releases, parsing) = self
            .verified_indexes(arch, now, |f| {
                let suite: Arc<str> = f.suite.name.as_str().into();
                let base: Arc<str> = f.suite.repository.uri.as_str().into();
                (suite, base, tokio::task::spawn_blocking(move || f.parse()))
            })
            .await?;
        let mut files = Vec::with_capacity(parsing.len());
        for (suite, base, parsed) in parsing {
            let packages = parsed
                .await
                .map_err(|e| FetchError::Setup(format!("the index parser stopped: {e}")))??;
            files.push(ParsedIndex {
                suite,
                base,
                packages,
            });
        }
        Ok(ParsedIndexes { releases, files })
    }

    /// The network half of [`Archive::indexes`]: verified Releases and
    /// the verified, cached index files, not yet parsed.
    pub async fn index_files(
        &self,
        arch: &str,
        now: i64,
    ) -> Result<(Vec<(Suite, Release)>, Vec<IndexFile>), FetchError> {
        self.verified_indexes(arch, now, |f| f).await
    }

    /// [`Archive::index_files`], handing each file to `each` as soon as
    /// it is verified.
    async fn verified_indexes<T>(
        &self,
        arch: &str,
        now: i64,
        each: impl Fn(IndexFile) -> T,
    ) -> Result<(Vec<(Suite, Release)>, Vec<T>), FetchError> {
        let each = &each;
        let per_suite = self
            .suites
            .iter()
            .enumerate()
            .map(|(i, (suite, ring))| async move {
                let release = match self.release(suite, ring, now).await {
                    Ok(r) => r,
                    // Debian's archive has `-updates` and `-security` for every
                    // stable suite; a private repository (aptly, reprepro) often
                    // has the suite alone. Which one this is, the main suite's
                    // Release says (checked below).
                    Err(FetchError::Status { status: 404, .. }) if i > 0 => return Ok(None),
                    Err(e) => return Err(e),
                };
                let mut files = Vec::new();
                for comp in &suite.components {
                    files.push(each(self.index_file(suite, &release, comp, arch).await?));
                }
                Ok::<_, FetchError>(Some(((suite.clone(), release), files)))
            });
        let mut releases = Vec::new();
        let mut files = Vec::new();
        let mut missing = Vec::new();
        for (i, got) in futures_util::future::try_join_all(per_suite)
            .await?
            .into_iter()
            .enumerate()
        {
            match got {
                Some((r, f)) => {
                    releases.push(r);
                    files.extend(f);
                }
                None => missing.push(i),
            }
        }
        let debian = releases
            .first()
            .is_some_and(|(_, r): &(Suite, Release)| r.origin == "Debian");
        if let Some(&i) = missing.first().filter(|_| debian) {
            let suite = &self.suites[i].0;
            return Err(FetchError::Status {
                url: format!("{}/InRelease", suite.dist_url()),
                status: 404,
            });
        }
        Ok((releases, files))
    }

    /// Fetches `dists/<suite>/InRelease` and verifies its signature,
    /// validity and that it is the suite asked for.
    async fn release(
        &self,
        suite: &Suite,
        ring: &Arc<Keyring>,
        now: i64,
    ) -> Result<Release, FetchError> {
        let url = format!("{}/InRelease", suite.dist_url());
        let body = self
            .retry
            .run(|| async {
                let resp = self.get(&url, None).await?;
                let bytes = resp.bytes().await.map_err(|e| transient(&url, &e))?;
                Ok(bytes)
            })
            .await?;
        let text = String::from_utf8(body.to_vec()).map_err(|_| FetchError::Decode {
            url: url.clone(),
            reason: "not UTF-8 text".into(),
        })?;
        // Signature checks are CPU work: off the runtime's thread, so that
        // the other suites' requests go on meanwhile.
        let ring = ring.clone();
        let verified =
            tokio::task::spawn_blocking(move || release::verify_inrelease(&text, &ring, now))
                .await
                .map_err(|e| FetchError::Setup(format!("the signature check stopped: {e}")))?;
        let release = verified.map_err(|source| FetchError::Release {
            url: url.clone(),
            source,
        })?;
        // A validly signed Release of another suite (an older one, say)
        // must not pass for this one.
        if release.codename != suite.name && release.suite != suite.name {
            return Err(FetchError::WrongSuite {
                url,
                expected: suite.name.clone(),
                found: format!("{}/{}", release.suite, release.codename),
            });
        }
        Ok(release)
    }

    async fn index_file(
        &self,
        suite: &Suite,
        release: &Release,
        comp: &str,
        arch: &str,
    ) -> Result<IndexFile, FetchError> {
        let dir = format!("{comp}/binary-{arch}");
        // apt's preference: small downloads. Some suites list the plain
        // `Packages` only to check the decompressed text against.
        let (name, kind) = [
            ("Packages.gz", Compression::Gzip),
            ("Packages.xz", Compression::Xz),
            ("Packages", Compression::None),
        ]
        .into_iter()
        .find(|(n, _)| release.sha256.contains_key(&format!("{dir}/{n}")))
        .ok_or_else(|| FetchError::NotListed {
            url: format!("{}/InRelease", suite.dist_url()),
            path: format!("{dir}/Packages.gz"),
        })?;
        let path = format!("{dir}/{name}");
        let entry = release.sha256[&path].clone();
        let plain = release.sha256.get(&format!("{dir}/Packages")).cloned();
        let url = format!("{}/{path}", suite.dist_url());
        let cached = self.cache.join("indexes").join(&entry.sha256);
        let mut downloaded = false;
        let check = (cached.clone(), entry.clone());
        let verified = tokio::task::spawn_blocking(move || read_verified(&check.0, &check.1))
            .await
            .map_err(|e| FetchError::Setup(format!("the index check stopped: {e}")))?;
        let data = match verified {
            Some(data) => data,
            None => {
                downloaded = true;
                // By-hash names do not change under a mirror update
                // between our InRelease and index requests.
                let by_hash = format!("{}/{dir}/by-hash/SHA256/{}", suite.dist_url(), entry.sha256);
                let data = match release.acquire_by_hash {
                    true => match self.fetch_index(&by_hash, &path, &entry).await {
                        Err(FetchError::Status { status: 404, .. }) => {
                            self.fetch_index(&url, &path, &entry).await?
                        }
                        other => other?,
                    },
                    false => self.fetch_index(&url, &path, &entry).await?,
                };
                let dir = crate::fsutil::parent_dir(&cached);
                std::fs::create_dir_all(dir)
                    .and_then(|()| crate::fsutil::write_atomic(dir, &cached, &data))
                    .map_err(|source| FetchError::Io {
                        path: cached.clone(),
                        source,
                    })?;
                data
            }
        };
        Ok(IndexFile {
            suite: suite.clone(),
            url,
            path: format!("{dir}/Packages"),
            data,
            compression: kind,
            plain,
            downloaded,
        })
    }

    /// Downloads an index, checking size and hash before anything reads it.
    async fn fetch_index(
        &self,
        url: &str,
        path: &str,
        entry: &FileEntry,
    ) -> Result<Vec<u8>, FetchError> {
        self.retry
            .run(|| async {
                let resp = self.get(url, None).await?;
                let mut data = Vec::with_capacity(entry.size as usize);
                let mut body = resp.bytes_stream();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| transient(url, &e))?;
                    data.extend_from_slice(&chunk);
                    if data.len() as u64 > entry.size {
                        // Do not read an endless answer to its end.
                        break;
                    }
                }
                let actual = hex::encode(Sha256::digest(&data));
                if data.len() as u64 != entry.size || actual != entry.sha256 {
                    return Err(Failure::Fatal(FetchError::IndexMismatch {
                        path: path.to_string(),
                        expected_size: entry.size,
                        expected_sha256: entry.sha256.clone(),
                        actual_size: data.len() as u64,
                        actual_sha256: actual,
                    }));
                }
                Ok(data)
            })
            .await
    }

    /// Downloads the packages into the cache (skipping those already
    /// there), `parallel` at once, resuming partial files; returns the
    /// cached paths in the packages' order.
    pub async fn download(
        &self,
        packages: &[ArchivePackage],
        progress: &dyn Progress,
    ) -> Result<Vec<PathBuf>, FetchError> {
        let dir = self.cache.join("debs/sha256");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| FetchError::Io {
                path: dir.clone(),
                source,
            })?;
        futures_util::stream::iter(packages)
            .map(|p| self.download_one(p, progress))
            .buffered(self.parallel.max(1))
            .try_collect()
            .await
    }

    async fn download_one(
        &self,
        ap: &ArchivePackage,
        progress: &dyn Progress,
    ) -> Result<PathBuf, FetchError> {
        let p = &ap.package;
        let hex = p.sha256.to_ascii_lowercase();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FetchError::BadHash {
                package: p.name.clone(),
                version: p.version.clone(),
                sha256: p.sha256.clone(),
            });
        }
        let dest = self.deb_path(&hex);
        // A cached file was verified before its rename; hashing it again
        // catches a cache damaged since, for the price of a read.
        if let Some((size, sha)) = hash_file(&dest).await?
            && size == p.size
            && sha == hex
        {
            progress.cached(&p.name, p.size);
            return Ok(dest);
        }
        remove_if_present(&dest).await?;
        let partial = dest.with_extension("partial");
        let url = format!("{}/{}", ap.base, p.filename);
        progress.started(&p.name, p.size);
        let mut fresh_after_mismatch = false;
        loop {
            let result = self
                .retry
                .run(|| self.download_attempt(&url, &partial, p.size, progress))
                .await;
            let (size, sha, resumed) = result?;
            if size == p.size && sha == hex {
                break;
            }
            remove_if_present(&partial).await?;
            // A partial file left by an earlier run may have been the
            // damaged part: start over once before blaming the mirror.
            if resumed && !fresh_after_mismatch {
                fresh_after_mismatch = true;
                continue;
            }
            return Err(FetchError::DebMismatch {
                package: p.name.clone(),
                version: p.version.clone(),
                expected_size: p.size,
                expected_sha256: hex,
                actual_size: size,
                actual_sha256: sha,
            });
        }
        tokio::fs::rename(&partial, &dest)
            .await
            .map_err(|source| FetchError::Io {
                path: dest.clone(),
                source,
            })?;
        progress.finished(&p.name);
        Ok(dest)
    }

    /// One try at completing `partial`: continues it with a Range request
    /// when it has data. Returns the final size, its SHA256 and whether an
    /// earlier partial file was kept.
    async fn download_attempt(
        &self,
        url: &str,
        partial: &Path,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<(u64, String, bool), Failure> {
        let io = |source| {
            Failure::Fatal(FetchError::Io {
                path: partial.to_path_buf(),
                source,
            })
        };
        let mut hasher = Sha256::new();
        let mut have = match hash_into(partial, &mut hasher).await.map_err(io)? {
            Some(n) if n <= size => n,
            Some(_) => {
                remove_if_present(partial).await?;
                hasher = Sha256::new();
                0
            }
            None => 0,
        };
        if have == size && size > 0 {
            return Ok((have, hex::encode(hasher.finalize()), true));
        }
        let resp = match self.get(url, (have > 0).then_some(have)).await {
            Err(Failure::Fatal(FetchError::Status { status: 416, .. })) => {
                // The server will not continue this file: start over.
                remove_if_present(partial).await?;
                return Err(Failure::again(FetchError::Status {
                    url: url.to_string(),
                    status: 416,
                }));
            }
            other => other?,
        };
        let resumed = have > 0 && resp.status() == StatusCode::PARTIAL_CONTENT && {
            let range = resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            range.starts_with(&format!("bytes {have}-"))
        };
        if !resumed && have > 0 {
            // The server ignored the Range (or answered another one).
            hasher = Sha256::new();
            have = 0;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(partial)
            .await
            .map_err(io)?;
        let mut body = resp.bytes_stream();
        use tokio::io::AsyncWriteExt;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| transient(url, &e))?;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
            have += chunk.len() as u64;
            progress.advanced(chunk.len() as u64);
            if have > size {
                break;
            }
        }
        file.flush().await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        Ok((have, hex::encode(hasher.finalize()), resumed))
    }

    /// A GET that succeeded (2xx), from `from` onwards when given.
    async fn get(&self, url: &str, from: Option<u64>) -> Result<reqwest::Response, Failure> {
        let mut req = self.http.get(url);
        if let Some(from) = from {
            req = req.header(header::RANGE, format!("bytes={from}-"));
        }
        let resp = req.send().await.map_err(|e| transient(url, &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let error = FetchError::Status {
            url: url.to_string(),
            status: status.as_u16(),
        };
        Err(if retry::transient_status(status) {
            Failure::Transient {
                error,
                wait: retry::retry_after(&resp),
            }
        } else {
            Failure::Fatal(error)
        })
    }
}

/// Connection resets, timeouts and broken bodies are worth another try.
fn transient(url: &str, e: &reqwest::Error) -> Failure {
    let err = FetchError::Http {
        url: url.to_string(),
        reason: crate::registry::client::describe(e),
    };
    if retry::transient_error(e) {
        Failure::again(err)
    } else {
        Failure::Fatal(err)
    }
}

/// The cached index, if it is there and still what the Release names.
fn read_verified(path: &Path, entry: &FileEntry) -> Option<Vec<u8>> {
    let data = std::fs::read(path).ok()?;
    (data.len() as u64 == entry.size && hex::encode(Sha256::digest(&data)) == entry.sha256)
        .then_some(data)
}

/// Feeds a file into `hasher`; None when it does not exist.
async fn hash_into(path: &Path, hasher: &mut Sha256) -> std::io::Result<Option<u64>> {
    use tokio::io::AsyncReadExt;
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(Some(total));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// Size and SHA256 of a file, None when it does not exist.
async fn hash_file(path: &Path) -> Result<Option<(u64, String)>, FetchError> {
    let mut h = Sha256::new();
    match hash_into(path, &mut h).await {
        Ok(Some(n)) => Ok(Some((n, hex::encode(h.finalize())))),
        Ok(None) => Ok(None),
        Err(source) => Err(FetchError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

async fn remove_if_present(path: &Path) -> Result<(), FetchError> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FetchError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::sources;
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[derive(Default)]
    struct Count {
        started: AtomicU64,
        bytes: AtomicU64,
        cached: AtomicU64,
    }

    impl Progress for Count {
        fn started(&self, _: &str, _: u64) {
            self.started.fetch_add(1, Ordering::Relaxed);
        }
        fn advanced(&self, n: u64) {
            self.bytes.fetch_add(n, Ordering::Relaxed);
        }
        fn cached(&self, _: &str, _: u64) {
            self.cached.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The host's sources, the real archive, the real keyring.
    /// An index of `n` packages, every seventh with a CRLF paragraph.
    fn packages_text(n: usize) -> String {
        let mut text = String::new();
        for i in 0..n {
            let p = format!(
                "Package: pkg{i}\nVersion: 1.{i}-1\nArchitecture: amd64\n\
                 Depends: libc6 (>= 2.36), pkg{} | other\nDescription: number {i}\n \
                 more about it\nFilename: pool/main/p/pkg{i}.deb\nSize: {i}\n\
                 SHA256: {:064x}\n\n",
                i / 2,
                i
            );
            text.push_str(&if i % 7 == 3 {
                p.replace('\n', "\r\n")
            } else {
                p
            });
        }
        text
    }

    fn index_file(text: &[u8], compression: Compression, plain: bool) -> IndexFile {
        let data = match compression {
            Compression::None => text.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(text).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 0);
                e.write_all(text).unwrap();
                e.finish().unwrap()
            }
        };
        IndexFile {
            suite: Suite {
                repository: sources::Repository {
                    uri: "http://mirror/debian".into(),
                    signed_by: None,
                },
                name: "trixie".into(),
                components: vec!["main".into()],
            },
            url: "http://mirror/debian/dists/trixie/main/binary-amd64/Packages.gz".into(),
            path: "main/binary-amd64/Packages".into(),
            data,
            compression,
            plain: plain.then(|| FileEntry {
                size: text.len() as u64,
                sha256: hex::encode(Sha256::digest(text)),
            }),
            downloaded: false,
        }
    }

    /// Decompressed and parsed in parts as it streams, an index gives what
    /// one pass over its whole text does: packages, errors and lines.
    #[test]
    fn index_parts_parse_as_the_whole() {
        // ~3 MB: several parts.
        let text = packages_text(12_000);
        let whole = control::parse_packages(&text).unwrap();
        for c in [Compression::Gzip, Compression::Xz, Compression::None] {
            assert_eq!(index_file(text.as_bytes(), c, true).parse().unwrap(), whole);
        }
        // A bad field near the end, a syntax error after it: the syntax
        // error is reported, with its line in the whole text.
        let bad = text
            .replace("Size: 11001\n", "Size: lots\n")
            .replace("Package: pkg11500\n", "Package: pkg11500\nno colon\n");
        assert_eq!(
            bad.len(),
            text.len() + "no colon\n".len() - 1,
            "both edits made"
        );
        let want = control::parse_packages(&bad)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            want.starts_with(&format!(
                "line {}:",
                bad[..bad.find("no colon").unwrap()].matches('\n').count() + 1
            )),
            "{want}"
        );
        let field_only = bad.replace("no colon\n", "");
        let want_field = control::parse_packages(&field_only)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        for c in [Compression::Gzip, Compression::Xz] {
            let got = index_file(bad.as_bytes(), c, true)
                .parse()
                .map(|_| ())
                .unwrap_err();
            assert!(got.to_string().ends_with(&want), "{got}");
            let got = index_file(field_only.as_bytes(), c, true)
                .parse()
                .map(|_| ())
                .unwrap_err();
            assert!(got.to_string().ends_with(&want_field), "{got}");
        }
        // Without a listed plain text, no check; with one, a mismatch wins
        // over any parse error.
        assert_eq!(
            index_file(text.as_bytes(), Compression::Gzip, false)
                .parse()
                .unwrap(),
            whole
        );
        let mut f = index_file(bad.as_bytes(), Compression::Gzip, true);
        f.plain.as_mut().unwrap().size += 1;
        let e = f.parse().map(|_| ()).unwrap_err();
        assert!(matches!(e, FetchError::IndexMismatch { .. }), "{e}");
        // Not UTF-8, and not gzip at all.
        let mut latin1 = text.clone().into_bytes();
        latin1[2_000_000] = 0xe9;
        let e = index_file(&latin1, Compression::Gzip, false)
            .parse()
            .map(|_| ())
            .unwrap_err();
        assert!(e.to_string().ends_with("not UTF-8 text"), "{e}");
        let mut f = index_file(text.as_bytes(), Compression::Gzip, true);
        f.data.truncate(f.data.len() / 2);
        let e = f.parse().map(|_| ()).unwrap_err();
        assert!(matches!(e, FetchError::Decode { .. }), "{e}");
        assert_eq!(
            index_file(b"", Compression::Gzip, true).parse().unwrap(),
            vec![]
        );
    }

    #[test]
    fn real_bookworm() {
        let sources = sources::read_apt_sources(Path::new("/etc/apt")).unwrap();
        let mirror = sources::default_mirror(&sources, None).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let keyring = PathBuf::from("/usr/share/keyrings/debian-archive-keyring.gpg");
        let archive = Archive::new(&mirror, "bookworm", &[keyring], cache.path()).unwrap();
        let rt = runtime();

        let t = Instant::now();
        let idx = rt.block_on(archive.indexes("amd64", now())).unwrap();
        let first = t.elapsed();
        assert_eq!(idx.releases.len(), 3);
        assert!(idx.releases.iter().all(|(_, r)| !r.signed_by.is_empty()));
        assert!(idx.date() > 1_700_000_000);
        let dpkg = idx
            .packages
            .iter()
            .find(|p| p.package.name == "dpkg" && &*p.suite == "bookworm")
            .expect("dpkg is in bookworm");
        assert!(dpkg.package.essential);
        assert!(idx.packages.len() > 50_000);

        // Unchanged archive: only the InReleases go over the network.
        let t = Instant::now();
        let (_, files) = rt.block_on(archive.index_files("amd64", now())).unwrap();
        assert_eq!(files.len(), 3);
        assert!(files.iter().all(|f| !f.downloaded));
        eprintln!(
            "indexes: {} packages, first {first:?}, cached {:?}",
            idx.packages.len(),
            t.elapsed()
        );

        let hostname = idx
            .packages
            .iter()
            .filter(|p| p.package.name == "hostname")
            .max_by_key(|p| p.package.size)
            .unwrap()
            .clone();
        let list = [hostname.clone()];
        let count = Count::default();
        let paths = rt.block_on(archive.download(&list, &count)).unwrap();
        assert_eq!(count.started.load(Ordering::Relaxed), 1);
        assert_eq!(count.bytes.load(Ordering::Relaxed), hostname.package.size);
        let deb = std::fs::read(&paths[0]).unwrap();
        assert!(deb.starts_with(b"!<arch>\n"));

        // Cached: no download.
        let count = Count::default();
        rt.block_on(archive.download(&list, &count)).unwrap();
        assert_eq!(count.cached.load(Ordering::Relaxed), 1);
        assert_eq!(count.bytes.load(Ordering::Relaxed), 0);

        // A damaged cached file is replaced.
        let mut bad = deb.clone();
        bad[100] ^= 0xff;
        std::fs::write(&paths[0], &bad).unwrap();
        let count = Count::default();
        rt.block_on(archive.download(&list, &count)).unwrap();
        assert_eq!(count.started.load(Ordering::Relaxed), 1);
        assert_eq!(std::fs::read(&paths[0]).unwrap(), deb);

        // A partial file is continued with a Range request; a damaged one
        // is detected and started over.
        std::fs::remove_file(&paths[0]).unwrap();
        let partial = paths[0].with_extension("partial");
        std::fs::write(&partial, &deb[..1000]).unwrap();
        let count = Count::default();
        rt.block_on(archive.download(&list, &count)).unwrap();
        assert_eq!(
            count.bytes.load(Ordering::Relaxed),
            hostname.package.size - 1000
        );
        assert_eq!(std::fs::read(&paths[0]).unwrap(), deb);
        std::fs::remove_file(&paths[0]).unwrap();
        std::fs::write(&partial, &bad[..1000]).unwrap();
        rt.block_on(archive.download(&list, &Silent)).unwrap();
        assert_eq!(std::fs::read(&paths[0]).unwrap(), deb);
        assert!(!partial.exists());

        // The index says one thing, the mirror serves another.
        let mut wrong = hostname.clone();
        wrong.package.sha256 = "00".repeat(32);
        let e = rt
            .block_on(archive.download(&[wrong], &Silent))
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("hostname") && msg.contains(&hostname.package.sha256),
            "{msg}"
        );
    }

    /// A server that fails once with 500, then ignores Range requests:
    /// the download retries and starts the partial file over.
    #[test]
    fn retries_and_restarts_when_range_is_ignored() {
        use std::io::{BufRead, BufReader};
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = body.clone();
        let server = std::thread::spawn(move || {
            let mut ranges = Vec::new();
            for (i, conn) in listener.incoming().take(2).enumerate() {
                let mut conn = conn.unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut range = None;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if line.to_ascii_lowercase().starts_with("range:") {
                        range = Some(line.trim().to_ascii_lowercase());
                    }
                }
                ranges.push(range);
                if i == 0 {
                    conn.write_all(
                        b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .unwrap();
                } else {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        served.len()
                    );
                    conn.write_all(head.as_bytes()).unwrap();
                    conn.write_all(&served).unwrap();
                }
            }
            ranges
        });

        let mirror = Mirror::from_url(&format!("http://127.0.0.1:{port}/debian")).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let keyring = PathBuf::from("/usr/share/keyrings/debian-archive-keyring.gpg");
        let mut archive = Archive::new(&mirror, "bookworm", &[keyring], cache.path()).unwrap();
        archive.retry.first_delay = Duration::from_millis(10);
        let sha = hex::encode(Sha256::digest(&body));
        let pkg = ArchivePackage {
            package: Package {
                filename: "pool/x.deb".into(),
                size: body.len() as u64,
                sha256: sha.clone(),
                ..Package::bare("x", "1", "all")
            },
            suite: "bookworm".into(),
            base: format!("http://127.0.0.1:{port}/debian").into(),
        };
        let partial = archive.deb_path(&sha).with_extension("partial");
        std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
        std::fs::write(&partial, &body[..5000]).unwrap();
        let paths = runtime()
            .block_on(archive.download(&[pkg], &Silent))
            .unwrap();
        assert_eq!(std::fs::read(&paths[0]).unwrap(), body);
        let ranges = server.join().unwrap();
        assert_eq!(ranges.len(), 2);
        assert!(
            ranges
                .iter()
                .all(|r| r.as_deref() == Some("range: bytes=5000-")),
            "{ranges:?}"
        );
    }
}
