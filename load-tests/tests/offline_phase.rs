//! End to end: the load tool against the real server binary, small, with the offline phase
//! (`--offline`, protocol 1.1). The server binary must be built beside the tool's
//! (`cargo build -p lockerhub --bin lockerhub`, as `.ci/run` does before these tests).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The tool's own bounds (--time-limit 120) come first; this is the test's last one.
const LAST_BOUND: Duration = Duration::from_secs(240);

fn server_bin(tool: &str) -> PathBuf {
    let bin = PathBuf::from(tool).with_file_name("lockerhub");
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build -p lockerhub --bin lockerhub` first",
        bin.display()
    );
    bin
}

/// Runs the tool, killing it if it outlives `LAST_BOUND`.
fn run_tool(args: &[&str]) -> Output {
    let tool = env!("CARGO_BIN_EXE_lockerhub-load");
    let child = Command::new(tool)
        .args(args)
        .arg("--server-bin")
        .arg(server_bin(tool))
        .env("CI", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lockerhub-load");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LAST_BOUND) {
        Ok(out) => out.expect("wait for lockerhub-load"),
        Err(_) => {
            // Its children die with it (the tool kills them when dropped; the server's data
            // directory is a temporary one).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("lockerhub-load ran longer than {LAST_BOUND:?}");
        }
    }
}

#[test]
fn five_lockers_pick_up_offline_and_replay() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = run_tool(&[
        "--lockers",
        "20",
        "--lockers-per-site",
        "10",
        "--sources",
        "2",
        "--rate",
        "10",
        "--duration",
        "3",
        "--offline",
        "5",
        "--time-limit",
        "120",
        "--phase-timeout",
        "60",
        "--label",
        "offline",
        "--out",
        out_dir.path().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("offline.json")).unwrap()).unwrap();
    let lh = &report["lockerhub"];
    let o = &lh["offline"];
    let context = format!("offline: {o:#}\nerrors: {:#}\n{stdout}", lh["errors"]);
    for field in [
        "lockers",
        "booted_1_1",
        "deposited",
        "qr_tokens",
        "picked_up_offline",
        "replayed",
        "verified",
    ] {
        assert_eq!(o[field], 5, "{field}\n{context}");
    }
    assert_eq!(o["outcomes"], serde_json::json!({"picked_up": 5}), "{context}");
    assert!(o["replay_p99_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{context}");
    assert_eq!(lh["errors"]["total"], 0, "{context}");
    assert_eq!(lh["parcels"]["lost"], 0, "{context}");
    assert_eq!(report["checks"]["passed"], true, "{context}");
    assert!(stdout.contains("5 picked up offline"), "{stdout}");
}
