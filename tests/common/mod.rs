//! Shared test harness: the real `ringkv` binary on an ephemeral loopback port and a temporary
//! data directory, and a raw HTTP/1.1 client over std sockets (so tests control every byte).

#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How many files in `dir` have names ending with `suffix`.
pub fn files_ending(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .expect("read the data directory")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.file_name().to_string_lossy().ends_with(suffix))
        })
        .count()
}

/// A running server process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// The "ringkv listening on ..." line.
    pub startup_line: String,
    child: Child,
    log: mpsc::Receiver<String>,
}

impl TestServer {
    /// Starts the server on `dir` with extra arguments; waits for its "listening on" line.
    pub fn start(dir: &Path, args: &[&str]) -> TestServer {
        Self::start_command(dir, Command::new(env!("CARGO_BIN_EXE_ringkv")), args)
    }

    /// As [`TestServer::start`], with `command` (the server binary, or a shell that `exec`s it
    /// as its last word, with its own environment) in place of the plain binary.
    pub fn start_command(dir: &Path, command: Command, args: &[&str]) -> TestServer {
        Self::start_listening(dir, command, "127.0.0.1:0", args)
    }

    /// As [`TestServer::start`], on the address `listen` (a cluster's nodes must know each
    /// other's ports before they start).
    pub fn start_at(dir: &Path, listen: &str, args: &[&str]) -> TestServer {
        Self::start_listening(dir, Command::new(env!("CARGO_BIN_EXE_ringkv")), listen, args)
    }

    fn start_listening(dir: &Path, mut command: Command, listen: &str, args: &[&str]) -> TestServer {
        let mut child = command
            .args(["--listen", listen, "--data-dir"])
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringkv");
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server's stderr was not piped");
        };
        let (lines, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut said = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if let Ok(line) = log.recv_timeout(remaining) {
                said.push(line.clone());
                if let Some(rest) = line.strip_prefix("ringkv listening on ") {
                    let parsed = rest.split(',').next().and_then(|addr| addr.parse().ok());
                    let Some(addr) = parsed else {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("no address in the start-up line {line:?}");
                    };
                    return TestServer {
                        addr,
                        dir: dir.to_path_buf(),
                        startup_line: line.clone(),
                        child,
                        log,
                    };
                }
            } else {
                let _ = child.kill();
                let status = child.wait();
                said.extend(log.try_iter());
                panic!("server did not start: {status:?}; it said: {said:#?}");
            }
        }
    }

    /// SIGKILL: the process dies with no chance to sync or clean up.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// Sends a signal and waits for the exit.
    pub fn signal_and_wait(mut self, signal: i32) -> (ExitStatus, Vec<String>) {
        ringkv::sys::send_signal(self.child.id(), signal).expect("signal the server");
        let status = self.child.wait().expect("wait");
        let lines = self.log.try_iter().collect();
        (status, lines)
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Waits up to `limit` for the process to exit by itself; its status and log lines.
    pub fn wait_exit(mut self, limit: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // The log thread ends with the pipe; give it a moment to pass the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return (status, self.log.try_iter().collect());
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log lines printed so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// Waits up to `timeout` for a log line containing `needle`, consuming the lines before it.
    /// A line the server has written can still be on its way: its stderr reaches the test through
    /// a reader thread, which on a loaded two-core machine lags behind the server's answers (a
    /// check through [`TestServer::log_lines`] right after an answer failed in CI that way).
    pub fn wait_for_log_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(remaining) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One keep-alive connection.
pub struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    /// A client on a connection opened already.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream: BufReader::new(stream),
        }
    }

    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream: BufReader::new(stream),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).expect("send");
    }

    /// Reads one response (Content-Length framed, as every answer of this server is).
    pub fn read_response(&mut self) -> Response {
        let mut status_line = String::new();
        self.stream.read_line(&mut status_line).expect("status line");
        assert!(
            status_line.starts_with("HTTP/1.1 "),
            "bad status line {status_line:?}"
        );
        let status = status_line[9..12].parse().expect("status code");
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).expect("header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header colon");
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(length) = response.header("content-length") {
            let mut body = vec![0; length.parse().expect("content-length")];
            self.stream.read_exact(&mut body).expect("body");
            response.body = body;
        }
        response
    }

    /// True if the server closed the connection (EOF) without sending more.
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
    }

    pub fn request(&mut self, method: &str, target: &str, body: Option<&str>) -> Response {
        let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
        if let Some(body) = body {
            raw.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        raw.push_str("\r\n");
        raw.push_str(body.unwrap_or(""));
        self.send_raw(raw.as_bytes());
        self.read_response()
    }

    pub fn set(&mut self, key: &str, value: &serde_json::Value) -> Response {
        let body = serde_json::json!({ "key": key, "value": value }).to_string();
        self.request("POST", "/set", Some(&body))
    }

    pub fn get(&mut self, key: &str) -> Response {
        self.request("GET", &format!("/get?key={}", encode(key)), None)
    }

    pub fn del(&mut self, key: &str) -> Response {
        self.request("DELETE", &format!("/del?key={}", encode(key)), None)
    }
}

/// A raw `POST /set` request, for tests that pipeline several in one send.
pub fn set_request(key: &str, value: &serde_json::Value) -> String {
    let body = serde_json::json!({ "key": key, "value": value }).to_string();
    format!(
        "POST /set HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Percent-encodes everything but unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
