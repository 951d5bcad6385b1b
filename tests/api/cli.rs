//! The binary itself: bootstrap, migrate, help, and a clear error for an unreachable database.

use std::process::Command;
use std::time::{Duration, Instant};

/// The server binary, run in `dir`, with none of this environment's lockerhub settings.
pub(crate) fn lockerhub(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lockerhub"));
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("LOCKERHUB_LOG_LEVEL", "warn");
    for (k, _) in std::env::vars() {
        if k.starts_with("LOCKERHUB_") && k != "LOCKERHUB_LOG_LEVEL" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs `lockerhub create-admin-key` in `dir` (creating the database there) and returns the key.
pub(crate) fn create_admin_key(dir: &std::path::Path) -> String {
    let out = lockerhub(dir)
        .args(["create-admin-key", "--name", "ops"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn bootstrap_prints_a_working_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_admin_key(dir.path());
    assert!(key.starts_with("lhk_"), "{key}");
    assert!(
        dir.path().join("data/lockerhub.db").exists(),
        "SQLite file created at the default path"
    );
    let db = std::fs::read(dir.path().join("data/lockerhub.db")).unwrap();
    let wal = std::fs::read(dir.path().join("data/lockerhub.db-wal")).unwrap_or_default();
    let needle = key.as_bytes();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the key is stored only as a hash"
        );
    }
    let out = lockerhub(dir.path()).arg("migrate").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 migrations applied"));
}

#[test]
fn help_documents_settings() {
    let dir = tempfile::tempdir().unwrap();
    let out = lockerhub(dir.path()).arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for s in [
        "serve",
        "migrate",
        "create-admin-key",
        "LOCKERHUB_DATABASE_URL",
        "LOCKERHUB_PORT",
        "LOCKERHUB_SECRET_KEY",
    ] {
        assert!(text.contains(s), "--help mentions {s}");
    }
}

#[test]
fn unreachable_database_fails_fast_naming_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = lockerhub(dir.path())
        .arg("migrate")
        .env("DATABASE_URL", "postgres://lh:s3cret@127.0.0.1:1/lockerhub")
        .output()
        .unwrap();
    let took = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("127.0.0.1:1"), "names the host: {err}");
    assert!(!err.contains("s3cret"), "never prints the password: {err}");
    assert!(took < Duration::from_secs(15), "fails within seconds, took {took:?}");
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lockerhub.toml"), "port = \"eighty\"\n").unwrap();
    let out = lockerhub(dir.path()).arg("migrate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port"));
    std::fs::write(dir.path().join("lockerhub.toml"), "prot = 80\n").unwrap();
    let out = lockerhub(dir.path()).arg("migrate").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "unknown keys are refused, catching typos");
    let out = lockerhub(dir.path())
        .args(["--config", "missing.toml", "migrate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Stops the server this test started when the test ends, even on a failed assertion.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET /healthz over a plain socket; the status line, if the server answered.
fn healthz(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.lines().next().map(str::to_string)
}

/// A phone number, a numeric password and other text settings that look like numbers, lists or
/// booleans are read as the text they are: the server starts and serves.
#[actix_web::test]
async fn numeric_looking_text_settings_start_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::helpers::free_port();
    let child = lockerhub(dir.path())
        .arg("serve")
        .env("LOCKERHUB_PORT", port.to_string())
        .env("LOCKERHUB_WORKERS", "1")
        .env("LOCKERHUB_SMS_FROM", "+15550000000")
        .env("LOCKERHUB_SMS_USERNAME", "12345")
        .env("LOCKERHUB_SMS_PASSWORD", "0042")
        .env("LOCKERHUB_SMTP_USERNAME", "true")
        .env("LOCKERHUB_SMTP_PASSWORD", "123456")
        .env("LOCKERHUB_PUSH_TOKEN", "1e9")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Running(child);
    // The process starts on its own: bounded, and a server that exits fails at once.
    let status = crate::helpers::eventually(Duration::from_secs(30), "a /healthz answer", || {
        if let Ok(Some(exit)) = server.0.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = server.0.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("the server stopped ({exit}): {err}");
        }
        std::future::ready(healthz(port))
    })
    .await;
    assert!(status.contains("200"), "{status}");
}

#[test]
fn admin_keys_get_a_holder_and_a_role() {
    use diesel::prelude::*;
    use lockerhub::db::schema::admin_keys as k;
    let dir = tempfile::tempdir().unwrap();
    let out = lockerhub(dir.path())
        .args([
            "create-admin-key",
            "--name",
            "night desk",
            "--holder",
            "Ann Lee",
            "--role",
            "viewer",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("held by Ann Lee, role viewer"));
    let out = lockerhub(dir.path())
        .args(["create-admin-key", "--name", "ops"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = lockerhub(dir.path())
        .args(["create-admin-key", "--role", "root"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "unknown roles are refused");
    let out = lockerhub(dir.path())
        .args(["create-admin-key", "--holder", "  "])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a holder must name someone");
    let mut c = diesel::SqliteConnection::establish(dir.path().join("data/lockerhub.db").to_str().unwrap()).unwrap();
    let rows: Vec<(String, String, String)> = k::table
        .order(k::id.asc())
        .select((k::name, k::holder, k::role))
        .load(&mut c)
        .unwrap();
    assert_eq!(
        rows,
        vec![
            ("night desk".into(), "Ann Lee".into(), "viewer".into()),
            ("ops".into(), "ops".into(), "admin".into()),
        ]
    );
}
