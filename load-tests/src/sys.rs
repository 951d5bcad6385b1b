//! The machine: open-file limits, /proc sampling of a process's RSS and CPU, and the
//! loopback-only rule for targets.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// RLIMIT_NOFILE after raising the soft limit to the hard one. Children (the server, the echo
/// server) inherit it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FileLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

pub fn raise_nofile() -> FileLimit {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    let soft_before = r.rlim_cur;
    if r.rlim_cur < r.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            r = raised;
        }
    }
    FileLimit {
        soft_before,
        soft: r.rlim_cur,
        hard: r.rlim_max,
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// One reading of a process: resident set, its peak, and CPU time (user + system).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcReading {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub cpu_secs: f64,
}

pub fn read_proc(pid: u32) -> Option<ProcReading> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3; utime and
    // stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some(ProcReading {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
        cpu_secs: (utime + stime) / clock_ticks(),
    })
}

/// Open file descriptors of a process (0 when unreadable).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A time series of one process, sampled every 250 ms until stopped (or its deadline).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    pub rss_mb: f64,
    /// CPU use since the previous sample, in percent of one core.
    pub cpu_pct: f64,
}

pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    pub fn start(pid: u32, epoch: Instant, deadline: Instant) -> Sampler {
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last: Option<(Instant, f64)> = None;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                tick.tick().await;
                let Some(r) = read_proc(pid) else { break };
                let now = Instant::now();
                let cpu_pct = match last {
                    Some((t, c)) if now > t => 100.0 * (r.cpu_secs - c) / (now - t).as_secs_f64(),
                    _ => 0.0,
                };
                last = Some((now, r.cpu_secs));
                s.lock().unwrap_or_else(|e| e.into_inner()).push(Sample {
                    t: (now - epoch).as_secs_f64(),
                    rss_mb: r.rss_kb as f64 / 1024.0,
                    cpu_pct,
                });
            }
        });
        Sampler { samples, stop }
    }

    pub fn stop(&self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The kernel's count of connections dropped because a listen queue was full
/// (TcpExt ListenOverflows, machine-wide): each one costs a client a SYN retransmit (1 s+).
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
}

/// The 1-minute load average, to show what else was running.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Only loopback targets: 127.0.0.0/8 or ::1 (`localhost` is taken as 127.0.0.1, never
/// resolved). Returns the HTTP base, the WebSocket base and the host address.
pub fn loopback_target(raw: &str) -> Result<(String, String, IpAddr), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("--server-url {raw:?}: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "--server-url {raw:?}: only http:// (plain, loopback) is supported"
        ));
    }
    let ip: IpAddr = match url.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => {
            return Err(format!(
                "--server-url {raw:?}: the host must be an address in 127.0.0.0/8 or ::1"
            ))
        }
    };
    if !ip.is_loopback() {
        return Err(format!(
            "--server-url {raw:?}: {ip} is not a loopback address; this tool only sends traffic to 127.0.0.0/8 or ::1"
        ));
    }
    let port = url
        .port_or_known_default()
        .ok_or_else(|| format!("--server-url {raw:?}: no port"))?;
    let host = match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    Ok((format!("http://{host}:{port}"), format!("ws://{host}:{port}"), ip))
}

/// The source addresses connections are spread over (none for an IPv6 target).
pub fn sources(target: IpAddr, k: u8) -> Vec<Option<IpAddr>> {
    match target {
        IpAddr::V4(_) => (0..k)
            .map(|i| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i))))
            .collect(),
        IpAddr::V6(_) => vec![None],
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Checks that a database URL names a loopback host (`sqlite://` paths are local anyway).
pub fn loopback_database(raw: &str) -> Result<(), String> {
    if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
        return Ok(());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("database URL: {e}"))?;
    let host = url.host_str().unwrap_or("localhost");
    let ip = if host.eq_ignore_ascii_case("localhost") {
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    } else {
        host.trim_matches(['[', ']']).parse::<IpAddr>().ok()
    };
    match ip {
        Some(ip) if ip.is_loopback() => Ok(()),
        _ => Err(format!(
            "database host {host:?} is not a loopback address; this tool only sends traffic to 127.0.0.0/8 or ::1"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_databases() {
        assert!(loopback_database("postgres://postgres@127.0.0.1:5432/postgres").is_ok());
        assert!(loopback_database("postgresql://u:p@localhost/db").is_ok());
        assert!(loopback_database("postgres://u@[::1]:5432/db").is_ok());
        assert!(loopback_database("sqlite:///tmp/x.db").is_ok());
        assert!(loopback_database("postgres://u@db.example.org/db").is_err());
        assert!(loopback_database("postgres://u@10.0.0.5/db").is_err());
    }

    #[test]
    fn only_loopback_targets() {
        assert_eq!(
            loopback_target("http://127.0.0.1:8080").unwrap().0,
            "http://127.0.0.1:8080"
        );
        assert_eq!(loopback_target("http://127.9.9.9:81/").unwrap().1, "ws://127.9.9.9:81");
        assert_eq!(
            loopback_target("http://localhost:8080").unwrap().0,
            "http://127.0.0.1:8080"
        );
        assert_eq!(loopback_target("http://[::1]:8080").unwrap().1, "ws://[::1]:8080");
        for bad in [
            "http://10.0.0.1:8080",
            "http://192.168.1.2:80",
            "http://8.8.8.8:80",
            "http://example.org:80",
            "http://[::2]:80",
            "https://127.0.0.1:443",
            "http://0.0.0.0:8080",
        ] {
            assert!(loopback_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_are_loopback() {
        let s = sources(IpAddr::V4(Ipv4Addr::LOCALHOST), 250);
        assert_eq!(s.len(), 250);
        assert!(s.iter().all(|a| a.unwrap().is_loopback()));
        assert_eq!(s[0], Some("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn reads_own_process() {
        let r = read_proc(std::process::id()).unwrap();
        assert!(r.rss_kb > 0);
        assert!(listen_overflows().is_some());
    }
}
