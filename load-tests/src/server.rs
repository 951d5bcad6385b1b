//! The processes under test, started as children on 127.0.0.1: lockerhub on a fresh SQLite
//! data directory (or a PostgreSQL database on loopback), or this binary's own echo-server subcommand. Both inherit the raised
//! open-file limit; both are killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::http::Api;
use crate::sys;

pub struct ChildServer {
    child: Child,
    pub pid: u32,
    pub base: String,
    pub ws_base: String,
    /// The database URL (lockerhub only), for the pickup-code reader.
    pub db_url: Option<String>,
    pub log_path: PathBuf,
    /// How to start it again on the same port and database (lockerhub only).
    restart: Option<(PathBuf, u16)>,
    _dir: tempfile::TempDir,
}

/// Settings for the load run, passed as environment: loopback, quiet logs, no auth-failure
/// throttling, and the notification outbox held (polled once an hour) so the pickup codes it
/// holds stay readable for the simulated recipients.
fn lockerhub_env(cmd: &mut Command, port: u16, dir: &Path) {
    for var in ["LOCKERHUB_CONFIG", "DATABASE_URL", "LOCKERHUB_DATABASE_URL", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd.env("LOCKERHUB_HOST", "127.0.0.1")
        .env("LOCKERHUB_PORT", port.to_string())
        .env("LOCKERHUB_DATA_DIR", dir)
        .env("LOCKERHUB_LOG_LEVEL", "warn")
        .env("LOCKERHUB_LOG_FORMAT", "pretty")
        .env("LOCKERHUB_AUTH_FAILURES_PER_MINUTE", "1000000")
        // Walk-up deposits by phone are kiosk lookups: a fleet under load makes far more than
        // the per-locker allowance meant for a stolen credential.
        .env("LOCKERHUB_DIRECTORY_LOOKUPS_PER_HOUR", "1000000")
        // Codes are read from the notification queue (load-tests/README.md): keep them there.
        .env("LOCKERHUB_NOTIFICATIONS_PAUSED", "true")
        .env("LOCKERHUB_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .current_dir(dir);
}

fn spawn_lockerhub(bin: &Path, port: u16, dir: &Path, db_url: &str, log: std::fs::File) -> anyhow::Result<Child> {
    let mut cmd = Command::new(bin);
    lockerhub_env(&mut cmd, port, dir);
    cmd.env("LOCKERHUB_DATABASE_URL", db_url);
    cmd.arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    cmd.spawn().with_context(|| format!("starting {}", bin.display()))
}

/// `lockerhub` beside this binary (target/<profile>/), unless given.
pub fn lockerhub_bin(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let bin = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("lockerhub"))
            .context("no directory for this binary")?,
    };
    if !bin.is_file() {
        bail!(
            "server binary {} not found: build it with `cargo build --release --bin lockerhub`, or pass --server-bin",
            bin.display()
        );
    }
    // The child runs in its data directory: the path must not be relative.
    Ok(std::fs::canonicalize(&bin)?)
}

impl ChildServer {
    /// Starts lockerhub and creates an admin key with its own `create-admin-key` command.
    pub async fn lockerhub(bin: &Path, database_url: Option<&str>) -> anyhow::Result<(ChildServer, String)> {
        let dir = tempfile::Builder::new().prefix("lockerhub-load-").tempdir()?;
        let port = sys::free_port()?;
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path)?;
        let db_url = match database_url {
            Some(url) => {
                sys::loopback_database(url).map_err(anyhow::Error::msg)?;
                url.to_string()
            }
            None => format!("sqlite://{}", dir.path().join("lockerhub.db").display()),
        };
        let child = spawn_lockerhub(bin, port, dir.path(), &db_url, log)?;
        let mut server = ChildServer::adopt(child, port, dir, log_path, Some(db_url.clone()))?;
        server.restart = Some((bin.to_path_buf(), port));
        server.wait_ready().await?;

        let mut key_cmd = Command::new(bin);
        lockerhub_env(&mut key_cmd, port, server._dir.path());
        key_cmd.env("LOCKERHUB_DATABASE_URL", &db_url);
        key_cmd
            .args(["create-admin-key", "--name", "load-test"])
            .stdin(Stdio::null());
        let out = tokio::task::spawn_blocking(move || key_cmd.output()).await??;
        if !out.status.success() {
            bail!("create-admin-key failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if key.is_empty() {
            bail!("create-admin-key printed no key");
        }
        Ok((server, key))
    }

    /// Kills lockerhub with SIGKILL (no shutdown, no final commit), then starts it again on
    /// the same port and database and waits until it is ready. Returns the seconds from the
    /// kill to ready.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<f64> {
        let Some((bin, port)) = self.restart.clone() else {
            bail!("only a lockerhub this tool started can be killed and restarted");
        };
        let db_url = self.db_url.clone().context("no database URL")?;
        let killed = std::time::Instant::now();
        self.child.kill().context("SIGKILL")?;
        let _ = self.child.wait();
        let log = std::fs::OpenOptions::new().append(true).open(&self.log_path)?;
        self.child = spawn_lockerhub(&bin, port, self._dir.path(), &db_url, log)?;
        self.pid = self.child.id();
        self.wait_ready().await?;
        Ok(killed.elapsed().as_secs_f64())
    }

    /// Starts this binary's echo-server subcommand.
    pub async fn echo() -> anyhow::Result<ChildServer> {
        let dir = tempfile::Builder::new().prefix("lockerhub-echo-").tempdir()?;
        let port = sys::free_port()?;
        let log_path = dir.path().join("echo.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(std::env::current_exe()?)
            .args(["echo-server", "--port", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting the echo server")?;
        let server = ChildServer::adopt(child, port, dir, log_path, None)?;
        server.wait_ready().await?;
        Ok(server)
    }

    fn adopt(
        child: Child,
        port: u16,
        dir: tempfile::TempDir,
        log_path: PathBuf,
        db_url: Option<String>,
    ) -> anyhow::Result<ChildServer> {
        let pid = child.id();
        Ok(ChildServer {
            child,
            pid,
            base: format!("http://127.0.0.1:{port}"),
            ws_base: format!("ws://127.0.0.1:{port}"),
            db_url,
            log_path,
            restart: None,
            _dir: dir,
        })
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let api = Api::new(&self.base, "", 1)?;
        if let Err(e) = api.wait_healthy(Duration::from_secs(60)).await {
            bail!("{e}; its log:\n{}", self.log_tail(20));
        }
        Ok(())
    }

    /// The last lines of the child's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Log lines at WARN or above (lockerhub logs at warn during the run).
    pub fn log_lines(&self) -> usize {
        std::fs::read_to_string(&self.log_path)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// Stops the child: SIGTERM, up to 10 s for a graceful exit, then SIGKILL.
    pub async fn stop(mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            // SAFETY: signalling our own child by its pid.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Drop kills it.
    }
}

impl Drop for ChildServer {
    /// A child never outlives the run (an error or an interrupt included).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
