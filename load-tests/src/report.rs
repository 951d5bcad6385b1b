//! The report: one JSON document per run, a console summary, ratios to the echo floor and the
//! issue's targets (measured and reported, never asserted).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cli::RunArgs;
use crate::fleet::{ConnectReport, StormReport};
use crate::metrics::{ErrorCount, Latency};
use crate::offline::OfflineReport;
use crate::provision::ProvisionReport;
use crate::sys::{FileLimit, Sample};
use crate::traffic::{ParcelReport, TrafficReport};

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: String,
    pub started_at: String,
    pub machine: Machine,
    pub config: RunArgs,
    pub max_in_flight: usize,
    pub lockerhub: TargetReport,
    pub baseline: Option<TargetReport>,
    /// lockerhub divided by the echo floor (latency: > 1 is slower; rates: < 1 is slower).
    pub ratios: Option<Ratios>,
    pub targets: Vec<TargetCheck>,
    pub checks: Checks,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub nofile: FileLimit,
    pub ephemeral_ports: String,
    pub somaxconn: String,
    pub kernel: String,
    pub loadavg_start: f64,
    pub loadavg_end: f64,
}

impl Machine {
    pub fn read(nofile: FileLimit) -> Machine {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        Machine {
            cores: crate::sys::cores(),
            nofile,
            ephemeral_ports: read("/proc/sys/net/ipv4/ip_local_port_range"),
            somaxconn: read("/proc/sys/net/core/somaxconn"),
            kernel: read("/proc/sys/kernel/osrelease"),
            loadavg_start: crate::sys::loadavg(),
            loadavg_end: 0.0,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct TargetReport {
    pub name: String,
    pub server_pid: Option<u32>,
    pub provisioning: Option<ProvisionReport>,
    pub connect: ConnectReport,
    pub traffic: Option<TrafficReport>,
    pub storm: Option<StormReport>,
    /// The crash test (`--kill-after`).
    pub kill: Option<KillReport>,
    /// Disconnect/reconnect waves (`--waves`).
    pub waves: Option<WavesReport>,
    /// Lockers offline with a QR pickup each, then back and replayed (`--offline`).
    pub offline: Option<OfflineReport>,
    pub parcels: Option<ParcelReport>,
    pub latency: BTreeMap<String, Latency>,
    pub errors: ErrorsReport,
    pub server: Option<ProcessStats>,
    /// This tool's own process (it shares the machine's cores with the server).
    pub client: Option<ClientStats>,
    pub phases: Vec<Phase>,
    /// Completions per second since this target's start, per operation.
    pub timeline: BTreeMap<String, Vec<u64>>,
    pub samples: Vec<Sample>,
}

/// Every locker disconnecting and reconnecting, wave after wave.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WavesReport {
    /// The server's RSS after each wave (all lockers back), in MB.
    pub rss_mb: Vec<f64>,
    /// Lockers back after each wave.
    pub back: Vec<usize>,
    /// RSS after the last wave against after the first, in percent.
    pub growth_pct: f64,
}

/// The server killed with SIGKILL during the traffic and started again on its database.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KillReport {
    /// Seconds into the traffic when it was killed.
    pub after_secs: f64,
    /// Seconds from the kill to the new process answering `/readyz`.
    pub restart_secs: f64,
    /// Seconds from ready to every locker reconnected and booted.
    pub recover_secs: f64,
    pub lockers_back: usize,
    pub lockers: usize,
    /// Lockers whose boot reported discrepancies (deposits the kill interrupted, decided at boot).
    pub boot_discrepancies: usize,
    /// The new process's id.
    pub new_pid: Option<u32>,
    /// Set if the kill or restart itself failed.
    pub failed: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct ErrorsReport {
    pub total: u64,
    pub protocol: u64,
    pub by_class: BTreeMap<String, u64>,
    pub list: Vec<ErrorCount>,
    pub first_messages: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub secs: f64,
    /// CPU seconds the server used in the phase, and as a share of one core.
    pub server_cpu_secs: Option<f64>,
    pub server_cpu_pct: Option<f64>,
    pub server_rss_mb_end: Option<f64>,
    /// Connections the kernel dropped from a full listen queue during the phase (machine-wide).
    pub listen_overflows: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct ClientStats {
    pub rss_start_mb: f64,
    pub rss_end_mb: f64,
    pub rss_peak_mb: f64,
    pub cpu_secs: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct ProcessStats {
    pub pid: u32,
    pub rss_start_mb: f64,
    pub rss_after_connect_mb: f64,
    pub rss_end_mb: f64,
    /// VmHWM: the peak resident set.
    pub rss_peak_mb: f64,
    /// (RSS after connect - RSS before) / sessions held.
    pub rss_per_session_kb: f64,
    pub cpu_secs: f64,
    pub open_fds_after_connect: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Ratios {
    pub connect_rate: Option<f64>,
    pub storm_secs: Option<f64>,
    pub rss_per_session: Option<f64>,
    pub server_cpu_secs_traffic: Option<f64>,
    pub p50: BTreeMap<String, f64>,
    pub p99: BTreeMap<String, f64>,
    pub p999: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    /// None when this run could not measure it.
    pub met: Option<bool>,
}

#[derive(Debug, Default, Serialize)]
pub struct Checks {
    /// Checks that held.
    pub held: usize,
    pub protocol_errors: u64,
    pub lost_parcels: Option<usize>,
    pub errors: u64,
    pub passed: bool,
    pub failures: Vec<String>,
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

impl Ratios {
    pub fn of(lh: &TargetReport, echo: &TargetReport) -> Ratios {
        let mut r = Ratios {
            connect_rate: ratio(lh.connect.rate_per_sec, echo.connect.rate_per_sec),
            ..Ratios::default()
        };
        if let (Some(a), Some(b)) = (&lh.storm, &echo.storm) {
            r.storm_secs = ratio(a.secs, b.secs);
        }
        if let (Some(a), Some(b)) = (&lh.server, &echo.server) {
            r.rss_per_session = ratio(a.rss_per_session_kb, b.rss_per_session_kb);
        }
        let traffic_cpu = |t: &TargetReport| {
            t.phases
                .iter()
                .find(|p| p.name == "traffic")
                .and_then(|p| p.server_cpu_secs)
        };
        if let (Some(a), Some(b)) = (traffic_cpu(lh), traffic_cpu(echo)) {
            r.server_cpu_secs_traffic = ratio(a, b);
        }
        for (op, l) in &lh.latency {
            if let Some(e) = echo.latency.get(op) {
                if let Some(x) = ratio(l.p50_ms, e.p50_ms) {
                    r.p50.insert(op.clone(), x);
                }
                if let Some(x) = ratio(l.p99_ms, e.p99_ms) {
                    r.p99.insert(op.clone(), x);
                }
                if let Some(x) = ratio(l.p999_ms, e.p999_ms) {
                    r.p999.insert(op.clone(), x);
                }
            }
        }
        r
    }
}

/// Whether the run was as large as the targets (50,000 lockers); smaller runs extrapolate.
fn at_scale(lh: &TargetReport) -> bool {
    lh.connect.attempted >= 50_000
}

/// The targets, against what this run measured. `met` is None when the run was too
/// small (or too slow a rate) to tell.
pub fn targets(lh: &TargetReport) -> Vec<TargetCheck> {
    const FLEET: usize = 50_000;
    let mut out = Vec::new();
    let held = lh.connect.held;
    match &lh.server {
        Some(s) => {
            let at_50k = s.rss_start_mb + s.rss_per_session_kb * FLEET as f64 / 1024.0;
            out.push(TargetCheck {
                target: "50,000 connected lockers on one 2-core node, server RSS under 1 GB".into(),
                measured: format!(
                    "{held} lockers held; server RSS {:.0} MB after connect, peak {:.0} MB; {:.1} KB per session \
                     (50,000 sessions would be about {at_50k:.0} MB)",
                    s.rss_after_connect_mb, s.rss_peak_mb, s.rss_per_session_kb
                ),
                met: at_scale(lh).then_some(held >= FLEET && s.rss_peak_mb < 1024.0),
            });
        }
        None => out.push(TargetCheck {
            target: "50,000 connected lockers on one 2-core node, server RSS under 1 GB".into(),
            measured: format!("{held} lockers held; server RSS not measured (no --server-pid)"),
            met: None,
        }),
    }
    if let (Some(t), Some(l)) = (&lh.traffic, lh.latency.get("start_deposit")) {
        let at_rate = t.target_rate >= 1000.0 && t.deposits_per_sec >= 980.0;
        out.push(TargetCheck {
            target: "deposit request to open command p99 under 25 ms at 1,000 deposits/s".into(),
            measured: format!(
                "p99 {:.1} ms (p50 {:.1}, p99.9 {:.1}) at {:.0} deposits/s achieved of {:.0} targeted",
                l.p99_ms, l.p50_ms, l.p999_ms, t.deposits_per_sec, t.target_rate
            ),
            met: at_rate
                .then_some(l.p99_ms < 25.0)
                .or(if t.target_rate >= 1000.0 { Some(false) } else { None }),
        });
    }
    if let Some(s) = &lh.storm {
        out.push(TargetCheck {
            target: "50,000 lockers reconnected within 30 s".into(),
            measured: format!(
                "{} of {} reconnected and booted in {:.1} s ({:.0}/s; 50,000 at that rate: {:.0} s)",
                s.reconnected,
                s.lockers,
                s.secs,
                s.rate_per_sec,
                FLEET as f64 / s.rate_per_sec.max(1e-9)
            ),
            met: at_scale(lh).then_some(s.reconnected >= FLEET && s.failed == 0 && s.secs <= 30.0),
        });
    }
    out
}

pub fn errors_report(m: &crate::metrics::Metrics) -> ErrorsReport {
    let list = m.errors();
    let mut by_class = BTreeMap::new();
    for e in &list {
        let k = serde_json::to_value(e.class)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        *by_class.entry(k).or_insert(0) += e.count;
    }
    ErrorsReport {
        total: m.error_total(),
        protocol: m.protocol_errors(),
        by_class,
        list,
        first_messages: m.messages(),
    }
}

fn f(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The console summary.
pub fn print(r: &Report) {
    let lh = &r.lockerhub;
    let echo = r.baseline.as_ref();
    println!();
    println!(
        "lockerhub-load: {} lockers, {} deposits/s for {} s, mix {}{}",
        r.config.lockers,
        r.config.rate,
        r.config.duration,
        r.config.mix,
        if r.config.storm { ", reconnect storm" } else { "" }
    );
    println!(
        "machine: {} cores, open files {} (hard {}), load average {:.2} -> {:.2}",
        r.machine.cores, r.machine.nofile.soft, r.machine.nofile.hard, r.machine.loadavg_start, r.machine.loadavg_end
    );
    if let Some(p) = &lh.provisioning {
        println!(
            "provisioning: {} lockers in {:.1} s ({:.0}/s), {} sites, {} carriers; total {:.1} s",
            p.lockers, p.lockers_secs, p.lockers_per_sec, p.sites, p.carriers, p.secs
        );
    }
    let line = |name: &str, t: &TargetReport| {
        let overflows = |phase: &str| {
            t.phases
                .iter()
                .find(|p| p.name == phase)
                .and_then(|p| p.listen_overflows)
                .filter(|n| *n > 0)
                .map(|n| format!(" ({n} listen-queue overflows)"))
                .unwrap_or_default()
        };
        let c = &t.connect;
        println!(
            "{name:>10} connect: {} of {} held{} in {:.1} s = {:.0}/s{}",
            c.held,
            c.attempted,
            c.held_server_side
                .map(|s| format!(" ({s} per the server)"))
                .unwrap_or_default(),
            c.secs,
            c.rate_per_sec,
            overflows("connect")
        );
        if let Some(tr) = &t.traffic {
            println!(
                "{name:>10} traffic: {:.0} deposits/s, {:.0} pickups/s, {:.0} calls/s over {:.1} s; shed {}, no free locker {}, abandoned {}",
                tr.deposits_per_sec,
                tr.pickups_per_sec,
                tr.calls_per_sec,
                tr.secs,
                tr.shed,
                tr.no_free_locker,
                tr.abandoned
            );
        }
        if let Some(s) = &t.storm {
            println!(
                "{name:>10} storm: dropped in {:.1} s; {} of {} back in {:.1} s = {:.0}/s{}",
                s.drop_secs,
                s.reconnected,
                s.lockers,
                s.secs,
                s.rate_per_sec,
                overflows("storm")
            );
        }
        if let Some(w) = &t.waves {
            let list: Vec<String> = w.rss_mb.iter().map(|m| format!("{m:.0}")).collect();
            println!(
                "{name:>10} waves: {} waves, RSS after each {} MB ({:+.1} % first to last); back {:?}",
                w.rss_mb.len(),
                list.join(" "),
                w.growth_pct,
                w.back
            );
        }
        if let Some(k) = &t.kill {
            println!(
                "{name:>10} kill: after {:.1} s of traffic; ready again in {:.1} s; {} of {} lockers back in {:.1} s ({} boots with discrepancies){}",
                k.after_secs,
                k.restart_secs,
                k.lockers_back,
                k.lockers,
                k.recover_secs,
                k.boot_discrepancies,
                k.failed.as_deref().map(|e| format!("; FAILED: {e}")).unwrap_or_default()
            );
        }
        if let Some(o) = &t.offline {
            let ms = |v: Option<f64>| v.map(f).unwrap_or_else(|| "-".into());
            println!(
                "{name:>10} offline: {} lockers as 1.1 of {}, {} deposited, {} QR tokens, {} picked up offline in {:.1} s; \
                 {} replayed in {:.2} s = {:.0}/s (per locker p50 {} ms, p99 {} ms), outcomes {:?}; {} verified picked_up",
                o.booted_1_1,
                o.lockers,
                o.deposited,
                o.qr_tokens,
                o.picked_up_offline,
                o.offline_secs,
                o.replayed,
                o.replay_secs,
                o.replay_rate_per_sec,
                ms(o.replay_p50_ms),
                ms(o.replay_p99_ms),
                o.outcomes,
                o.verified
            );
        }
        if let Some(p) = &t.parcels {
            println!(
                "{name:>10} parcels: {} deposited, {} picked up, {} pickups unconfirmed, {} lost, {} compartments held by two parcels",
                p.deposited, p.picked_up, p.pickups_unconfirmed, p.lost, p.double_held
            );
        }
        if let Some(s) = &t.server {
            println!(
                "{name:>10} server: RSS {:.0} MB -> {:.0} MB after connect ({:.1} KB/session), peak {:.0} MB; CPU {:.1} s",
                s.rss_start_mb, s.rss_after_connect_mb, s.rss_per_session_kb, s.rss_peak_mb, s.cpu_secs
            );
        }
        println!(
            "{name:>10} errors: {} ({} protocol){}",
            t.errors.total,
            t.errors.protocol,
            if t.errors.by_class.is_empty() {
                String::new()
            } else {
                format!(" {:?}", t.errors.by_class)
            }
        );
    };
    line("lockerhub", lh);
    if let Some(e) = echo {
        line("echo", e);
    }
    println!();
    println!(
        "{:<14}{:>8}{:>9}{:>9}{:>9}{:>9}{}",
        "latency (ms)",
        "count",
        "p50",
        "p90",
        "p99",
        "p99.9",
        if echo.is_some() {
            format!("{:>11}{:>10}", "echo p99", "x echo")
        } else {
            String::new()
        }
    );
    for (op, l) in &lh.latency {
        let echo_cols = match echo.and_then(|e| e.latency.get(op)) {
            Some(e) => format!("{:>11}{:>10}", f(e.p99_ms), f(l.p99_ms / e.p99_ms.max(1e-9))),
            None if echo.is_some() => format!("{:>11}{:>10}", "-", "-"),
            None => String::new(),
        };
        println!(
            "{op:<14}{:>8}{:>9}{:>9}{:>9}{:>9}{echo_cols}",
            l.count,
            f(l.p50_ms),
            f(l.p90_ms),
            f(l.p99_ms),
            f(l.p999_ms)
        );
    }
    if let Some(p) = &lh.parcels {
        println!();
        println!(
            "parcels: {} deposited, {} picked up, {} lost (checked in {:.1} s)",
            p.deposited, p.picked_up, p.lost, p.secs
        );
    }
    println!();
    for t in r.targets.iter().filter(|_| !r.config.smoke) {
        let mark = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not at this scale",
        };
        println!("target [{mark}] {}: {}", t.target, t.measured);
    }
    for m in lh.errors.first_messages.iter().take(5) {
        println!("first errors: {m}");
    }
}

/// The verdict: zero protocol errors and zero lost parcels, and for the smoke run nothing
/// else amiss either. Each check is named; `passed` counts those that held.
pub fn checks(r: &Report, smoke: bool, pickups_expected: bool) -> Checks {
    let lh = &r.lockerhub;
    let mut list: Vec<(String, bool)> = Vec::new();
    let lost = lh.parcels.as_ref().map(|p| p.lost);
    list.push((
        format!("{} protocol errors", lh.errors.protocol),
        lh.errors.protocol == 0,
    ));
    list.push((
        match lost {
            Some(n) => format!("{n} lost parcels"),
            None => "parcels not verified".into(),
        },
        lost == Some(0),
    ));
    if let Some(p) = &lh.parcels {
        list.push((
            format!("{} compartments held by two parcels", p.double_held),
            p.double_held == 0,
        ));
    }
    if let Some(k) = &lh.kill {
        list.push((
            format!("{} of {} lockers back after the kill", k.lockers_back, k.lockers),
            k.failed.is_none() && k.lockers_back == k.lockers,
        ));
    }
    if let Some(o) = &lh.offline {
        list.push((
            format!(
                "{} of {} offline pickups replayed and verified picked_up",
                o.verified, o.lockers
            ),
            o.lockers > 0 && o.verified == o.lockers && o.replayed == o.lockers,
        ));
    }
    if smoke {
        let outage = lh.errors.by_class.get("outage").copied().unwrap_or(0);
        let other = lh.errors.total - lh.errors.protocol - outage;
        list.push((format!("{other} other errors"), other == 0));
        list.push((
            format!("{} of {} lockers connected", lh.connect.held, lh.connect.attempted),
            lh.connect.held == lh.connect.attempted,
        ));
        let t = lh.traffic.as_ref();
        let deposits = t.map(|t| t.deposits).unwrap_or(0);
        list.push((format!("{deposits} deposits"), deposits > 0));
        if pickups_expected {
            let pickups = t.map(|t| t.pickups).unwrap_or(0);
            list.push((format!("{pickups} pickups"), pickups > 0));
        }
        if let Some(s) = &lh.storm {
            list.push((
                format!("{} of {} lockers back after the storm", s.reconnected, s.lockers),
                s.failed == 0 && s.reconnected == s.lockers,
            ));
        }
    }
    let failures: Vec<String> = list.iter().filter(|(_, ok)| !ok).map(|(n, _)| n.clone()).collect();
    Checks {
        protocol_errors: lh.errors.protocol,
        lost_parcels: lost,
        errors: lh.errors.total,
        passed: failures.is_empty(),
        held: list.len() - failures.len(),
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::ParcelReport;
    use clap::Parser;

    fn report(parcels: ParcelReport, errors: ErrorsReport, kill: Option<KillReport>) -> Report {
        let config = crate::cli::Cli::parse_from(["lockerhub-load"]).run;
        Report {
            tool: String::new(),
            started_at: String::new(),
            machine: Machine::read(crate::sys::raise_nofile()),
            max_in_flight: 1,
            config,
            lockerhub: TargetReport {
                parcels: Some(parcels),
                errors,
                kill,
                ..TargetReport::default()
            },
            baseline: None,
            ratios: None,
            targets: Vec::new(),
            checks: Checks::default(),
        }
    }

    #[test]
    fn a_compartment_held_twice_or_a_locker_not_back_fails_the_run() {
        let ok = report(ParcelReport::default(), ErrorsReport::default(), None);
        assert!(checks(&ok, false, false).passed);
        let twice = ParcelReport {
            double_held: 1,
            ..ParcelReport::default()
        };
        let c = checks(&report(twice, ErrorsReport::default(), None), false, false);
        assert!(!c.passed);
        assert!(
            c.failures.iter().any(|f| f.contains("held by two parcels")),
            "{:?}",
            c.failures
        );
        let not_back = KillReport {
            lockers: 10,
            lockers_back: 9,
            ..KillReport::default()
        };
        let c = checks(
            &report(ParcelReport::default(), ErrorsReport::default(), Some(not_back)),
            false,
            false,
        );
        assert!(
            c.failures.iter().any(|f| f.contains("back after the kill")),
            "{:?}",
            c.failures
        );
    }

    #[test]
    fn an_offline_pickup_not_verified_fails_the_run() {
        let with = |verified: usize| {
            let mut r = report(ParcelReport::default(), ErrorsReport::default(), None);
            r.lockerhub.offline = Some(OfflineReport {
                lockers: 5,
                replayed: 5,
                verified,
                ..OfflineReport::default()
            });
            checks(&r, false, false)
        };
        assert!(with(5).passed, "{:?}", with(5).failures);
        let c = with(4);
        assert!(!c.passed);
        assert!(
            c.failures.iter().any(|f| f.starts_with("4 of 5 offline pickups")),
            "{:?}",
            c.failures
        );
    }

    #[test]
    fn outage_failures_are_not_the_smoke_runs_other_errors() {
        let errors = |outage: u64, other: u64| ErrorsReport {
            total: outage + other,
            by_class: [("outage".to_string(), outage), ("http".to_string(), other)].into(),
            ..ErrorsReport::default()
        };
        let c = checks(&report(ParcelReport::default(), errors(7, 0), None), true, false);
        assert!(
            c.failures.iter().all(|f| !f.contains("other errors")),
            "{:?}",
            c.failures
        );
        let c = checks(&report(ParcelReport::default(), errors(7, 1), None), true, false);
        assert!(c.failures.iter().any(|f| f == "1 other errors"), "{:?}", c.failures);
    }
}
