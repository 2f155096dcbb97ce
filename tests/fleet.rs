//! The fleet in CI (issue 11, "How to test it — In CI"): this repository's
//! images.yaml, layers/ and clients/, copied into a git repository of their
//! own (the agency's repository) with only `sources:` changed, from the
//! `dir:`s of a checkout to what the agency fetches: Moodle 5.1 through
//! `git:` (a repository made here, tag v5.1.3) and 4.5 through `archive:` (a
//! tar.gz on a loopback HTTP server, its SHA256 pinned). Both trees are
//! ci/standin-moodle's Moodle-shaped stand-ins (version.php; 5.1's code in
//! public/). Debian packages come from the real archive, as ci/main's do.
//!
//! One build of every image runs their `test:` steps (PHP's modules and
//! settings for the CLI and the web server's SAPI, apache2ctl/nginx/php-fpm
//! -t, the time zone, exim, `systemd-analyze verify`, moodledata); then
//! each line's client runs in Docker on a network of the test's own:
//! `web` serves the stand-in page (the environment's values, the loaded
//! extensions) and refuses what is not web content, logs to `docker logs`,
//! stops on `docker stop` with status 0; `cron` runs the stand-in cron, whose
//! mail reaches an SMTP sink (ci/smtp-sink.py) on the network's gateway with
//! the configured sender; a missing variable fails in one line naming it;
//! `systemd` boots with a tmpfs /run and the host's cgroup mount, serves, and
//! its moodle-cron.timer runs cron with the container's environment.
//! Durations (`docker stop`, the whole run) are printed, never asserted.
//!
//! Needs: Docker (fails without it), git, python3, the Debian archive.
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::{Server, git};
use common::{Ctx, DockerImages, copy_tree, docker, require_docker, require_tool, run_command};
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// What images.yaml says about its sources in the repository: a checkout
/// per line. The test replaces exactly this.
const DIR_SOURCES: &str = "sources:\n  moodle-45: {dir: \"${moodle_45_src}\"}\n  moodle-51: {dir: \"${moodle_51_src}\"}\n";

/// One release line and the client the test runs on it.
struct Line {
    line: &'static str,
    client: &'static str,
    /// `$release` of ci/standin-moodle's version.php, before ` (Build`.
    release: &'static str,
    php: &'static str,
    sapi: &'static str,
    /// TZ at run time, not the image's (Europe/Zurich).
    tz: &'static str,
    /// Denied paths beyond the ones both lines share.
    denied: &'static [&'static str],
}

const LINES: [Line; 2] = [
    Line {
        line: "4.5",
        client: "initech",
        release: "4.5.8",
        php: "8.2.",
        sapi: "apache2handler",
        tz: "America/New_York",
        denied: &[],
    },
    Line {
        line: "5.1",
        client: "acme",
        release: "5.1.3",
        php: "8.4.",
        sapi: "fpm-fcgi",
        tz: "Asia/Tokyo",
        // Beside public/, not in it: never reachable (r.php answers 404).
        denied: &["/admin/cli/cron.php", "/composer.lock"],
    },
];

/// Paths ci/standin-moodle puts in the web root that must not be served,
/// and, where the file's content is telling, a piece of it that must not
/// be in the answer.
const DENIED: &[(&str, &str)] = &[
    ("/.idea/workspace.xml", "<project/>"),
    ("/admin/environment.xml", "COMPATIBILITY_MATRIX"),
    ("/composer.json", ""),
    ("/vendor/bin/tool", "secret"),
    ("/node_modules/x/index.js", ""),
    ("/lib/tests/fixtures/a.txt", ""),
    ("/yarn.lock", ""),
];

#[test]
fn two_release_lines_build_test_and_run_in_docker() {
    let started = Instant::now();
    require_docker();
    require_tool("git", "git");
    require_tool("python3", "python3");
    let cx = Ctx::new();

    // --- the agency's repository: this one's fleet, sources fetched ------
    let moodle = cx.scratch.join("moodle");
    for l in &LINES {
        let mut c = Command::new(Path::new(REPO).join("ci/standin-moodle"));
        c.arg(moodle.join(l.line)).arg(l.line);
        run_command(c).success();
    }
    // 5.1 from git, tagged as Moodle tags its releases.
    let repo51 = moodle.join("5.1");
    git(&repo51, &["init", "-q", "-b", "main"]);
    git(&repo51, &["add", "-A"]);
    git(&repo51, &["commit", "-q", "-m", "Moodle 5.1.3 (stand-in)"]);
    git(&repo51, &["tag", "-a", "-m", "5.1.3", "v5.1.3"]);
    // 4.5 as a tar.gz over HTTP, its SHA256 pinned in images.yaml.
    let www = cx.scratch.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let mut c = Command::new("tar");
    c.arg("-C")
        .arg(moodle.join("4.5"))
        .arg("-czf")
        .arg(www.join("moodle-4.5.8.tgz"))
        .arg(".");
    run_command(c).success();
    let sha45 = common::sha256_hex(&std::fs::read(www.join("moodle-4.5.8.tgz")).unwrap());
    let server = Server::start(&www, None);

    let yaml = std::fs::read_to_string(Path::new(REPO).join("images.yaml")).unwrap();
    assert!(
        yaml.contains(DIR_SOURCES),
        "images.yaml's `sources:` is no longer\n{DIR_SOURCES}\nso this test cannot swap it for git: and archive: sources; update DIR_SOURCES in tests/fleet.rs"
    );
    let sources = format!(
        "sources:\n  moodle-45:\n    archive: {{url: \"{}\", sha256: \"{sha45}\"}}\n  moodle-51:\n    git: {{url: \"file://{}\", ref: v5.1.3}}\n",
        server.url("moodle-4.5.8.tgz"),
        repo51.display()
    );
    cx.write("images.yaml", yaml.replace(DIR_SOURCES, &sources));
    for dir in ["layers", "clients"] {
        copy_tree(&Path::new(REPO).join(dir), &cx.path(dir));
    }
    git(&cx.root, &["init", "-q", "-b", "main"]);
    git(&cx.root, &["add", "-A"]);
    git(&cx.root, &["commit", "-q", "-m", "the fleet"]);
    let short: String = git(&cx.root, &["rev-parse", "HEAD"])
        .chars()
        .take(8)
        .collect();
    let vars = top_vars(&yaml);

    // --- one build: every image, its tests, the two clients for Docker ---
    // The revision from the repository's git, as in the agency's pipeline.
    let imgbuild = |args: &[&str]| {
        let mut c = cx.command(args);
        c.env_remove("IMGBUILD_REVISION");
        run_command(c).success()
    };
    let prepared = started.elapsed();
    imgbuild(&["lock"]);
    let locked = started.elapsed();
    // The three clients are the graph's leaves: building them builds and
    // tests all nine images; the archive holds the clients.
    let names: Vec<String> = graph_names(&cx);
    assert_eq!(
        names.len(),
        9,
        "two bases, two PHP images, two cores, three clients: {names:?}"
    );
    let clients: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("client-"))
        .collect();
    assert_eq!(clients, ["client-acme", "client-globex", "client-initech"]);
    let archive = cx.scratch.join("clients.tar");
    let out = format!("docker-archive:{}", archive.display());
    let mut args = vec!["build", "--locked", "-o", &out];
    args.extend(&clients);
    let built = imgbuild(&args);
    let build_took = started.elapsed() - locked;
    for name in &names {
        built.stderr_has(&[&format!("{name}: running its tests")]);
    }
    let loading = Instant::now();
    let loaded = docker(&["load", "-i", archive.to_str().unwrap()]).success();
    let _ = std::fs::remove_file(&archive);
    // Removed (by id, with all their tags) when the test ends.
    let mut images = DockerImages(Vec::new());
    for tag in loaded
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Loaded image: "))
    {
        if tag.ends_with(&format!("-{short}")) {
            let id = docker(&["image", "inspect", "-f", "{{.Id}}", tag]).success();
            images.0.push(id.stdout.trim().to_string());
        }
    }
    assert_eq!(images.0.len(), 3, "three clients tagged -{short}: {loaded}");
    let mut tags = BTreeMap::new();
    for l in &LINES {
        // `client-X:<Moodle release>-<the repository's short commit>`, the
        // release read from the source's version.php.
        let tag = format!("client-{}:{}-{short}", l.client, l.release);
        assert!(
            loaded.stdout.contains(&format!("Loaded image: {tag}\n")),
            "{tag} was not loaded: {loaded}"
        );
        assert!(
            loaded
                .stdout
                .contains(&format!("Loaded image: client-{}:latest\n", l.client)),
            "{loaded}"
        );
        tags.insert(l.line, tag);
    }

    // --- Docker: a network, an SMTP sink on its gateway ------------------
    let net = Network::create(&format!("imgbuild-fleet-{}", std::process::id()));
    let sink = Sink::start(&net.gateway, &cx.scratch.join("mail"));
    let secrets = cx.scratch.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("db"), "s3cret-db\n").unwrap();
    let docker_started = Instant::now();
    let reports: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = LINES
            .iter()
            .map(|l| {
                let site = Site {
                    l,
                    image: &tags[l.line],
                    net: &net,
                    sink: &sink,
                    secrets: &secrets,
                    vars: &vars,
                };
                s.spawn(move || site.check())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    for r in reports {
        eprint!("{r}");
    }
    eprintln!(
        "fleet: stand-ins and sources {:.1} s; lock {:.1} s; build of 9 images (Debian from the archive, tests, docker-archive) {:.1} s; docker load {:.1} s; Docker checks {:.1} s; whole test {:.1} s",
        prepared.as_secs_f64(),
        (locked - prepared).as_secs_f64(),
        build_took.as_secs_f64(),
        (docker_started - loading).as_secs_f64(),
        docker_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(images);
}

/// One client of one line, run in Docker.
struct Site<'a> {
    l: &'a Line,
    image: &'a str,
    net: &'a Network,
    sink: &'a Sink,
    secrets: &'a Path,
    vars: &'a BTreeMap<String, String>,
}

impl Site<'_> {
    fn name(&self, mode: &str) -> String {
        format!("{}-{}-{mode}", self.net.name, self.l.client)
    }

    fn wwwroot(&self) -> String {
        format!("http://{}.fleet.test", self.l.client)
    }

    fn noreply(&self) -> String {
        format!("noreply@{}.fleet.test", self.l.client)
    }

    /// The site's environment, as `-e` pairs.
    fn env(&self) -> Vec<(String, String)> {
        let c = self.l.client;
        [
            ("MOODLE_WWWROOT", self.wwwroot()),
            ("MOODLE_DB_HOST", format!("db-{c}.fleet.test")),
            ("MOODLE_DB_PORT", "6432".into()),
            ("MOODLE_DB_NAME", format!("moodle_{c}")),
            ("MOODLE_DB_USER", format!("{c}_user")),
            ("MOODLE_DB_PASSWORD_FILE", "/run/secrets/site/db".into()),
            ("MOODLE_DB_PREFIX", format!("{c}_")),
            ("MOODLE_SMTP_HOST", self.sink.host.clone()),
            ("MOODLE_SMTP_PORT", self.sink.port.to_string()),
            ("MOODLE_SMTP_TLS", "off".into()),
            ("MOODLE_NOREPLY", self.noreply()),
            ("MOODLE_REDIS_HOST", format!("redis-{c}.fleet.test")),
            ("TZ", self.l.tz.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// `docker run` arguments up to the image: network, secrets, env.
    fn run_args(&self, name: &str, env: &[(String, String)]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--network".into(),
            self.net.name.clone(),
            "-v".into(),
            format!("{}:/run/secrets/site:ro", self.secrets.display()),
        ];
        if !name.is_empty() {
            a.extend(["--name".into(), name.into()]);
        }
        for (k, v) in env {
            a.extend(["-e".into(), format!("{k}={v}")]);
        }
        a
    }

    fn start(&self, mode: &str, extra_env: &[(&str, String)], extra: &[&str]) -> Container {
        let name = self.name(mode);
        let mut env = self.env();
        env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let mut args: Vec<String> = vec!["run".into(), "-d".into()];
        args.extend(self.run_args(&name, &env));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(self.image.into());
        args.push(mode.into());
        let c = Container { name };
        docker(&args.iter().map(String::as_str).collect::<Vec<_>>()).success();
        c
    }

    /// Every check of this line; what was measured, as lines to print.
    fn check(&self) -> String {
        let l = self.l;
        let mut report = String::new();
        self.missing_variable();
        // systemd boots while web and cron are checked.
        let vm = self.start(
            "systemd",
            &[(
                "MOODLE_STANDIN_MAIL_TO",
                format!("vm-admin@{}.example", l.client),
            )],
            &[
                "--stop-signal",
                "SIGRTMIN+3",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            ],
        );
        let web = self.start("web", &[], &[]);
        let cron = self.start(
            "cron",
            &[(
                "MOODLE_STANDIN_MAIL_TO",
                format!("cron-admin@{}.example", l.client),
            )],
            &[],
        );

        // web: the stand-in page, denied paths, logs, stop.
        let ip = web.ip();
        wait_for(
            &format!("{} web: /_health/live answers 200", l.line),
            120,
            || matches!(http_get(&ip, "/_health/live"), Ok((200, _))).then_some(()),
        );
        for path in ["/", "/login/index.php"] {
            self.check_page(&ip, path, "web");
        }
        let mut denied: Vec<(&str, &str)> = DENIED.to_vec();
        denied.extend(l.denied.iter().map(|p| (*p, "")));
        for (path, content) in denied {
            let (status, body) = http_get(&ip, path).unwrap();
            assert!(
                matches!(status, 403 | 404),
                "{} web: {path} answered {status}, not 403 or 404: {body}",
                l.line
            );
            assert!(
                content.is_empty() || !body.contains(content),
                "{} web: {path}'s content was served: {body}",
                l.line
            );
        }
        if l.line == "5.1" {
            // Not a file: Moodle 5.1's router, r.php, takes it.
            let (status, body) = http_get(&ip, "/course/view/42").unwrap();
            assert!(
                status == 404 && body.contains("stand-in router: no route for /course/view/42"),
                "5.1 web: /course/view/42 did not reach r.php: {status} {body}"
            );
        }
        let logs = web.logs();
        assert!(
            logs.contains("GET /login/index.php") && logs.contains("GET /.idea/workspace.xml"),
            "{} web: the requests are not in docker logs:\n{logs}",
            l.line
        );
        let (took, status) = web.stop();
        assert_eq!(
            status,
            0,
            "{} web: docker stop left status {status}:\n{}",
            l.line,
            web.logs()
        );
        report.push_str(&format!(
            "{} {}: docker stop web took {took:.2} s, status {status}; docker logs {} lines\n",
            l.line,
            self.image,
            logs.lines().count()
        ));

        // cron: the stand-in cron runs as www-data, its mail reaches the sink.
        let ran = wait_for(&format!("{} cron: a run ends", l.line), 150, || {
            let logs = cron.logs();
            logs.contains("cron run ended with status").then_some(logs)
        });
        assert!(
            ran.contains("moodle-entrypoint: cron run ended with status 0 "),
            "{} cron: {ran}",
            l.line
        );
        let ran_line = format!("cron ran as www-data for {} (TZ {})", self.wwwroot(), l.tz);
        assert!(
            ran.contains(&ran_line),
            "{} cron: no `{ran_line}`:\n{ran}",
            l.line
        );
        let to = format!("cron-admin@{}.example", l.client);
        let mail = self.sink.wait_for(&to);
        self.check_mail(&mail, &to, &ran_line);
        let (took, status) = cron.stop();
        assert_eq!(
            status, 0,
            "{} cron: docker stop left status {status}",
            l.line
        );
        report.push_str(&format!(
            "{} {}: docker stop cron took {took:.2} s, status {status}\n",
            l.line, self.image
        ));

        // systemd: boots, serves with the container's environment, its
        // timer runs cron with it, mail goes out through exim.
        let state = wait_for(&format!("{} systemd: boot", l.line), 180, || {
            let r = docker(&["exec", &vm.name, "systemctl", "is-system-running"]);
            let s = r.stdout.trim().to_string();
            matches!(s.as_str(), "running" | "degraded").then_some(s)
        });
        let failed = docker(&["exec", &vm.name, "systemctl", "--failed", "--no-legend"]);
        assert_eq!(
            state, "running",
            "{} systemd: {state}; failed units:\n{failed}",
            l.line
        );
        let vm_ip = vm.ip();
        wait_for(
            &format!("{} systemd: /_health/live answers 200", l.line),
            60,
            || matches!(http_get(&vm_ip, "/_health/live"), Ok((200, _))).then_some(()),
        );
        self.check_page(&vm_ip, "/", "systemd");
        let cronlog = wait_for(
            &format!("{} systemd: moodle-cron.timer runs cron", l.line),
            150,
            || {
                let r = docker(&[
                    "exec",
                    &vm.name,
                    "cat",
                    "/var/www/moodledata/standin-cron.log",
                ]);
                (r.code == 0 && !r.stdout.is_empty()).then_some(r.stdout)
            },
        );
        assert!(
            cronlog.contains(&ran_line),
            "{} systemd: cron did not see the container's environment (`{ran_line}`):\n{cronlog}",
            l.line
        );
        let service = docker(&[
            "exec",
            &vm.name,
            "systemctl",
            "show",
            "moodle-cron.service",
            "-p",
            "Result",
            "-p",
            "ExecMainStatus",
            "-p",
            "TriggeredBy",
        ])
        .success();
        assert!(
            service.stdout.contains("Result=success")
                && service.stdout.contains("ExecMainStatus=0")
                && service.stdout.contains("TriggeredBy=moodle-cron.timer"),
            "{} systemd: {}",
            l.line,
            service.stdout
        );
        let to = format!("vm-admin@{}.example", l.client);
        let mail = self.sink.wait_for(&to);
        self.check_mail(&mail, &to, &ran_line);
        let (took, status) = vm.stop();
        report.push_str(&format!(
            "{} {}: systemd is-system-running {state}; docker stop (SIGRTMIN+3) took {took:.2} s, status {status}\n",
            l.line, self.image
        ));
        assert_eq!(
            status, 0,
            "{} systemd: docker stop left status {status}",
            l.line
        );
        report
    }

    /// A missing variable: status 78 and one line naming it.
    fn missing_variable(&self) {
        let env: Vec<(String, String)> = self
            .env()
            .into_iter()
            .filter(|(k, _)| k != "MOODLE_DB_HOST")
            .collect();
        let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
        args.extend(self.run_args("", &env));
        args.extend([self.image.to_string(), "web".into()]);
        let r = docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            (r.code, r.stdout.as_str(), r.stderr.as_str()),
            (
                78,
                "",
                "moodle-entrypoint: MOODLE_DB_HOST is not set (nor MOODLE_DB_HOST_FILE): the database server's host name\n"
            ),
            "{}: a missing MOODLE_DB_HOST",
            self.l.line
        );
    }

    /// The stand-in page at `path`: 200, and the environment's values, the
    /// extensions and settings images.yaml asks for, seen by the web SAPI.
    fn check_page(&self, ip: &str, path: &str, mode: &str) {
        let l = self.l;
        let what = format!("{} {mode}: {path}", l.line);
        let (status, body) = http_get(ip, path).unwrap();
        assert_eq!(status, 200, "{what}: {body}");
        let page: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
        assert!(
            page["release"]
                .as_str()
                .is_some_and(|r| r.starts_with(&format!("{} (Build", l.release))),
            "{what}: release {}",
            page["release"]
        );
        assert_eq!(page["sapi"], l.sapi, "{what}");
        assert!(
            page["php"].as_str().unwrap().starts_with(l.php),
            "{what}: {}",
            page["php"]
        );
        assert_eq!(page["user"], "www-data", "{what}");
        let loaded: Vec<&str> = page["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        let wanted = &self.vars["php_extensions"];
        for e in wanted.split_whitespace().chain(["zend opcache"]) {
            assert!(loaded.contains(&e), "{what}: {e} is not loaded: {loaded:?}");
        }
        let upload = &self.vars["upload_max"];
        for (k, v) in [
            ("max_input_vars", "5000"),
            ("memory_limit", "512M"),
            ("upload_max_filesize", upload.as_str()),
            ("post_max_size", upload.as_str()),
            ("opcache.enable", "1"),
            ("opcache.memory_consumption", "256"),
            ("date.timezone", l.tz),
        ] {
            assert_eq!(page["ini"][k], v, "{what}: {k}");
        }
        assert_eq!(page["timezone"], l.tz, "{what}: TZ at run time");
        let c = l.client;
        let cfg = &page["cfg"];
        for (k, v) in [
            ("wwwroot", self.wwwroot()),
            ("dbtype", "pgsql".into()),
            ("dbhost", format!("db-{c}.fleet.test")),
            ("dbname", format!("moodle_{c}")),
            ("dbuser", format!("{c}_user")),
            ("prefix", format!("{c}_")),
            ("dbport", "6432".into()),
            ("dataroot", "/var/www/moodledata".into()),
            ("noreplyaddress", self.noreply()),
            ("smtphosts", "localhost:25".into()),
            ("session_handler_class", "\\core\\session\\redis".into()),
        ] {
            assert_eq!(cfg[k], Value::String(v), "{what}: $CFG->{k}");
        }
        assert_eq!(
            cfg["dbpass_set"], true,
            "{what}: the password from its _FILE"
        );
        assert_eq!(page["dataroot_writable"], true, "{what}");
        assert!(!body.contains("s3cret-db"), "{what}: the password is shown");
    }

    /// A mail at the sink: from the no-reply address (envelope and header),
    /// to `to`, with the cron run's line.
    fn check_mail(&self, mail: &str, to: &str, ran: &str) {
        let what = format!("{}: the mail to {to}", self.l.line);
        let from = self.noreply();
        assert!(
            mail.starts_with(&format!(
                "X-Envelope-From: <{from}>\nX-Envelope-To: <{to}>\n"
            )),
            "{what}:\n{mail}"
        );
        assert!(mail.contains(&format!("\nFrom: {from}")), "{what}:\n{mail}");
        assert!(mail.contains(ran), "{what}: no `{ran}`:\n{mail}");
    }
}

/// The top-level vars of images.yaml that the checks compare with:
/// `NAME: value` and folded `NAME: >-` blocks.
fn top_vars(yaml: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    let mut lines = yaml
        .lines()
        .skip_while(|l| *l != "vars:")
        .skip(1)
        .peekable();
    while let Some(line) = lines.next() {
        let Some(entry) = line.strip_prefix("  ").filter(|e| !e.starts_with(' ')) else {
            if line.starts_with(' ') || line.is_empty() {
                continue;
            }
            break;
        };
        if entry.starts_with('#') {
            continue;
        }
        let (k, v) = entry.split_once(':').expect("a var");
        let v = match v.trim() {
            ">-" => {
                let mut folded = Vec::new();
                while let Some(next) = lines.next_if(|n| n.starts_with("    ")) {
                    folded.push(next.trim());
                }
                folded.join(" ")
            }
            v => v.to_string(),
        };
        vars.insert(k.to_string(), v);
    }
    for k in ["php_extensions", "upload_max"] {
        assert!(
            vars.contains_key(k),
            "images.yaml has no top-level var {k}: {vars:?}"
        );
    }
    vars
}

fn graph_names(cx: &Ctx) -> Vec<String> {
    let mut c = cx.command(&["graph", "--format", "json"]);
    c.env_remove("IMGBUILD_REVISION");
    let g: Value = serde_json::from_str(&run_command(c).success().stdout).unwrap();
    g["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

/// Calls `f` once a second until it gives a value; fails naming `what`
/// after `tries` calls.
fn wait_for<T>(what: &str, tries: u32, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..tries {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("{what}: not after {tries} tries a second apart");
}

/// GET `path` from port 80 of `ip`: status and body.
fn http_get(ip: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&format!("{ip}:80").parse().unwrap(), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {raw:?}")))?;
    Ok((status, body.to_string()))
}

/// A container of the test, removed when dropped.
struct Container {
    name: String,
}

impl Container {
    fn ip(&self) -> String {
        let r = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &self.name,
        ])
        .success();
        let ip = r.stdout.trim().to_string();
        assert!(
            !ip.is_empty(),
            "{} has no address: {}",
            self.name,
            self.logs()
        );
        ip
    }

    fn logs(&self) -> String {
        let r = docker(&["logs", &self.name]);
        format!("{}{}", r.stdout, r.stderr)
    }

    /// `docker stop`: how long it took, and the exit status.
    fn stop(&self) -> (f64, i64) {
        let t = Instant::now();
        docker(&["stop", &self.name]).success();
        let took = t.elapsed().as_secs_f64();
        let s = docker(&["inspect", "-f", "{{.State.ExitCode}}", &self.name]).success();
        (took, s.stdout.trim().parse().unwrap())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .output();
    }
}

/// A Docker network of the test, removed when dropped; its gateway is the
/// host's address on it.
struct Network {
    name: String,
    gateway: String,
}

impl Network {
    fn create(name: &str) -> Network {
        let _ = Command::new("docker")
            .args(["network", "rm", name])
            .output();
        docker(&["network", "create", name]).success();
        // Removed when dropped, even if the inspection below fails.
        let mut net = Network {
            name: name.to_string(),
            gateway: String::new(),
        };
        let gw = docker(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
            name,
        ])
        .success();
        net.gateway = gw.stdout.trim().to_string();
        assert!(
            !net.gateway.is_empty(),
            "network {name} has no gateway: {gw}"
        );
        net
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

/// ci/smtp-sink.py on the network's gateway; killed when dropped.
struct Sink {
    child: Child,
    host: String,
    port: u16,
    dir: PathBuf,
}

impl Sink {
    fn start(host: &str, dir: &Path) -> Sink {
        std::fs::create_dir_all(dir).unwrap();
        let mut child = Command::new("python3")
            .arg(Path::new(REPO).join("ci/smtp-sink.py"))
            .args([host, "0"])
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs ci/smtp-sink.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("ci/smtp-sink.py did not start on {host}: {line:?}"));
        Sink {
            child,
            host: host.to_string(),
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// The first message to `to`.
    fn wait_for(&self, to: &str) -> String {
        let needle = format!("X-Envelope-To: <{to}>\n");
        wait_for(&format!("a mail to {to} at the sink"), 60, || {
            std::fs::read_dir(&self.dir)
                .unwrap()
                .filter_map(|e| {
                    let p = e.unwrap().path();
                    (p.extension()? == "eml").then_some(p)
                })
                .map(|p| std::fs::read_to_string(p).unwrap())
                .find(|m| m.contains(&needle))
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
