//! Peers on loopback that tests serve their inputs from: a static HTTP
//! server and `git http-backend` behind one (python3's), and `git` run with
//! a fixed identity to make repositories.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::run_command;

/// Runs `git ARGS…` in `dir` with a fixed identity; its stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir);
    run_command(c).success().stdout.trim().to_string()
}

/// A loopback HTTP server (python3) serving `dir`; with `token`, requests
/// without `Authorization: <token>` get 401. Killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

const SERVER: &str = r#"
import http.server, os, sys
want = os.environ.get("WANT_AUTH")
class H(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if want and self.headers.get("Authorization") != want:
            self.send_response(401); self.end_headers(); return
        return super().do_GET()
    def log_message(self, *a):
        pass
os.chdir(sys.argv[1])
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// The same with `git http-backend` behind it (argv: the directory of
/// repositories, the backend program), for git over HTTP.
const GIT_SERVER: &str = r#"
import http.server, os, subprocess, sys
want = os.environ.get("WANT_AUTH")
root, backend = sys.argv[1], sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def serve(self, method):
        if want and self.headers.get("Authorization") != want:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        env = dict(os.environ, GIT_PROJECT_ROOT=root, GIT_HTTP_EXPORT_ALL="1",
                   PATH_INFO=path, QUERY_STRING=query, REQUEST_METHOD=method,
                   CONTENT_TYPE=self.headers.get("Content-Type", ""),
                   CONTENT_LENGTH=str(len(body)), REMOTE_ADDR="127.0.0.1",
                   HTTP_CONTENT_ENCODING=self.headers.get("Content-Encoding", ""),
                   HTTP_GIT_PROTOCOL=self.headers.get("Git-Protocol", ""))
        out = subprocess.run([backend], input=body, env=env, capture_output=True).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        head, _, rest = out.partition(sep)
        status, headers = 200, []
        for line in head.decode().splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.split()[0])
            elif k:
                headers.append((k, v.strip()))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)
    def do_GET(self):
        self.serve("GET")
    def do_POST(self):
        self.serve("POST")
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

impl Server {
    pub fn start(dir: &Path, auth: Option<&str>) -> Server {
        Server::spawn(SERVER, &[dir], auth)
    }

    /// `git http-backend` serving the repositories below `dir`.
    pub fn git(dir: &Path, auth: Option<&str>) -> Server {
        let exec = git(dir, &["--exec-path"]);
        let backend = Path::new(&exec).join("git-http-backend");
        assert!(backend.is_file(), "no {}", backend.display());
        Server::spawn(GIT_SERVER, &[dir, &backend], auth)
    }

    fn spawn(script: &str, args: &[&Path], auth: Option<&str>) -> Server {
        let mut c = Command::new("python3");
        c.args(["-u", "-c", script])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(a) = auth {
            c.env("WANT_AUTH", a);
        }
        let mut child = c.spawn().expect("python3 runs the test's HTTP server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the HTTP server did not start: {line:?}"));
        Server { child, port }
    }

    pub fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
