//! Registries, with a real one: CNCF distribution (`docker-registry`) run by
//! `common::registry` on 127.0.0.1, anonymous, behind htpasswd or behind a
//! token server, and `common::proxy` in front of it to inject faults.
//!
//! The `harness_*` tests check the harness itself against real peers
//! (skopeo, docker). The other tests drive imgbuild's registry commands
//! (`push`, `build --push`, `tag`, `copy`, `digest`, `ls`, `delete`,
//! `inspect`, `login`).
//!
//! Needs: docker-registry, skopeo, openssl, busybox-static, and a reachable
//! Docker daemon for the tests that `docker pull`.
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use common::proxy::{Chaos, Fault, Proxy};
use common::registry::{Registry, TokenOptions, basic_auth, http, write_docker_config};
use common::{
    Ctx, Report, Run, ValidImage, require_tool, run_command, static_busybox, validate_layout,
};
use common::{DockerImages, FOREIGN_ENV, docker, require_docker, skopeo};

const USER: &str = "ci-bot";
/// Distinctive, so that a leak into any output is found.
const PASSWORD: &str = "pw-Zq81-never-printed";

// ---------------------------------------------------------------------------
// Fixtures

/// Incompressible bytes, the same for the same seed (xorshift64*).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// base (busybox) ← app, web: app and web share base's layer. app has a
/// tag in its own repository and one in another.
const FLEET: &str = r#"images:
  base:
    from: scratch
    layers:
      - base
    config:
      env: {PATH: "/bin"}
      cmd: ["/bin/sh"]
  app:
    from: base
    layers:
      - {src: app, dest: /srv/app}
    config:
      cmd: ["/bin/cat", "/srv/app/hello.txt"]
    tags: ["v1", "app-alias:v2"]
  web:
    from: base
    layers:
      - {src: web, dest: /srv/web}
    config:
      cmd: ["/bin/cat", "/srv/web/index.html"]
"#;

/// With `big`: a 64 MiB layer of noise on base.
const BIG: &str = r#"  big:
    from: base
    layers:
      - {src: big, dest: /srv/big}
"#;

/// The fleet, built into an OCI layout (`out`) that says what every push
/// must give.
struct Fleet {
    cx: Ctx,
    out: PathBuf,
    report: Report,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet::build(false)
    }

    fn with_big() -> Fleet {
        Fleet::build(true)
    }

    fn build(big: bool) -> Fleet {
        let busybox = static_busybox();
        let cx = Ctx::new().with_epoch(1_700_000_000);
        let bb = cx.path("base/bin/busybox");
        fs::create_dir_all(bb.parent().unwrap()).unwrap();
        fs::copy(&busybox, &bb).unwrap();
        for applet in ["sh", "cat", "ls", "echo"] {
            cx.symlink("busybox", &format!("base/bin/{applet}"));
        }
        cx.write("base/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
        cx.write("base/etc/group", "root:x:0:\n");
        cx.write("app/hello.txt", "hello from app\n");
        // Over 64 KiB even compressed: a body the proxy can cut.
        cx.write("app/noise.bin", noise(512 * 1024, 7));
        cx.write("web/index.html", "<h1>web</h1>\n");
        let mut yaml = FLEET.to_string();
        if big {
            cx.write("big/noise.bin", noise(64 << 20, 64));
            yaml.push_str(BIG);
        }
        cx.yaml(&yaml);
        let out = cx.scratch.join("oci");
        let report = cx.build(&["--all", "-o", &format!("oci:{}", out.display())]);
        Fleet { cx, out, report }
    }

    /// The image as built, validated.
    fn image(&self, name: &str) -> ValidImage {
        let img = validate_layout(&self.out, name);
        assert_eq!(img.manifest_digest, self.report.manifest(name), "{name}");
        img
    }

    /// `oci:DIR:NAME`, for skopeo.
    fn oci(&self, name: &str) -> String {
        format!("oci:{}:{name}", self.out.display())
    }

    /// A fresh directory under scratch.
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.cx.scratch.join(name);
        fs::create_dir_all(&d).unwrap();
        d
    }
}

/// Digests of the config and layers of an image.
fn blob_digests(img: &ValidImage) -> Vec<String> {
    let mut v = vec![img.config_digest.clone()];
    v.extend(img.layers.iter().map(|l| l.digest.clone()));
    v
}

/// Size of every blob of an image, by digest.
fn blob_sizes(img: &ValidImage) -> Vec<(String, u64)> {
    let config = img.manifest["config"]["size"]
        .as_u64()
        .expect("config size");
    let mut v = vec![(img.config_digest.clone(), config)];
    v.extend(img.layers.iter().map(|l| (l.digest.clone(), l.size)));
    v
}

// ---------------------------------------------------------------------------
// Peers

fn skopeo_copy(cx: &Ctx, src: &str, dest: &str, creds: Option<&str>, extra: &[&str]) -> Run {
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--dest-creds", c]);
    }
    args.extend(extra);
    args.extend([src, dest]);
    skopeo(cx, &args)
}

fn skopeo_inspect(cx: &Ctx, reference: &str, creds: Option<&str>) -> Run {
    let mut args = vec!["inspect", "--tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--creds", c]);
    }
    args.push(reference);
    skopeo(cx, &args)
}

/// Copies `docker://REF` back into an OCI layout and validates it: every
/// blob the registry holds for it hashes to its name.
fn pull_back_and_validate(cx: &Ctx, reference: &str, creds: Option<&str>) -> ValidImage {
    let dir = cx.scratch.join(format!(
        "pulled-{}",
        reference.replace(['/', ':', '@'], "_")
    ));
    let _ = fs::remove_dir_all(&dir);
    let mut args = vec!["copy", "--src-tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--src-creds", c]);
    }
    let src = format!("docker://{reference}");
    let dest = format!("oci:{}:pulled", dir.display());
    args.extend([src.as_str(), dest.as_str()]);
    skopeo(cx, &args).success();
    validate_layout(&dir, "pulled")
}

// ---------------------------------------------------------------------------
// The harness against real peers (these pass now)

#[test]
fn harness_anonymous_registry_counts_skopeo_uploads() {
    require_tool("skopeo", "skopeo");
    let fx = Fleet::new();
    let app = fx.image("app");
    let reg = Registry::anonymous();
    assert!(reg.credentials().is_none());
    let blobs = app.layers.len() + 1;

    let dest = format!("docker://{}/fleet/app:v1", reg.host());
    skopeo_copy(&fx.cx, &fx.oci("app"), &dest, None, &[]).success();
    assert_eq!(reg.uploads(), blobs, "one upload per blob");
    assert_eq!(reg.uploads_to("fleet/app"), blobs);
    assert_eq!(reg.uploads_to("fleet/other"), 0);
    assert_eq!(reg.manifest_puts(), 1);
    assert_eq!(reg.mounts(), 0);

    // skopeo reads back what it sent, unchanged.
    let info = skopeo_inspect(&fx.cx, &dest, None).success().json();
    assert_eq!(info["Digest"], app.manifest_digest.as_str());
    let layers: Vec<&str> = app.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(info["Layers"], serde_json::json!(layers));

    // So does the harness, through the API and in storage.
    assert_eq!(reg.tags("fleet/app"), ["v1"]);
    assert_eq!(
        reg.digest("fleet/app", "v1"),
        Some(app.manifest_digest.clone())
    );
    assert_eq!(reg.digest("fleet/app", "nope"), None);
    let stored = reg.stored_blobs();
    for (digest, size) in blob_sizes(&app) {
        assert!(
            stored.contains(digest.trim_start_matches("sha256:")),
            "{digest} stored"
        );
        assert_eq!(reg.stored_blob_size(&digest), Some(size), "{digest}");
    }

    // A second identical copy sends no blob.
    skopeo_copy(&fx.cx, &fx.oci("app"), &dest, None, &[]).success();
    assert_eq!(reg.uploads(), blobs, "the second copy uploaded again");
    assert!(
        reg.count("HEAD", "/blobs/sha256:", Some(200)) >= blobs,
        "the second copy found the blobs: {:?}",
        reg.access_log()
    );
    // The log path is the registry's own log.
    let log = fs::read_to_string(reg.log_path()).unwrap();
    assert!(log.contains("response completed"), "{log}");
}

#[test]
fn harness_htpasswd_registry_refuses_wrong_credentials() {
    require_tool("skopeo", "skopeo");
    let fx = Fleet::new();
    let app = fx.image("app");
    let reg = Registry::htpasswd(USER, PASSWORD);
    assert_eq!(
        reg.credentials(),
        Some((USER.to_string(), PASSWORD.to_string()))
    );

    // The API: Basic, and only with the right password.
    let r = http(&reg.host(), "GET", "/v2/", &[], &[]).unwrap();
    assert_eq!(r.status, 401);
    let challenge = r.header("WWW-Authenticate").unwrap_or_default().to_string();
    assert!(challenge.starts_with("Basic "), "{challenge}");
    let good = basic_auth(USER, PASSWORD);
    let bad = basic_auth(USER, "wrong");
    let r = http(&reg.host(), "GET", "/v2/", &[("Authorization", &good)], &[]).unwrap();
    assert_eq!(r.status, 200);
    let r = http(&reg.host(), "GET", "/v2/", &[("Authorization", &bad)], &[]).unwrap();
    assert_eq!(r.status, 401);

    let dest = format!("docker://{}/fleet/app:v1", reg.host());
    let right = reg.creds_arg().unwrap();
    let wrong = format!("{USER}:wrong");
    let r = skopeo_copy(&fx.cx, &fx.oci("app"), &dest, None, &[]);
    assert_ne!(r.code, 0, "no credentials, yet copied: {r}");
    let r = skopeo_copy(&fx.cx, &fx.oci("app"), &dest, Some(&wrong), &[]);
    assert_ne!(r.code, 0, "a wrong password, yet copied: {r}");
    assert_eq!(reg.uploads(), 0);

    skopeo_copy(&fx.cx, &fx.oci("app"), &dest, Some(&right), &[]).success();
    assert_eq!(reg.uploads(), app.layers.len() + 1);
    let r = skopeo_inspect(&fx.cx, &dest, None);
    assert_ne!(r.code, 0, "read without credentials: {r}");
    let info = skopeo_inspect(&fx.cx, &dest, Some(&right)).success().json();
    assert_eq!(info["Digest"], app.manifest_digest.as_str());
    assert_eq!(
        reg.digest("fleet/app", "v1"),
        Some(app.manifest_digest.clone())
    );
}

#[test]
fn harness_token_registry_works_with_skopeo() {
    require_tool("skopeo", "skopeo");
    let fx = Fleet::new();
    let app = fx.image("app");
    let reg = Registry::token(TokenOptions::new(USER, PASSWORD));
    let ts = reg.token_server().expect("a token server");

    let r = http(&reg.host(), "GET", "/v2/", &[], &[]).unwrap();
    assert_eq!(r.status, 401);
    let challenge = r.header("WWW-Authenticate").unwrap_or_default().to_string();
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{}\"", ts.url())),
        "{challenge}"
    );
    assert!(
        challenge.contains("service=\"imgbuild-test-registry\""),
        "{challenge}"
    );

    let dest = format!("docker://{}/fleet/app:v1", reg.host());
    let wrong = format!("{USER}:wrong");
    let r = skopeo_copy(&fx.cx, &fx.oci("app"), &dest, Some(&wrong), &[]);
    assert_ne!(r.code, 0, "a wrong password, yet copied: {r}");
    assert!(ts.refused() >= 1, "the token server refused nobody");
    assert_eq!(ts.issued(), 0);
    assert_eq!(reg.uploads(), 0);

    let right = reg.creds_arg().unwrap();
    skopeo_copy(&fx.cx, &fx.oci("app"), &dest, Some(&right), &[]).success();
    assert!(ts.issued() >= 1);
    assert_eq!(reg.uploads(), app.layers.len() + 1);
    let pushed = ts.grants().iter().any(|g| {
        g.user == USER
            && g.access.as_array().unwrap().iter().any(|a| {
                a["name"] == "fleet/app"
                    && a["actions"].as_array().unwrap().iter().any(|x| x == "push")
            })
    });
    assert!(pushed, "no push grant for fleet/app: {:?}", ts.grants());
    let info = skopeo_inspect(&fx.cx, &dest, Some(&right)).success().json();
    assert_eq!(info["Digest"], app.manifest_digest.as_str());
    // The harness' own requests get tokens too.
    assert_eq!(reg.tags("fleet/app"), ["v1"]);
}

/// What distribution logs when it refuses an expired token.
const EXPIRED_TOKEN_LOG: &str = "token not to be used after";

#[test]
fn harness_short_tokens_expire_at_the_registry() {
    // Tokens named by their key id (`kid`) rather than their certificate.
    let reg = Registry::token(
        TokenOptions::new(USER, PASSWORD)
            .user("reader", "reader-pw")
            .lifetime(Duration::from_secs(2))
            .with_kid()
            .allow(|user, _repo, action| user == USER || action == "pull"),
    );
    let ts = reg.token_server().unwrap();
    let probe = |token: &str, repo: &str| {
        http(
            &reg.host(),
            "GET",
            &format!("/v2/{repo}/tags/list"),
            &[("Authorization", &format!("Bearer {token}"))],
            &[],
        )
        .unwrap()
    };

    let r = ts.request(USER, PASSWORD, &["repository:fleet/app:pull,push"]);
    let fetched = Instant::now();
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["expires_in"], 2);
    let issued_at = body["issued_at"].as_str().unwrap();
    assert!(
        issued_at.len() == 20 && issued_at.ends_with('Z') && issued_at.starts_with("20"),
        "{issued_at}"
    );
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["access_token"], token.as_str());
    // Accepted: the repository is unknown (404), not unauthorized.
    let r = probe(&token, "fleet/app");
    assert_eq!(r.status, 404, "a fresh token refused: {}", r.text());
    // Another repository is out of its scope.
    let r = probe(&token, "fleet/other");
    assert_eq!(r.status, 401);
    let challenge = r.header("WWW-Authenticate").unwrap_or_default();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");

    // The policy: the reader gets pull, not push.
    let r = ts.request("reader", "reader-pw", &["repository:fleet/app:pull,push"]);
    assert_eq!(r.status, 200);
    let grant = ts.grants().last().cloned().unwrap();
    assert_eq!(grant.user, "reader");
    assert_eq!(grant.scopes, ["repository:fleet/app:pull,push"]);
    assert_eq!(
        grant.access,
        serde_json::json!([{"type": "repository", "name": "fleet/app", "actions": ["pull"]}])
    );
    // Wrong or missing credentials get no token.
    assert_eq!(ts.fetch(USER, "wrong", &[]), Err(401));
    let r = http(
        &ts.host(),
        "GET",
        "/token?service=imgbuild-test-registry",
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(ts.refused(), 2);
    assert_eq!(ts.issued(), 2);

    // Once its lifetime has passed, the registry refuses the token.
    thread::sleep(Duration::from_millis(3200).saturating_sub(fetched.elapsed()));
    let r = probe(&token, "fleet/app");
    assert_eq!(r.status, 401, "an expired token accepted: {}", r.text());
    let challenge = r.header("WWW-Authenticate").unwrap_or_default();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    // The registry's log says so: what the renewal test looks for.
    assert!(
        reg.log_text().contains(EXPIRED_TOKEN_LOG),
        "no `{EXPIRED_TOKEN_LOG}` in the registry's log"
    );
    let fresh = ts
        .fetch(USER, PASSWORD, &["repository:fleet/app:pull"])
        .unwrap();
    assert_eq!(probe(&fresh, "fleet/app").status, 404);
    assert_eq!(ts.issued(), 3);
}

#[test]
fn harness_proxy_faults_make_skopeo_retry_or_fail() {
    require_tool("skopeo", "skopeo");
    let fx = Fleet::new();
    let app = fx.image("app");
    let blobs = app.layers.len() + 1;
    let reg = Registry::anonymous();
    let proxy = Proxy::start(&reg.host());

    // The proxy passes the Host header on: the registry's Locations name it.
    let r = http(&proxy.host(), "POST", "/v2/probe/blobs/uploads/", &[], &[]).unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let location = r.header("Location").unwrap_or_default();
    assert!(
        location.starts_with(&format!("http://{}/v2/probe/blobs/uploads/", proxy.host())),
        "{location}"
    );
    assert_eq!(proxy.count("POST", "/v2/probe/"), 1);

    // A connection dropped mid-PATCH: skopeo gives up...
    let dest = format!("docker://{}/fleet/app:v1", proxy.host());
    proxy.drop_after("PATCH", "/blobs/uploads/", 64 * 1024, 1);
    let r = skopeo_copy(&fx.cx, &fx.oci("app"), &dest, None, &[]);
    assert_ne!(r.code, 0, "a dropped upload, yet copied: {r}");
    assert_eq!(
        proxy.pending(),
        0,
        "the drop did not happen: {:?}",
        proxy.requests()
    );
    // ... and with retries, goes through the same fault again.
    proxy.drop_after("PATCH", "/blobs/uploads/", 64 * 1024, 1);
    skopeo_copy(&fx.cx, &fx.oci("app"), &dest, None, &["--retry-times", "2"]).success();
    assert_eq!(proxy.pending(), 0);
    assert_eq!(proxy.injected().len(), 2);
    assert_eq!(
        reg.uploads_to("fleet/app"),
        blobs,
        "each blob completes once"
    );
    let info = skopeo_inspect(
        &fx.cx,
        &format!("docker://{}/fleet/app:v1", reg.host()),
        None,
    )
    .success()
    .json();
    assert_eq!(info["Digest"], app.manifest_digest.as_str());
    pull_back_and_validate(&fx.cx, &format!("{}/fleet/app:v1", reg.host()), None);

    // 429 with Retry-After on a HEAD: skopeo waits and asks again by itself.
    proxy.throttle("HEAD", "/blobs/sha256:", 1, 1);
    skopeo_copy(&fx.cx, &fx.oci("app"), &dest, None, &[]).success();
    assert_eq!(proxy.pending(), 0);

    // 503 on the manifest: skopeo fails (it retries no 5xx, even with
    // --retry-times: containers/image parses error bodies of 4xx only).
    let dest2 = format!("docker://{}/fleet/app:v2", proxy.host());
    proxy.fail("PUT", "/manifests/", 1);
    let r = skopeo_copy(&fx.cx, &fx.oci("app"), &dest2, None, &[]);
    assert_ne!(r.code, 0, "a 503, yet copied: {r}");
    assert!(r.stderr.contains("503 Service Unavailable"), "{r}");
    // 429 on the manifest: with retries, skopeo gets through.
    proxy.throttle("PUT", "/manifests/", 1, 1);
    skopeo_copy(
        &fx.cx,
        &fx.oci("app"),
        &dest2,
        None,
        &["--retry-times", "2"],
    )
    .success();
    assert_eq!(proxy.pending(), 0);
    assert_eq!(reg.tags("fleet/app"), ["v1", "v2"]);
    assert_eq!(reg.uploads_to("fleet/app"), blobs, "blobs sent again");
    let faults: Vec<_> = proxy.injected().into_iter().map(|s| s.method).collect();
    assert_eq!(faults, ["PATCH", "PATCH", "HEAD", "PUT", "PUT"]);
}

#[test]
fn harness_docker_pulls_from_the_loopback_registry() {
    require_tool("skopeo", "skopeo");
    require_docker();
    let fx = Fleet::new();
    let reg = Registry::anonymous();
    let reference = format!("{}/fleet/app:v1", reg.host());
    skopeo_copy(
        &fx.cx,
        &fx.oci("app"),
        &format!("docker://{reference}"),
        None,
        &[],
    )
    .success();
    let _cleanup = DockerImages(vec![reference.clone()]);
    docker(&["pull", "-q", &reference]).success();
    let run = docker(&["run", "--rm", "--network", "none", &reference]).success();
    assert_eq!(run.stdout, "hello from app\n", "{run}");
}

// ---------------------------------------------------------------------------
// imgbuild's registry commands

/// Runs imgbuild with no credentials or registry from the caller's
/// environment: `DOCKER_CONFIG` is an empty directory unless `env` sets it.
fn imgbuild(cx: &Ctx, args: &[&str], env: &[(&str, &str)]) -> Run {
    imgbuild_stdin(cx, args, env, None)
}

fn imgbuild_stdin(cx: &Ctx, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let mut c = cx.command(args);
    for k in FOREIGN_ENV {
        c.env_remove(k);
    }
    let empty = cx.scratch.join("docker-config-empty");
    fs::create_dir_all(&empty).unwrap();
    c.env("DOCKER_CONFIG", &empty);
    for (k, v) in env {
        c.env(k, v);
    }
    let Some(input) = stdin else {
        return run_command(c);
    };
    let cmd = format!("{c:?}");
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        cmd,
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `imgbuild -f images.yaml push NAMES… --registry PREFIX --json EXTRA…`.
fn push(cx: &Ctx, names: &[&str], prefix: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args = vec!["-f", "images.yaml", "push"];
    args.extend(names);
    args.extend(["--registry", prefix, "--json"]);
    args.extend(extra);
    imgbuild(cx, &args, env)
}

/// `push --json` output: `{"images":[{"name","reference","digest","stats"}]}`.
struct Pushed(Value);

impl Pushed {
    fn of(run: &Run) -> Pushed {
        let v = run.json();
        assert!(v["images"].is_array(), "no `images` list: {run}");
        Pushed(v)
    }

    fn entries(&self) -> Vec<&Value> {
        self.0["images"].as_array().unwrap().iter().collect()
    }

    /// The entries of image `name` (one per repository pushed to).
    fn of_image(&self, name: &str) -> Vec<&Value> {
        let v: Vec<&Value> = self
            .entries()
            .into_iter()
            .filter(|e| e["name"] == name)
            .collect();
        assert!(!v.is_empty(), "{name} not pushed: {:#}", self.0);
        v
    }

    /// A stat summed over every entry.
    fn stat(&self, key: &str) -> u64 {
        self.entries()
            .iter()
            .map(|e| {
                e["stats"][key]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no stats.{key}: {e}"))
            })
            .sum()
    }
}

/// Panics if a secret (as given, or as Basic credentials) is in the output.
fn assert_no_secret(run: &Run, user: &str, secret: &str) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    for s in [secret, b64.as_str()] {
        assert!(
            !run.stdout.contains(s) && !run.stderr.contains(s),
            "the output shows a credential: {run}"
        );
    }
}

#[test]
fn push_is_read_back_by_skopeo_and_docker() {
    require_tool("skopeo", "skopeo");
    require_docker();
    let fx = Fleet::new();
    let app = fx.image("app");
    let reg = Registry::anonymous();
    let prefix = format!("{}/fleet", reg.host());

    let run = push(&fx.cx, &["app"], &prefix, &[], &[]).success();
    let pushed = Pushed::of(&run);
    let mut references = BTreeSet::new();
    for e in pushed.of_image("app") {
        assert_eq!(e["digest"], app.manifest_digest.as_str(), "{e}");
        references.insert(e["reference"].as_str().unwrap().to_string());
    }
    assert!(
        references
            .iter()
            .any(|r| r.starts_with(&format!("{prefix}/app"))),
        "{references:?}"
    );
    // latest, the tags of images.yaml (one in another repository).
    assert_eq!(reg.tags("fleet/app"), ["latest", "v1"]);
    assert_eq!(reg.tags("fleet/app-alias"), ["v2"]);
    for (repo, tag) in [
        ("fleet/app", "latest"),
        ("fleet/app", "v1"),
        ("fleet/app-alias", "v2"),
    ] {
        assert_eq!(
            reg.digest(repo, tag),
            Some(app.manifest_digest.clone()),
            "{repo}:{tag}"
        );
    }
    // Each blob went up once; the other repository mounted them.
    let blobs = app.layers.len() as u64 + 1;
    assert_eq!(reg.uploads() as u64, blobs);
    assert_eq!(pushed.stat("blobs_uploaded"), blobs);
    assert_eq!(pushed.stat("blobs_mounted"), reg.mounts() as u64);
    assert_eq!(
        pushed.stat("blobs_uploaded") + pushed.stat("blobs_mounted") + pushed.stat("blobs_present"),
        2 * blobs,
        "every blob of both repositories accounted for: {:#}",
        pushed.0
    );
    let sizes: u64 = blob_sizes(&app).iter().map(|(_, s)| s).sum();
    assert_eq!(pushed.stat("bytes_uploaded"), sizes);
    assert!(pushed.stat("manifests") >= 2, "{:#}", pushed.0);

    let info = skopeo_inspect(&fx.cx, &format!("docker://{prefix}/app:latest"), None)
        .success()
        .json();
    assert_eq!(info["Digest"], app.manifest_digest.as_str());
    pull_back_and_validate(&fx.cx, &format!("{prefix}/app:v1"), None);

    let reference = format!("{prefix}/app:latest");
    let _cleanup = DockerImages(vec![reference.clone()]);
    docker(&["pull", "-q", &reference]).success();
    let run = docker(&["run", "--rm", "--network", "none", &reference]).success();
    assert_eq!(run.stdout, "hello from app\n", "{run}");
}

#[test]
fn second_push_uploads_nothing() {
    let fx = Fleet::new();
    let reg = Registry::anonymous();
    let prefix = format!("{}/fleet", reg.host());
    push(&fx.cx, &["app", "web"], &prefix, &[], &[]).success();
    let (uploads, mounts, posts) = (
        reg.uploads(),
        reg.mounts(),
        reg.count("POST", "/blobs/uploads/", None),
    );
    assert!(uploads > 0);

    let run = push(&fx.cx, &["app", "web"], &prefix, &[], &[]).success();
    let pushed = Pushed::of(&run);
    assert_eq!(reg.uploads(), uploads, "blobs uploaded again");
    assert_eq!(reg.mounts(), mounts, "blobs mounted again");
    assert_eq!(
        reg.count("POST", "/blobs/uploads/", None),
        posts,
        "uploads started again"
    );
    assert_eq!(pushed.stat("blobs_uploaded"), 0);
    assert_eq!(pushed.stat("blobs_mounted"), 0);
    assert_eq!(pushed.stat("bytes_uploaded"), 0);
    // app: app and app-alias; web: web. Three blobs each.
    assert_eq!(pushed.stat("blobs_present"), 9, "{:#}", pushed.0);
    for name in ["app", "web"] {
        let digest = fx.image(name).manifest_digest;
        assert_eq!(reg.digest(&format!("fleet/{name}"), "latest"), Some(digest));
    }
}

#[test]
fn shared_layers_are_mounted_not_uploaded() {
    let fx = Fleet::new();
    let (app, web) = (fx.image("app"), fx.image("web"));
    assert_eq!(
        app.layers[0].digest, web.layers[0].digest,
        "base's layer is shared"
    );
    let reg = Registry::anonymous();
    let prefix = format!("{}/fleet", reg.host());

    let run = push(&fx.cx, &["app", "web"], &prefix, &[], &[]).success();
    let pushed = Pushed::of(&run);
    let mut unique: Vec<(String, u64)> = blob_sizes(&app);
    for b in blob_sizes(&web) {
        if !unique.contains(&b) {
            unique.push(b);
        }
    }
    assert_eq!(unique.len(), 5);
    // Blob references: fleet/app, fleet/app-alias (app's) and fleet/web.
    let references = 3 * (app.layers.len() + 1);
    assert_eq!(reg.uploads(), unique.len(), "each blob uploaded once");
    assert_eq!(reg.mounts(), references - unique.len(), "the rest mounted");
    assert_eq!(pushed.stat("blobs_uploaded"), unique.len() as u64);
    assert_eq!(pushed.stat("blobs_mounted"), reg.mounts() as u64);
    let unique_bytes: u64 = unique.iter().map(|(_, s)| s).sum();
    let sent = pushed.stat("bytes_uploaded");
    assert!(
        sent >= unique_bytes && sent <= unique_bytes + unique_bytes / 100 + 4096,
        "sent {sent} bytes for {unique_bytes} bytes of distinct blobs"
    );
    for (digest, size) in &unique {
        assert_eq!(reg.stored_blob_size(digest), Some(*size), "{digest}");
    }
    assert_eq!(
        reg.digest("fleet/web", "latest"),
        Some(web.manifest_digest.clone())
    );
}

#[test]
fn build_push_and_the_default_registry_prefix() {
    let fx = Fleet::new();
    let web = fx.image("web").manifest_digest;
    let reg = Registry::anonymous();
    let host = reg.host();

    // build --push.
    imgbuild(
        &fx.cx,
        &[
            "-f",
            "images.yaml",
            "build",
            "web",
            "--push",
            "--registry",
            &format!("{host}/built"),
        ],
        &[],
    )
    .success();
    assert_eq!(reg.digest("built/web", "latest"), Some(web.clone()));

    // IMGBUILD_REGISTRY, then CI_REGISTRY_IMAGE, give the prefix.
    let env_prefix = format!("{host}/from-env");
    let ci_prefix = format!("{host}/from-ci");
    imgbuild(
        &fx.cx,
        &["-f", "images.yaml", "push", "web"],
        &[("IMGBUILD_REGISTRY", env_prefix.as_str())],
    )
    .success();
    assert_eq!(reg.digest("from-env/web", "latest"), Some(web.clone()));
    imgbuild(
        &fx.cx,
        &["-f", "images.yaml", "push", "web", "--tag", "extra"],
        &[("CI_REGISTRY_IMAGE", ci_prefix.as_str())],
    )
    .success();
    assert_eq!(reg.tags("from-ci/web"), ["extra", "latest"]);
    assert_eq!(reg.digest("from-ci/web", "extra"), Some(web.clone()));
    imgbuild(
        &fx.cx,
        &["-f", "images.yaml", "push", "web", "--tag", "both"],
        &[
            ("IMGBUILD_REGISTRY", env_prefix.as_str()),
            ("CI_REGISTRY_IMAGE", ci_prefix.as_str()),
        ],
    )
    .success();
    assert_eq!(reg.digest("from-env/web", "both"), Some(web.clone()));
    assert_eq!(reg.digest("from-ci/web", "both"), None);

    // No prefix at all: a usage error that says what to give.
    let r = imgbuild(&fx.cx, &["-f", "images.yaml", "push", "web"], &[]).exit(2);
    r.stderr_has(&["--registry"]);
}

#[test]
fn htpasswd_credentials_from_docker_config_ci_and_login() {
    let fx = Fleet::new();
    let web = fx.image("web").manifest_digest;
    let reg = Registry::htpasswd(USER, PASSWORD);
    let host = reg.host();
    let prefix = format!("{host}/fleet");
    let check = |run: &Run| {
        assert_no_secret(run, USER, PASSWORD);
        assert_no_secret(run, USER, "wrong-pw-Xy7");
    };

    // No credentials, or wrong ones: refused, and said so.
    let r = push(&fx.cx, &["web"], &prefix, &[], &[]).exit(1);
    check(&r);
    assert!(!r.stderr.trim().is_empty(), "{r}");
    let bad = fx.dir("docker-bad");
    write_docker_config(&bad, &[(&host, USER, "wrong-pw-Xy7")]);
    let r = push(
        &fx.cx,
        &["web"],
        &prefix,
        &[],
        &[("DOCKER_CONFIG", bad.to_str().unwrap())],
    )
    .exit(1);
    check(&r);
    assert_eq!(reg.uploads(), 0);

    // Docker's config.json.
    let good = fx.dir("docker-good");
    reg.write_docker_config(&good, &host);
    let r = push(
        &fx.cx,
        &["web"],
        &prefix,
        &[],
        &[("DOCKER_CONFIG", good.to_str().unwrap())],
    )
    .success();
    check(&r);
    assert_eq!(reg.digest("fleet/web", "latest"), Some(web.clone()));

    // GitLab CI's variables.
    let r = push(
        &fx.cx,
        &["web"],
        &format!("{host}/ci"),
        &[],
        &[
            ("CI_REGISTRY", host.as_str()),
            ("CI_REGISTRY_USER", USER),
            ("CI_REGISTRY_PASSWORD", PASSWORD),
        ],
    )
    .success();
    check(&r);
    assert_eq!(reg.digest("ci/web", "latest"), Some(web.clone()));

    // `login` writes config.json, which the next push uses.
    let fresh = fx.dir("docker-login");
    let r = imgbuild_stdin(
        &fx.cx,
        &["login", &host, "-u", USER, "--password-stdin"],
        &[("DOCKER_CONFIG", fresh.to_str().unwrap())],
        Some(&format!("{PASSWORD}\n")),
    )
    .success();
    check(&r);
    let config: Value =
        serde_json::from_slice(&fs::read(fresh.join("config.json")).unwrap()).unwrap();
    let auth = config["auths"][&host]["auth"].as_str().unwrap_or_default();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .unwrap_or_default();
    assert_eq!(
        String::from_utf8_lossy(&decoded),
        format!("{USER}:{PASSWORD}"),
        "{config:#}"
    );
    let r = push(
        &fx.cx,
        &["web"],
        &format!("{host}/logged-in"),
        &[],
        &[("DOCKER_CONFIG", fresh.to_str().unwrap())],
    )
    .success();
    check(&r);
    assert_eq!(reg.digest("logged-in/web", "latest"), Some(web.clone()));

    // Reading with credentials: no secret in the output either.
    let env = [("DOCKER_CONFIG", good.to_str().unwrap())];
    let reference = format!("{prefix}/web:latest");
    let repo = format!("{prefix}/web");
    for args in [
        vec!["digest", reference.as_str()],
        vec!["--json", "inspect", reference.as_str()],
        vec!["ls", repo.as_str()],
    ] {
        let r = imgbuild(&fx.cx, &args, &env).success();
        check(&r);
    }
}

#[test]
fn token_auth_push_and_a_denied_repository() {
    let fx = Fleet::new();
    let app = fx.image("app").manifest_digest;
    let reg = Registry::token(
        TokenOptions::new(USER, PASSWORD)
            .allow(|_user, repo, action| !(repo.starts_with("locked/") && action != "pull")),
    );
    let ts = reg.token_server().unwrap();
    let host = reg.host();
    let cfg = fx.dir("docker");
    reg.write_docker_config(&cfg, &host);
    let env = [("DOCKER_CONFIG", cfg.to_str().unwrap())];

    let r = push(&fx.cx, &["app"], &format!("{host}/fleet"), &[], &env).success();
    assert_no_secret(&r, USER, PASSWORD);
    assert!(ts.issued() >= 1);
    assert_eq!(reg.digest("fleet/app", "latest"), Some(app.clone()));
    assert_eq!(reg.digest("fleet/app-alias", "v2"), Some(app.clone()));
    let r = imgbuild(&fx.cx, &["digest", &format!("{host}/fleet/app:v1")], &env).success();
    assert_eq!(r.stdout.trim(), app);

    // The token server grants no push under locked/: a clear failure.
    let uploads = reg.uploads();
    let r = push(&fx.cx, &["web"], &format!("{host}/locked"), &[], &env).exit(1);
    assert_no_secret(&r, USER, PASSWORD);
    r.stderr_has(&["locked/web"]);
    assert_eq!(reg.uploads(), uploads);
    assert_eq!(reg.digest("locked/web", "latest"), None);
}

#[test]
fn push_outlives_a_short_token() {
    let fx = Fleet::with_big();
    let big = fx.image("big");
    assert!(big.layers[1].size > 60 << 20, "the big layer is big");
    let reg = Registry::token(TokenOptions::new(USER, PASSWORD).lifetime(Duration::from_secs(2)));
    let ts = reg.token_server().unwrap();
    // Through a proxy that holds back the answer to two chunks of an upload
    // (requests that carry a token: a POST's first answer is the 401
    // challenge) for longer than a token lives, 3.5 s (its 2 s and the 1 s
    // the registry may add): the requests after them need new tokens.
    let proxy = Proxy::start(&reg.host());
    proxy.delay("PATCH", "/blobs/uploads/", Duration::from_millis(3500), 2);
    let cfg = fx.dir("docker");
    reg.write_docker_config(&cfg, &proxy.host());

    let r = push(
        &fx.cx,
        &["big"],
        &format!("{}/fleet", proxy.host()),
        &[],
        &[("DOCKER_CONFIG", cfg.to_str().unwrap())],
    )
    .success();
    assert_no_secret(&r, USER, PASSWORD);
    assert_eq!(proxy.pending(), 0, "the delays did not happen");
    // The push outlived its first token: tokens were issued over more
    // than a lifetime (the case under test, not a speed).
    let grants = ts.grants();
    let span = grants.last().unwrap().at - grants[0].at;
    assert!(
        span >= ts.lifetime(),
        "every token was issued within {span:?}: no token expired during the push"
    );
    assert!(
        ts.issued() >= 2,
        "one token for a push longer than its lifetime"
    );
    // Renewed before expiry: the registry was never shown an expired token
    // (its log names each one it refuses; see
    // harness_short_tokens_expire_at_the_registry).
    let log = reg.log_text();
    assert!(
        !log.contains(EXPIRED_TOKEN_LOG),
        "an expired token was sent, not renewed in time:\n{}",
        log.lines()
            .filter(|l| l.contains(EXPIRED_TOKEN_LOG))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let pushed = Pushed::of(&r);
    assert_eq!(
        pushed.of_image("big")[0]["digest"],
        big.manifest_digest.as_str()
    );
    assert_eq!(
        reg.digest("fleet/big", "latest"),
        Some(big.manifest_digest.clone())
    );
    for (digest, size) in blob_sizes(&big) {
        assert_eq!(reg.stored_blob_size(&digest), Some(size), "{digest}");
    }
}

#[test]
fn push_survives_proxy_faults() {
    let fx = Fleet::new();
    let reg = Registry::anonymous();
    let proxy = Proxy::start(&reg.host());
    proxy.fail("HEAD", "/blobs/sha256:", 1);
    proxy.throttle("POST", "/blobs/uploads/", 1, 1);
    // Whichever request carries a blob's bytes (PATCH, or a monolithic PUT).
    proxy.drop_after("*", "/blobs/uploads/", 64 * 1024, 1);
    proxy.fail("PUT", "/manifests/", 2);

    let r = push(
        &fx.cx,
        &["app"],
        &format!("{}/fleet", proxy.host()),
        &[],
        &[],
    )
    .success();
    assert_eq!(proxy.pending(), 0, "faults left: {:?}", proxy.requests());
    assert_app_pushed_whole(&fx, &reg, &r);
}

/// After `push app --registry …/fleet`: every tag names app's manifest,
/// each blob was completed once, and what skopeo reads back is app, whole.
fn assert_app_pushed_whole(fx: &Fleet, reg: &Registry, r: &Run) {
    let app = fx.image("app");
    let blobs = app.layers.len() + 1;
    let pushed = Pushed::of(r);
    for e in pushed.of_image("app") {
        assert_eq!(e["digest"], app.manifest_digest.as_str(), "{e}");
    }
    for (repo, tag) in [
        ("fleet/app", "latest"),
        ("fleet/app", "v1"),
        ("fleet/app-alias", "v2"),
    ] {
        assert_eq!(
            reg.digest(repo, tag),
            Some(app.manifest_digest.clone()),
            "{repo}:{tag}"
        );
    }
    assert_eq!(
        reg.uploads_to("fleet/app"),
        blobs,
        "each blob completed once"
    );
    let back = pull_back_and_validate(&fx.cx, &format!("{}/fleet/app:latest", reg.host()), None);
    assert_eq!(back.manifest_digest, app.manifest_digest);
    assert_eq!(blob_digests(&back), blob_digests(&app));
}

/// `push app --registry PROXY/fleet`.
fn push_app(fx: &Fleet, proxy: &Proxy) -> Run {
    push(
        &fx.cx,
        &["app"],
        &format!("{}/fleet", proxy.host()),
        &[],
        &[],
    )
}

/// Issue 13: a connection lost on a blob's first PATCH before any byte got
/// through leaves an empty session, whose status distribution gives as
/// `Range: 0-0`. Read as "one byte received", the upload went on from byte
/// 1 and the final PUT failed with DIGEST_INVALID, failing the push.
#[test]
fn push_resumes_an_empty_upload_session_from_byte_zero() {
    let fx = Fleet::new();
    let reg = Registry::anonymous();
    let proxy = Proxy::start(&reg.host());
    proxy.drop_after("PATCH", "/blobs/uploads/", 0, 1);

    let r = push_app(&fx, &proxy).success();
    assert_eq!(
        proxy.pending(),
        0,
        "no PATCH was cut: {:?}",
        proxy.requests()
    );
    assert!(
        proxy.count("GET", "/blobs/uploads/") > 0,
        "the upload did not ask where the session stood: {:?}",
        proxy.requests()
    );
    assert_app_pushed_whole(&fx, &reg, &r);
}

/// A blob's final PUT refused with 400 DIGEST_INVALID (the registry holds
/// other bytes than the digest says) starts that blob over in a new upload
/// session; the push goes on and completes.
#[test]
fn push_restarts_a_blob_refused_at_its_final_put() {
    let fx = Fleet::new();
    let reg = Registry::anonymous();
    let proxy = Proxy::start(&reg.host());
    proxy.reject("PUT", "/blobs/uploads/", 1, 400, "DIGEST_INVALID");

    let r = push_app(&fx, &proxy).success();
    assert_eq!(
        proxy.pending(),
        0,
        "no PUT was refused: {:?}",
        proxy.requests()
    );
    assert_app_pushed_whole(&fx, &reg, &r);
}

/// A chunk answered 503, and a session the registry forgot (404
/// BLOB_UPLOAD_UNKNOWN): the first goes on where the session stands, the
/// second starts the blob over in a new session.
#[test]
fn push_outlives_a_busy_chunk_and_a_forgotten_session() {
    let fx = Fleet::new();
    let reg = Registry::anonymous();
    let proxy = Proxy::start(&reg.host());
    proxy.fail("PATCH", "/blobs/uploads/", 1);
    proxy.reject("PATCH", "/blobs/uploads/", 1, 404, "BLOB_UPLOAD_UNKNOWN");

    let r = push_app(&fx, &proxy).success();
    assert_eq!(proxy.pending(), 0, "faults left: {:?}", proxy.requests());
    assert_app_pushed_whole(&fx, &reg, &r);
}

/// A blob the registry refuses at every try fails the push after a bounded
/// number of tries, naming the blob, and no tag is put.
#[test]
fn push_fails_naming_a_blob_that_cannot_go() {
    let fx = Fleet::new();
    let reg = Registry::anonymous();
    let proxy = Proxy::start(&reg.host());
    proxy.reject("PUT", "/blobs/uploads/", 1000, 400, "DIGEST_INVALID");

    let r = push_app(&fx, &proxy);
    assert_ne!(r.code, 0, "{r}");
    assert!(
        r.stderr.contains("of blob sha256:") && r.stderr.contains("DIGEST_INVALID"),
        "the error does not name the blob: {r}"
    );
    assert!(proxy.pending() > 0, "the tries were not bounded");
    assert_eq!(reg.manifest_puts(), 0, "a tag names a missing blob");
}

#[test]
fn tag_digest_ls_inspect_delete() {
    let fx = Fleet::new();
    let app = fx.image("app");
    let digest = app.manifest_digest.clone();
    let reg = Registry::anonymous();
    let host = reg.host();
    push(&fx.cx, &["app"], &format!("{host}/fleet"), &[], &[]).success();
    let (uploads, mounts, posts) = (
        reg.uploads(),
        reg.mounts(),
        reg.count("POST", "/blobs/uploads/", None),
    );

    // tag: a bare tag (same repository) or a full reference. No blob moves.
    let latest = format!("{host}/fleet/app:latest");
    imgbuild(&fx.cx, &["tag", &latest, "prod"], &[]).success();
    imgbuild(
        &fx.cx,
        &["tag", &latest, &format!("{host}/fleet/app:stable")],
        &[],
    )
    .success();
    assert_eq!(reg.uploads(), uploads, "tag uploaded a blob");
    assert_eq!(reg.mounts(), mounts, "tag mounted a blob");
    assert_eq!(reg.count("POST", "/blobs/uploads/", None), posts);
    assert_eq!(reg.tags("fleet/app"), ["latest", "prod", "stable", "v1"]);

    // digest, ls.
    let r = imgbuild(&fx.cx, &["digest", &format!("{host}/fleet/app:prod")], &[]).success();
    assert_eq!(r.stdout.trim(), digest);
    let r = imgbuild(&fx.cx, &["ls", &format!("{host}/fleet/app")], &[]).success();
    let mut tags: Vec<&str> = r.stdout.lines().collect();
    tags.sort();
    assert_eq!(tags, ["latest", "prod", "stable", "v1"], "{r}");

    // inspect --json: manifest, config, layers.
    let r = imgbuild(
        &fx.cx,
        &["inspect", &format!("{host}/fleet/app:prod"), "--json"],
        &[],
    )
    .success();
    let j = r.json();
    assert_eq!(
        j["manifest"]["config"]["digest"],
        app.config_digest.as_str(),
        "{j:#}"
    );
    assert_eq!(
        j["config"]["rootfs"]["diff_ids"], app.config["rootfs"]["diff_ids"],
        "{j:#}"
    );
    let layers: Vec<String> = j["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no layers: {j:#}"))
        .iter()
        .map(|l| {
            l.as_str()
                .or_else(|| l["digest"].as_str())
                .expect("a layer digest")
                .to_string()
        })
        .collect();
    let expected: Vec<String> = app.layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(layers, expected);

    // delete: the manifest goes, and with it every tag on it (distribution
    // untags them); the other repository keeps its own.
    imgbuild(
        &fx.cx,
        &["delete", &format!("{host}/fleet/app:stable")],
        &[],
    )
    .success();
    assert_eq!(reg.digest("fleet/app", "latest"), None);
    assert!(
        reg.tags("fleet/app").is_empty(),
        "{:?}",
        reg.tags("fleet/app")
    );
    let r = imgbuild(&fx.cx, &["digest", &latest], &[]);
    assert_ne!(r.code, 0, "a deleted image has a digest: {r}");
    assert_eq!(reg.digest("fleet/app-alias", "v2"), Some(digest));
}

#[test]
fn copy_across_two_registries() {
    let fx = Fleet::new();
    let app = fx.image("app");
    let blobs = app.layers.len() + 1;
    let a = Registry::anonymous();
    let b = Registry::htpasswd(USER, PASSWORD);
    push(&fx.cx, &["app"], &format!("{}/fleet", a.host()), &[], &[]).success();
    let cfg = fx.dir("docker");
    b.write_docker_config(&cfg, &b.host());
    let env = [("DOCKER_CONFIG", cfg.to_str().unwrap())];

    let src = format!("{}/fleet/app:v1", a.host());
    let dst = format!("{}/mirror/app:1", b.host());
    let r = imgbuild(&fx.cx, &["copy", &src, &dst], &env).success();
    assert_no_secret(&r, USER, PASSWORD);
    assert_eq!(
        b.digest("mirror/app", "1"),
        Some(app.manifest_digest.clone())
    );
    assert_eq!(b.uploads(), blobs);
    // Again: the blobs are there.
    imgbuild(&fx.cx, &["copy", &src, &dst], &env).success();
    assert_eq!(b.uploads(), blobs);
    pull_back_and_validate(&fx.cx, &dst, b.creds_arg().as_deref());

    // Within one registry, blobs are mounted, not uploaded.
    let before = a.uploads();
    imgbuild(
        &fx.cx,
        &["copy", &src, &format!("{}/other/app:1", a.host())],
        &env,
    )
    .success();
    assert_eq!(a.uploads(), before);
    assert_eq!(
        a.digest("other/app", "1"),
        Some(app.manifest_digest.clone())
    );
}

// ---------------------------------------------------------------------------
// Limits on what a registry sends, and digests checked (issue 13)

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// What an endless answer would send: far more than any limit.
const ENDLESS: u64 = 1 << 30;
/// What the proxy may have sent before imgbuild stopped reading: the limit
/// and the loopback socket buffers, far from `ENDLESS`.
const READ_BOUND: u64 = 64 << 20;

/// The bytes of a blob of the fleet's layout.
fn layout_blob(fx: &Fleet, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    fs::read(fx.out.join("blobs/sha256").join(hex)).expect("the blob in the layout")
}

/// The one request the proxy answered itself, and the bytes it sent.
fn answered(proxy: &Proxy) -> u64 {
    let seen: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|s| matches!(s.fault, Some(Fault::Endless { .. } | Fault::Answer { .. })))
        .collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    seen[0].answered
}

/// Issue 13: a 300 MiB manifest was read whole by `copy` (934 MB of
/// memory). An endless manifest is read to the 4 MiB limit and no further,
/// by `copy` and `inspect`, and the error names the reference and limit.
#[test]
fn an_endless_manifest_stops_at_the_limit() {
    let fx = Fleet::new();
    let reg = Registry::anonymous();
    push(&fx.cx, &["app"], &format!("{}/fleet", reg.host()), &[], &[]).success();
    for args in [
        vec!["copy", "fleet/app:v1", "other/app:1"],
        vec!["inspect", "fleet/app:v1"],
    ] {
        let proxy = Proxy::start(&reg.host());
        proxy.rule(
            "GET",
            "/manifests/",
            1,
            Fault::Endless {
                headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
                limit: ENDLESS,
            },
        );
        let args: Vec<String> = args
            .iter()
            .enumerate()
            .map(|(i, a)| match i {
                0 => a.to_string(),
                1 => format!("{}/{a}", proxy.host()),
                _ => format!("{}/{a}", reg.host()),
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = imgbuild(&fx.cx, &args, &[]);
        assert_ne!(r.code, 0, "{r}");
        r.stderr_has(&[&format!("{}/fleet/app:v1", proxy.host()), "4194304 bytes"]);
        let sent = answered(&proxy);
        assert!(
            sent < READ_BOUND,
            "imgbuild read on past the limit: the proxy sent {sent} bytes\n{r}"
        );
        assert_eq!(reg.digest("other/app", "1"), None, "a tag was put");
    }
}

/// Issue 13: a blob declared as 300 KB was read to 1 GiB. An endless blob
/// is read to its declared size and no further; a short one is reported
/// with its digest and repository.
#[test]
fn blobs_are_read_to_their_size_and_no_further() {
    let fx = Fleet::new();
    let app = fx.image("app");
    let layer = app.layers.last().expect("app's own layer");
    let reg = Registry::anonymous();
    push(&fx.cx, &["app"], &format!("{}/fleet", reg.host()), &[], &[]).success();
    let full = layout_blob(&fx, &layer.digest);
    let faults = [
        Fault::Endless {
            headers: vec![],
            limit: ENDLESS,
        },
        Fault::Answer {
            status: 200,
            headers: vec![],
            body: full[..full.len() / 2].to_vec(),
        },
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        let proxy = Proxy::start(&reg.host());
        proxy.rule("GET", &format!("/blobs/{}", layer.digest), 1, fault);
        // Across "registries" (the proxy, the registry): every blob moves.
        let src = format!("{}/fleet/app:v1", proxy.host());
        let dst = format!("{}/mirror{i}/app:1", reg.host());
        let r = imgbuild(&fx.cx, &["copy", &src, &dst], &[]);
        assert_ne!(r.code, 0, "{r}");
        let repository = format!("{}/fleet/app", proxy.host());
        if i == 0 {
            r.stderr_has(&[&layer.digest, &repository, "more than its declared"]);
            let sent = answered(&proxy);
            assert!(
                sent < READ_BOUND,
                "imgbuild read on past the blob's size: the proxy sent {sent} bytes\n{r}"
            );
        } else {
            let said = format!("ended after {} of its {} bytes", full.len() / 2, full.len());
            r.stderr_has(&[&layer.digest, &repository, &said]);
        }
        assert_eq!(
            reg.digest(&format!("mirror{i}/app"), "1"),
            None,
            "a tag names a missing blob"
        );
    }
}

/// Issue 13: `copy` and `inspect` of REPO@sha256:X accepted other bytes,
/// and `digest` printed the registry's Docker-Content-Digest unchecked.
#[test]
fn a_manifest_that_is_not_its_digest_is_refused() {
    let fx = Fleet::new();
    let (app, web) = (fx.image("app"), fx.image("web"));
    let reg = Registry::anonymous();
    push(&fx.cx, &["app"], &format!("{}/fleet", reg.host()), &[], &[]).success();
    let web_bytes = layout_blob(&fx, &web.manifest_digest);
    let expected = [app.manifest_digest.as_str(), web.manifest_digest.as_str()];

    // Pinned: the registry answers web's manifest for app's digest.
    for cmd in ["copy", "inspect", "digest"] {
        let proxy = Proxy::start(&reg.host());
        proxy.rule(
            "GET",
            "/manifests/sha256:",
            1000,
            Fault::Answer {
                status: 200,
                headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
                body: web_bytes.clone(),
            },
        );
        let src = format!("{}/fleet/app@{}", proxy.host(), app.manifest_digest);
        let dst = format!("{}/other/app:1", reg.host());
        let mut args = vec![cmd, src.as_str()];
        if cmd == "copy" {
            args.push(&dst);
        }
        let r = imgbuild(&fx.cx, &args, &[]);
        assert_ne!(r.code, 0, "{cmd} took other bytes: {r}");
        r.stderr_has(&expected);
        assert!(
            proxy.injected().iter().all(|s| s.method == "GET"),
            "{:?}",
            proxy.requests()
        );
        assert_eq!(reg.digest("other/app", "1"), None, "{cmd} put a tag");
    }

    // A tag: the bytes are app's, the header says all zeros.
    let zeros = format!("sha256:{}", "0".repeat(64));
    let proxy = Proxy::start(&reg.host());
    proxy.rule(
        "*",
        "/manifests/",
        1000,
        Fault::SetHeader("Docker-Content-Digest".into(), zeros.clone()),
    );
    let r = imgbuild(
        &fx.cx,
        &["digest", &format!("{}/fleet/app:v1", proxy.host())],
        &[],
    );
    assert_ne!(r.code, 0, "digest printed a digest it did not check: {r}");
    r.stderr_has(&[&zeros, &app.manifest_digest]);
    // Without the lie, the digest of the bytes.
    proxy.clear();
    let r = imgbuild(
        &fx.cx,
        &["digest", &format!("{}/fleet/app:v1", proxy.host())],
        &[],
    )
    .success();
    assert_eq!(r.stdout.trim(), app.manifest_digest);
}

// ---------------------------------------------------------------------------
// A fleet through a flaky registry (issue 13): every kind of request meets
// seeded faults (503, 429 with Retry-After: 1, connections cut before the
// request, mid-body, before the answer), in front of a token registry.

/// 5 % 503, 5 % cuts, 2 % 429: the issue's setup, where pushes got 0 of 20.
const MILD: (f64, f64, f64) = (0.05, 0.05, 0.02);
/// 20 % 503, 20 % cuts, 10 % 429: half of all requests fail.
const HARSH: (f64, f64, f64) = (0.20, 0.20, 0.10);

fn chaos(seed: u64, (unavailable, dropped, throttled): (f64, f64, f64)) -> Chaos {
    Chaos {
        seed,
        unavailable,
        dropped,
        throttled,
    }
}

/// base (busybox) and 19 sites on it, each with a layer of its own (over
/// 64 KiB, so bodies can be cut): 20 images.
struct Twenty {
    cx: Ctx,
    out: PathBuf,
    report: Report,
    names: Vec<String>,
}

fn twenty() -> Twenty {
    let cx = Ctx::new().with_epoch(1_700_000_000);
    let bb = cx.path("base/bin/busybox");
    fs::create_dir_all(bb.parent().unwrap()).unwrap();
    fs::copy(static_busybox(), &bb).unwrap();
    for applet in ["sh", "cat", "ls"] {
        cx.symlink("busybox", &format!("base/bin/{applet}"));
    }
    cx.write("base/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
    let mut yaml = String::from(
        "images:\n  base:\n    from: scratch\n    layers: [base]\n    config: {env: {PATH: /bin}}\n",
    );
    let mut names = vec!["base".to_string()];
    for i in 1..20 {
        let name = format!("site{i:02}");
        cx.write(&format!("{name}/noise.bin"), noise(96 * 1024, i));
        cx.write(&format!("{name}/name.txt"), format!("{name}\n"));
        yaml.push_str(&format!(
            "  {name}:\n    from: base\n    layers: [{{src: {name}, dest: /srv/site}}]\n"
        ));
        names.push(name);
    }
    cx.yaml(&yaml);
    let out = cx.scratch.join("oci");
    let report = cx.build(&["--all", "-o", &format!("oci:{}", out.display())]);
    Twenty {
        cx,
        out,
        report,
        names,
    }
}

impl Twenty {
    /// A fresh directory under scratch.
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.cx.scratch.join(name);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// Every image is `REG/PREFIX/NAME:latest` at its built digest: skopeo
    /// copies each out of the registry itself (not the proxy) into an OCI
    /// layout, where every blob must hash to its name. The tags completed.
    fn check_pushed(&self, reg: &Registry, prefix: &str) -> usize {
        let mut done = 0;
        for name in &self.names {
            let built = validate_layout(&self.out, name);
            let reference = format!("{}/{prefix}/{name}:latest", reg.host());
            if reg.digest(&format!("{prefix}/{name}"), "latest").as_ref()
                != Some(&built.manifest_digest)
            {
                continue;
            }
            let back = pull_back_and_validate(&self.cx, &reference, reg.creds_arg().as_deref());
            assert_eq!(back.manifest_digest, built.manifest_digest, "{name}");
            assert_eq!(blob_digests(&back), blob_digests(&built), "{name}");
            done += 1;
        }
        done
    }
}

/// A token registry behind a chaos proxy, and a docker config with its
/// credentials for the proxy's host.
fn flaky_registry(cx: &Ctx) -> (Registry, Proxy, PathBuf) {
    let reg = Registry::token(TokenOptions::new(USER, PASSWORD));
    let token = reg.token_server().expect("a token server").host();
    let proxy = Proxy::start_with_token(&reg.host(), &token);
    let cfg = cx
        .scratch
        .join(format!("docker-{}", proxy.host().replace(':', "_")));
    fs::create_dir_all(&cfg).unwrap();
    reg.write_docker_config(&cfg, &proxy.host());
    (reg, proxy, cfg)
}

/// Kinds of request: a name, a method and a part of the target.
const TOKEN: (&str, &str, &str) = ("token", "*", "/token");
const HEAD_BLOB: (&str, &str, &str) = ("HEAD blob", "HEAD", "/blobs/sha256:");
const POST_UPLOAD: (&str, &str, &str) = ("POST upload", "POST", "/blobs/uploads/");
const PATCH_UPLOAD: (&str, &str, &str) = ("PATCH upload", "PATCH", "/blobs/uploads/");
const PUT_UPLOAD: (&str, &str, &str) = ("PUT upload", "PUT", "/blobs/uploads/");
const PUT_MANIFEST: (&str, &str, &str) = ("PUT manifest", "PUT", "/manifests/");
const GET_MANIFEST: (&str, &str, &str) = ("GET manifest", "GET", "/manifests/");
const GET_BLOB: (&str, &str, &str) = ("GET blob", "GET", "/blobs/sha256:");

/// Chaos on, and each fault once on each of these kinds of request.
fn unleash(proxy: &Proxy, c: Chaos, kinds: &[(&str, &str, &str)]) {
    for (_, method, part) in kinds {
        proxy.every_fault(method, part);
    }
    proxy.chaos(c);
}

/// The faults the proxy injected, by kind of request and kind of fault;
/// each kind of request in `kinds` must have met every kind of fault.
fn faults_met(proxy: &Proxy, kinds: &[(&str, &str, &str)]) -> String {
    let kind_of = |s: &common::proxy::Seen| -> &'static str {
        let t = s.target.as_str();
        match s.method.as_str() {
            _ if t.starts_with("/token") => "token",
            _ if t == "/v2/" => "/v2/",
            "HEAD" if t.contains("/blobs/") => "HEAD blob",
            "HEAD" => "HEAD manifest",
            "POST" => "POST upload",
            "PATCH" => "PATCH upload",
            "PUT" if t.contains("/manifests/") => "PUT manifest",
            "PUT" => "PUT upload",
            "GET" if t.contains("/manifests/") => "GET manifest",
            "GET" if t.contains("/blobs/uploads/") => "GET upload status",
            "GET" if t.contains("/blobs/") => "GET blob",
            _ => "other",
        }
    };
    let fault_of = |f: &Fault| -> &'static str {
        match f {
            Fault::Status { status: 503, .. } => "503",
            Fault::Status { status: 429, .. } => "429",
            Fault::Cut(common::proxy::Cut::BeforeRequest) => "cut before request",
            Fault::Cut(common::proxy::Cut::MidBody) => "cut mid-body",
            Fault::Cut(common::proxy::Cut::BeforeAnswer) => "cut before answer",
            _ => "other",
        }
    };
    use std::collections::{BTreeMap, BTreeSet};
    let mut by_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut by_fault: BTreeMap<&str, usize> = BTreeMap::new();
    let mut met: BTreeSet<(&str, &str)> = BTreeSet::new();
    for s in &proxy.requests() {
        let e = by_kind.entry(kind_of(s)).or_default();
        e.0 += 1;
        if let Some(f) = &s.fault {
            e.1 += 1;
            *by_fault.entry(fault_of(f)).or_default() += 1;
            met.insert((kind_of(s), fault_of(f)));
        }
    }
    let summary = format!("requests (seen, faulted): {by_kind:?}; faults: {by_fault:?}");
    for (k, _, _) in kinds {
        for f in [
            "503",
            "429",
            "cut before request",
            "cut mid-body",
            "cut before answer",
        ] {
            assert!(
                met.contains(&(*k, f)),
                "no `{f}` met a {k} request: {summary}"
            );
        }
    }
    summary
}

const PUSH_KINDS: &[(&str, &str, &str)] = &[
    TOKEN,
    HEAD_BLOB,
    POST_UPLOAD,
    PATCH_UPLOAD,
    PUT_UPLOAD,
    PUT_MANIFEST,
];
const PULL_KINDS: &[(&str, &str, &str)] = &[TOKEN, GET_MANIFEST, GET_BLOB];
const CACHE_KINDS: &[(&str, &str, &str)] = &[
    TOKEN,
    HEAD_BLOB,
    POST_UPLOAD,
    PATCH_UPLOAD,
    PUT_UPLOAD,
    PUT_MANIFEST,
    GET_MANIFEST,
    GET_BLOB,
];

fn fleet_push_through(rates: (f64, f64, f64), seed: u64) {
    let fx = twenty();
    let (reg, proxy, cfg) = flaky_registry(&fx.cx);
    unleash(&proxy, chaos(seed, rates), PUSH_KINDS);
    let env = [("DOCKER_CONFIG", cfg.to_str().unwrap())];
    let r = push(
        &fx.cx,
        &fx.names(),
        &format!("{}/fleet", proxy.host()),
        &[],
        &env,
    );
    proxy.clear();
    let summary = faults_met(&proxy, PUSH_KINDS);
    eprintln!("{summary}");
    assert_eq!(r.code, 0, "the push failed: {r}\n{summary}");
    assert_no_secret(&r, USER, PASSWORD);
    let done = fx.check_pushed(&reg, "fleet");
    eprintln!("imgbuild push: {done} of 20 tags complete");
    assert_eq!(done, 20, "{summary}");
}

#[test]
fn a_fleet_pushes_whole_through_mild_faults() {
    fleet_push_through(MILD, 13);
}

#[test]
fn a_fleet_pushes_whole_through_harsh_faults() {
    fleet_push_through(HARSH, 1313);
}

/// 20 images `from:` the fleet's 20, pulled through the faults: each built
/// on its parent's exact layers.
fn fleet_pull_through(rates: (f64, f64, f64), seed: u64) {
    let fx = twenty();
    let reg = Registry::token(TokenOptions::new(USER, PASSWORD));
    let direct = fx.dir("docker-direct");
    reg.write_docker_config(&direct, &reg.host());
    push(
        &fx.cx,
        &fx.names(),
        &format!("{}/fleet", reg.host()),
        &[],
        &[("DOCKER_CONFIG", direct.to_str().unwrap())],
    )
    .success();
    let token = reg.token_server().expect("a token server").host();
    let proxy = Proxy::start_with_token(&reg.host(), &token);
    let cfg = fx.dir("docker-proxy");
    reg.write_docker_config(&cfg, &proxy.host());

    let cx = Ctx::new().with_epoch(1_700_000_000);
    let mut yaml = String::from("images:\n");
    for name in &fx.names {
        cx.write(&format!("on-{name}/on.txt"), format!("on {name}\n"));
        yaml.push_str(&format!(
            "  on-{name}:\n    from: {}/fleet/{name}:latest\n    layers: [{{src: on-{name}, dest: /srv/on}}]\n",
            proxy.host()
        ));
    }
    cx.yaml(&yaml);
    unleash(&proxy, chaos(seed, rates), PULL_KINDS);
    let out = cx.scratch.join("oci");
    let r = imgbuild(
        &cx,
        &["build", "--all", "-o", &format!("oci:{}", out.display())],
        &[("DOCKER_CONFIG", cfg.to_str().unwrap())],
    );
    proxy.clear();
    let summary = faults_met(&proxy, PULL_KINDS);
    eprintln!("{summary}");
    assert_eq!(r.code, 0, "the build failed: {r}\n{summary}");
    for name in &fx.names {
        let parent = validate_layout(&fx.out, name);
        let child = validate_layout(&out, &format!("on-{name}"));
        let n = parent.layers.len();
        assert_eq!(child.layers.len(), n + 1, "on-{name}");
        for (c, p) in child.layers.iter().zip(&parent.layers) {
            assert_eq!(c.digest, p.digest, "on-{name}: the pulled layers");
        }
    }
}

#[test]
fn a_fleet_pulls_whole_through_mild_faults() {
    fleet_pull_through(MILD, 21);
}

#[test]
fn a_fleet_pulls_whole_through_harsh_faults() {
    fleet_pull_through(HARSH, 2121);
}

/// The layer cache through the faults: runner A fills it, runner B (an
/// empty store) fetches every layer from it; never given up on.
fn fleet_cache_through(rates: (f64, f64, f64), seed: u64) {
    let mut fx = twenty();
    let (reg, proxy, cfg) = flaky_registry(&fx.cx);
    unleash(&proxy, chaos(seed, rates), CACHE_KINDS);
    let env = [("DOCKER_CONFIG", cfg.to_str().unwrap())];
    let cache = format!("{}/cache", proxy.host());
    let names = fx.names.clone();
    fx.cx.home = fx.cx.scratch.join("home-a");
    let r = imgbuild(
        &fx.cx,
        &["--json", "build", "--all", "--cache-repo", &cache],
        &env,
    );
    assert_eq!(r.code, 0, "runner A failed: {r}");
    assert!(
        !r.stderr.contains("warning:"),
        "the cache was given up: {r}"
    );
    let a = Report(r.json());
    let mut keys: Vec<String> = names
        .iter()
        .flat_map(|n| a.layer_summary(n))
        .map(|(key, _, _)| format!("layer-{key}"))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(reg.tags("cache"), keys, "one cache tag per layer");

    fx.cx.home = fx.cx.scratch.join("home-b");
    let out = fx.cx.scratch.join("oci-b");
    let r = imgbuild(
        &fx.cx,
        &[
            "--json",
            "build",
            "--all",
            "--cache-repo",
            &cache,
            "-o",
            &format!("oci:{}", out.display()),
        ],
        &env,
    );
    proxy.clear();
    let summary = faults_met(&proxy, CACHE_KINDS);
    eprintln!("{summary}");
    assert_eq!(r.code, 0, "runner B failed: {r}\n{summary}");
    assert!(
        !r.stderr.contains("warning:"),
        "the cache was given up: {r}"
    );
    let b = Report(r.json());
    for name in &names {
        assert_eq!(b.manifest(name), a.manifest(name), "{name}: same digest");
        assert_eq!(b.manifest(name), fx.report.manifest(name), "{name}");
        for l in b.layers(name) {
            assert_eq!(l["fetched"], true, "{name}: {l}");
        }
        validate_layout(&out, name);
    }
}

#[test]
fn the_layer_cache_works_through_mild_faults() {
    fleet_cache_through(MILD, 31);
}

#[test]
fn the_layer_cache_works_through_harsh_faults() {
    fleet_cache_through(HARSH, 3131);
}

/// A blob download cut mid-body goes on from the bytes received: the
/// registry answers one ranged GET (206), and the copy is whole.
#[test]
fn a_cut_download_resumes_where_it_broke() {
    let fx = Fleet::new();
    let app = fx.image("app");
    let layer = app.layers.last().expect("app's own layer").digest.clone();
    let reg = Registry::anonymous();
    push(&fx.cx, &["app"], &format!("{}/fleet", reg.host()), &[], &[]).success();
    let proxy = Proxy::start(&reg.host());
    proxy.rule(
        "GET",
        &format!("/blobs/{layer}"),
        1,
        Fault::Cut(common::proxy::Cut::MidBody),
    );
    let dst = format!("{}/mirror/app:1", reg.host());
    imgbuild(
        &fx.cx,
        &["copy", &format!("{}/fleet/app:v1", proxy.host()), &dst],
        &[],
    )
    .success();
    assert_eq!(proxy.pending(), 0, "no download was cut");
    let blob = format!("/blobs/{layer}");
    assert_eq!(
        (
            reg.count("GET", &blob, Some(200)),
            reg.count("GET", &blob, Some(206))
        ),
        (1, 1),
        "one whole GET (cut), then one ranged GET for the rest:\n{}",
        reg.log_text()
    );
    let back = pull_back_and_validate(&fx.cx, &dst, None);
    assert_eq!(back.manifest_digest, app.manifest_digest);
}

// ---------------------------------------------------------------------------
// Credential sources and plain-HTTP registries

/// `DIR/docker-credential-NAME`, a helper that answers `get` for `host`
/// with the test's user, says "credentials not found" for any other host,
/// and appends each host it is asked about to `DIR/asked-NAME`.
fn credential_helper(dir: &std::path::Path, name: &str, host: &str) {
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread -r host\necho \"$host\" >> '{dir}/asked-{name}'\nif [ \"$host\" = '{host}' ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$host\"\nelse\n  echo 'credentials not found in native keychain'\n  exit 1\nfi\n",
        dir = dir.display()
    );
    let path = dir.join(format!("docker-credential-{name}"));
    fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn credentials_from_helpers_auth_files_and_podman() {
    let fx = Fleet::new();
    let web = fx.image("web").manifest_digest;
    let reg = Registry::htpasswd(USER, PASSWORD);
    let host = reg.host();
    let helpers = fx.dir("helpers");
    credential_helper(&helpers, "imgtest-one", &host);
    credential_helper(&helpers, "imgtest-store", &host);
    let path = format!(
        "{}:{}",
        helpers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let asked =
        |name: &str| fs::read_to_string(helpers.join(format!("asked-{name}"))).unwrap_or_default();
    let config = |name: &str, value: Value| {
        let d = fx.dir(name);
        fs::write(d.join("config.json"), value.to_string()).unwrap();
        d
    };
    let pushed = |repo: &str, env: &[(&str, &str)]| {
        let r = push(&fx.cx, &["web"], &format!("{host}/{repo}"), &[], env).success();
        assert_no_secret(&r, USER, PASSWORD);
        assert_eq!(
            reg.digest(&format!("{repo}/web"), "latest"),
            Some(web.clone()),
            "{repo}"
        );
    };
    let refused = |repo: &str, env: &[(&str, &str)]| {
        let r = push(&fx.cx, &["web"], &format!("{host}/{repo}"), &[], env).exit(1);
        assert_no_secret(&r, USER, PASSWORD);
        assert_eq!(reg.digest(&format!("{repo}/web"), "latest"), None, "{repo}");
        r
    };

    // credHelpers: the helper for this host, run from PATH.
    let helper_cfg = config(
        "docker-helpers",
        serde_json::json!({"credHelpers": {host.as_str(): "imgtest-one"}}),
    );
    let helper_cfg = helper_cfg.to_str().unwrap();
    pushed("helper", &[("DOCKER_CONFIG", helper_cfg), ("PATH", &path)]);
    assert!(
        asked("imgtest-one").lines().any(|h| h == host),
        "{}",
        asked("imgtest-one")
    );
    // A helper that is not installed: a clear error naming it.
    let r = refused("helper-missing", &[("DOCKER_CONFIG", helper_cfg)]);
    r.stderr_has(&["docker-credential-imgtest-one", "PATH"]);

    // credsStore: the default helper for every host.
    let store_cfg = config(
        "docker-store",
        serde_json::json!({"credsStore": "imgtest-store"}),
    );
    pushed(
        "store",
        &[
            ("DOCKER_CONFIG", store_cfg.to_str().unwrap()),
            ("PATH", &path),
        ],
    );
    assert!(asked("imgtest-store").lines().any(|h| h == host));

    // REGISTRY_AUTH_FILE, before a config.json with a wrong password.
    let bad = fx.dir("docker-bad");
    write_docker_config(&bad, &[(&host, USER, "wrong-pw-Xy7")]);
    let bad = bad.to_str().unwrap();
    refused("bad", &[("DOCKER_CONFIG", bad)]);
    let auth_file = write_docker_config(&fx.dir("auth-file"), &[(&host, USER, PASSWORD)]);
    pushed(
        "auth-file",
        &[
            ("DOCKER_CONFIG", bad),
            ("REGISTRY_AUTH_FILE", auth_file.to_str().unwrap()),
        ],
    );

    // podman's $XDG_RUNTIME_DIR/containers/auth.json, before config.json too.
    let runtime = fx.dir("xdg-runtime");
    let written = write_docker_config(&runtime.join("containers"), &[(&host, USER, PASSWORD)]);
    fs::rename(&written, runtime.join("containers/auth.json")).unwrap();
    pushed(
        "podman",
        &[
            ("DOCKER_CONFIG", bad),
            ("XDG_RUNTIME_DIR", runtime.to_str().unwrap()),
        ],
    );
}

/// One of this machine's addresses other than loopback (the one its
/// default route leaves by; no packet is sent).
fn non_loopback_ip() -> std::net::IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.1:9").unwrap_or_else(|e| {
        panic!(
            "this test needs a non-loopback address (a default route) to reach a registry by: {e}"
        )
    });
    let ip = s.local_addr().unwrap().ip();
    assert!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "no non-loopback address: {ip}"
    );
    ip
}

#[test]
fn insecure_registry_is_reached_over_plain_http_only_when_named() {
    let fx = Fleet::new();
    let web = fx.image("web").manifest_digest;
    let reg = Registry::htpasswd(USER, PASSWORD);
    // The registry as a host that is not loopback: HTTPS unless named.
    let proxy = Proxy::start_at(non_loopback_ip(), &reg.host());
    let host = proxy.host();
    let cfg = fx.dir("docker");
    write_docker_config(&cfg, &[(&host, USER, PASSWORD)]);
    let env = [("DOCKER_CONFIG", cfg.to_str().unwrap())];
    let prefix = format!("{host}/fleet");

    let r = push(&fx.cx, &["web"], &prefix, &[], &env).exit(1);
    assert_no_secret(&r, USER, PASSWORD);
    r.stderr_has(&[&host]);
    assert_eq!(reg.uploads(), 0, "pushed over plain HTTP unasked");
    let r = push(
        &fx.cx,
        &["web"],
        &prefix,
        &["--insecure-registry", &host],
        &env,
    )
    .success();
    assert_no_secret(&r, USER, PASSWORD);
    assert_eq!(reg.digest("fleet/web", "latest"), Some(web.clone()));
    // Reading too.
    let r = imgbuild(
        &fx.cx,
        &[
            "digest",
            "--insecure-registry",
            &host,
            &format!("{prefix}/web:latest"),
        ],
        &env,
    )
    .success();
    assert_eq!(r.stdout.trim(), web);
}
