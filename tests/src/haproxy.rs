//! HAProxy running the shipped `deploy/haproxy/haproxy.cfg` (only ports and paths changed,
//! through its environment variables), for the tests that put the relay behind it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::pki::TestCa;
use crate::{PATIENCE, repo_root};

/// A port free now on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// HAProxy on the shipped configuration.
pub struct Haproxy {
    _child: Child,
    /// The plain HTTP frontend's port.
    pub http: u16,
    /// The plain TCP (newline) frontend's port.
    pub tcp: u16,
    /// The TLS TCP frontend's port.
    pub tcps: u16,
    /// The runtime API socket.
    pub socket: PathBuf,
}

impl Haproxy {
    /// HAProxy on the shipped configuration, blue at `blue`, green at `green`.
    pub async fn start(dir: &Path, blue: u16, green: u16) -> Haproxy {
        let ca = TestCa::new(dir, "lb-ca");
        let issued = ca.server("localhost", "lb");
        let pem = dir.join("lb.pem");
        let both = std::fs::read_to_string(&issued.cert).unwrap() + &std::fs::read_to_string(&issued.key).unwrap();
        std::fs::write(&pem, both).unwrap();
        // Its ports are chosen free beforehand, and another test may bind one first: then
        // HAProxy exits at start, and it is started again on other ports.
        for _ in 0..5 {
            if let Some(haproxy) = Self::try_start(dir, &pem, blue, green).await {
                return haproxy;
            }
        }
        panic!(
            "haproxy exited at start five times: {}",
            std::fs::read_to_string(dir.join("haproxy.err")).unwrap_or_default()
        );
    }

    /// HAProxy listening, or `None` when it exited before it listened (a port was taken).
    async fn try_start(dir: &Path, pem: &Path, blue: u16, green: u16) -> Option<Haproxy> {
        let (http, tcp, tcps) = (free_port(), free_port(), free_port());
        let socket = dir.join("admin.sock");
        let _ = std::fs::remove_file(&socket);
        let address = |port: u16| format!("127.0.0.1:{port}");
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(repo_root().join("deploy/haproxy/haproxy.cfg"))
            .env("RELAY_LB_UNPRIVILEGED", "1")
            .env("RELAY_LB_HTTPS_BIND", address(free_port()))
            .env("RELAY_LB_HTTP_BIND", address(http))
            .env("RELAY_LB_TCPS_BIND", address(tcps))
            .env("RELAY_LB_TCP_BIND", address(tcp))
            .env("RELAY_LB_STATS_BIND", address(free_port()))
            .env("RELAY_LB_CERT", pem)
            .env("RELAY_LB_BLUE", address(blue))
            .env("RELAY_LB_GREEN", address(green))
            .env("RELAY_LB_SOCKET", &socket)
            .env("RELAY_LB_STATE_FILE", dir.join("server-state"))
            .env("RELAY_LB_LOG", "stdout")
            .stdout(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .stderr(Stdio::from(std::fs::File::create(dir.join("haproxy.err")).unwrap()))
            .kill_on_drop(true)
            .spawn()
            .expect("start haproxy (scripts/test.sh installs it)");
        let up = async {
            // Listening once its runtime socket exists (made after every bind succeeded).
            while TcpStream::connect(("127.0.0.1", http)).await.is_err() || !socket.exists() {
                if child.try_wait().expect("haproxy's status").is_some() {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            true
        };
        let listening = tokio::time::timeout(PATIENCE, up).await.expect("haproxy listens");
        listening.then_some(Haproxy { _child: child, http, tcp, tcps, socket })
    }

    /// `http://127.0.0.1:HTTP{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// Sends one command to HAProxy's runtime API; gives its answer.
    pub async fn admin(&self, command: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = tokio::net::UnixStream::connect(&self.socket).await.expect("haproxy runtime socket");
        socket.write_all(format!("{command}\n").as_bytes()).await.unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.unwrap();
        answer
    }

    /// The colour that answers `/readyz` through HAProxy.
    pub async fn serving(&self) -> String {
        let ready: Value = reqwest::get(self.url("/readyz")).await.unwrap().json().await.unwrap();
        ready["instance"].as_str().unwrap_or_default().to_owned()
    }
}
