//! A server process under test (`marvin serve`): started with its output
//! collected as it comes (so no pipe ever fills), waited for until its
//! `/healthz` answers, and killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free 127.0.0.1 address (the port is released at once; the process
/// under test binds it).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address")
}

/// A running server process.
pub struct Served {
    child: Child,
    addr: SocketAddr,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<std::thread::JoinHandle<()>>,
}

type Lines = Arc<Mutex<Vec<String>>>;

fn collect(from: impl std::io::Read + Send + 'static) -> (Lines, std::thread::JoinHandle<()>) {
    let lines: Lines = Arc::default();
    let into = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
    (lines, reader)
}

impl Served {
    /// Spawns `command` (which must make the process listen on `addr`) and
    /// waits up to 30 s for `GET /healthz` to succeed. The error carries
    /// what the process printed.
    pub async fn start(mut command: Command, addr: SocketAddr) -> Result<Served, String> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
        let (stdout, out_reader) = collect(child.stdout.take().expect("piped"));
        let (stderr, err_reader) = collect(child.stderr.take().expect("piped"));
        let mut served = Served {
            child,
            addr,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", served.url())).send().await
                && r.status().is_success()
            {
                return Ok(served);
            }
            if let Ok(Some(exit)) = served.child.try_wait() {
                return Err(format!(
                    "the process exited ({exit}) before answering /healthz:\n{}",
                    served.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no answer on {}/healthz within 30 s:\n{}",
                    served.url(),
                    served.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stderr so far (its log).
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The lines the process wrote to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "kill -TERM {}",
            self.child.id()
        );
    }

    /// The exit status, once the process has exited (and everything it
    /// wrote has been collected).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let exit = self.child.try_wait().expect("the child's status")?;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Some(exit)
    }

    /// Waits for the process to exit (after [`Served::terminate`]), up to
    /// `limit`; `None` if it is still running then.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() > until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
