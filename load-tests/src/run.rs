//! One run: (optionally) the echo floor, then lockerhub, each through the same phases:
//! provision, connect the fleet, carrier traffic, reconnect storm, verification; lockerhub
//! also through the offline phase (`--offline`) before the verification.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lockerhub::domain::Size;
use rand::Rng;

use crate::cli::RunArgs;
use crate::fleet::{Fleet, Slot, Target};
use crate::http::Api;
use crate::metrics::{ErrorClass, Metrics};
use crate::offline::{self, OfflineReport};
use crate::outbox::Codes;
use crate::progress::say;
use crate::provision::{self, Plan};
use crate::report::{self, ClientStats, KillReport, Machine, Phase, ProcessStats, Ratios, Report, TargetReport};
use crate::server::{self, ChildServer};
use crate::sys::{self, read_proc, Sampler};
use crate::traffic::{self, Ctx};

/// File descriptors this process needs besides one per session.
const FD_MARGIN: u64 = 512;
/// How long in-flight operations may run on after the traffic window.
const DRAIN: Duration = Duration::from_secs(40);

/// Times a phase and the server's CPU in it.
struct Clock {
    pid: Option<u32>,
    started: Instant,
    cpu: Option<f64>,
    overflows: Option<u64>,
}

impl Clock {
    fn start(pid: Option<u32>) -> Clock {
        Clock {
            pid,
            started: Instant::now(),
            cpu: pid.and_then(read_proc).map(|r| r.cpu_secs),
            overflows: sys::listen_overflows(),
        }
    }

    fn end(self, name: &str) -> Phase {
        let secs = self.started.elapsed().as_secs_f64();
        let now = self.pid.and_then(read_proc);
        let cpu = match (self.cpu, now) {
            (Some(a), Some(b)) => Some(b.cpu_secs - a),
            _ => None,
        };
        Phase {
            name: name.into(),
            secs,
            server_cpu_secs: cpu,
            server_cpu_pct: cpu.map(|c| 100.0 * c / secs.max(1e-9)),
            server_rss_mb_end: now.map(|r| r.rss_kb as f64 / 1024.0),
            listen_overflows: match (self.overflows, sys::listen_overflows()) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
        }
    }
}

fn within(args: &RunArgs, deadline: Instant) -> Duration {
    Duration::from_secs(args.phase_timeout).min(deadline.saturating_duration_since(Instant::now()))
}

fn run_tag() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..6)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let args = args.resolved();
    args.validate().map_err(anyhow::Error::msg)?;
    let epoch = Instant::now();
    let deadline = epoch + Duration::from_secs(args.time_limit);
    let nofile = sys::raise_nofile();
    let needed = (args.lockers + args.http_connections) as u64 + FD_MARGIN;
    if needed > nofile.soft {
        bail!(
            "--lockers {} needs about {needed} open files in this process and as many in the server, but \
             RLIMIT_NOFILE is {} (hard limit {}; `ulimit -Hn`). Raise the hard limit (as root: `ulimit -Hn 1048576` \
             in the launching shell, or LimitNOFILE= for a service), or run fewer lockers.",
            args.lockers,
            nofile.soft,
            nofile.hard
        );
    }
    let started_at = chrono::Utc::now();
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| format!("run-{}", started_at.format("%Y%m%d-%H%M%S")));
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut machine = Machine::read(nofile);
    let tag = run_tag();

    let baseline = if args.baseline {
        say("echo floor: starting");
        Some(run_target(&args, Target::Echo, epoch, deadline, &tag).await?)
    } else {
        None
    };
    say("lockerhub: starting");
    let lockerhub = run_target(&args, Target::Lockerhub, epoch, deadline, &tag).await?;
    machine.loadavg_end = sys::loadavg();

    let ratios = baseline.as_ref().map(|b| Ratios::of(&lockerhub, b));
    let mut report = Report {
        tool: format!("lockerhub-load {}", env!("CARGO_PKG_VERSION")),
        started_at: started_at.to_rfc3339(),
        machine,
        max_in_flight: args.max_in_flight(),
        config: args.clone(),
        targets: report::targets(&lockerhub),
        lockerhub,
        baseline,
        ratios,
        checks: Default::default(),
    };
    let pickups_expected = args.mix.pickup > 0.0 && (args.server_url.is_none() || args.server_db.is_some());
    report.checks = report::checks(&report, args.smoke, pickups_expected);

    let json_path: PathBuf = args.out.join(format!("{label}.json"));
    let svg_path: PathBuf = args.out.join(format!("{label}.svg"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    if let Err(e) = crate::chart::write(&report, &svg_path) {
        say(format!("warning: chart not written: {e}"));
    }
    report::print(&report);
    println!();
    println!("report: {}  chart: {}", json_path.display(), svg_path.display());

    let c = &report.checks;
    if args.smoke {
        let t = report.lockerhub.traffic.as_ref();
        println!(
            "smoke: {} deposits, {} pickups, {} protocol errors, {} lost parcels",
            t.map(|t| t.deposits).unwrap_or(0),
            t.map(|t| t.pickups).unwrap_or(0),
            c.protocol_errors,
            c.lost_parcels
                .map(|n| n.to_string())
                .unwrap_or_else(|| "unverified".into())
        );
        if !c.passed {
            println!("smoke: FAILED: {}", c.failures.join("; "));
        }
        // The plain closing line CI reads.
        println!("smoke: {} passed, {} failed", c.held, c.failures.len());
        if !c.passed {
            return Ok(ExitCode::FAILURE);
        }
    } else if !c.passed {
        println!("checks: {}", c.failures.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the fleet goes and what can be measured there.
struct Endpoint {
    child: Option<ChildServer>,
    api: Api,
    ws_base: String,
    host: std::net::IpAddr,
    /// The server's database URL, for pickup codes.
    db: Option<String>,
    pid: Option<u32>,
}

async fn endpoint(args: &RunArgs, target: Target) -> anyhow::Result<Endpoint> {
    let loopback = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    match (target, &args.server_url) {
        (Target::Echo, _) => {
            let c = ChildServer::echo().await?;
            Ok(Endpoint {
                api: Api::new(&c.base, "", args.http_connections)?,
                ws_base: c.ws_base.clone(),
                host: loopback,
                db: None,
                pid: Some(c.pid),
                child: Some(c),
            })
        }
        (Target::Lockerhub, Some(url)) => {
            let (base, ws_base, host) = sys::loopback_target(url).map_err(anyhow::Error::msg)?;
            let api = Api::new(
                &base,
                args.admin_key.as_deref().unwrap_or_default(),
                args.http_connections,
            )?;
            api.wait_healthy(Duration::from_secs(10)).await?;
            if let Some(db) = &args.server_db {
                sys::loopback_database(db).map_err(anyhow::Error::msg)?;
            }
            Ok(Endpoint {
                child: None,
                api,
                ws_base,
                host,
                db: args.server_db.clone(),
                pid: args.server_pid,
            })
        }
        (Target::Lockerhub, None) => {
            let bin = server::lockerhub_bin(args.server_bin.as_deref())?;
            let (c, key) = ChildServer::lockerhub(&bin, args.database_url.as_deref()).await?;
            Ok(Endpoint {
                api: Api::new(&c.base, &key, args.http_connections)?,
                ws_base: c.ws_base.clone(),
                host: loopback,
                db: c.db_url.clone(),
                pid: Some(c.pid),
                child: Some(c),
            })
        }
    }
}

/// The crash test: `after` into the traffic, SIGKILL the server, start it again on the same
/// database, and bring every locker back, while the traffic goes on. Failures from the kill
/// until the last locker is back are counted as `outage`.
async fn kill_during(
    child: &mut ChildServer,
    fleet: &Fleet,
    metrics: &Metrics,
    args: &RunArgs,
    after: Duration,
    within: Duration,
) -> KillReport {
    tokio::time::sleep(after).await;
    let mut k = KillReport {
        after_secs: after.as_secs_f64(),
        lockers: fleet.slots.len(),
        ..KillReport::default()
    };
    say("lockerhub: SIGKILL during the traffic; restarting on the same database");
    metrics.set_outage(true);
    match child.kill_and_restart().await {
        Ok(secs) => {
            k.restart_secs = secs;
            k.new_pid = Some(child.pid);
            let (back, discrepancies, secs) = fleet.recover(metrics, args.connect_concurrency, within).await;
            k.lockers_back = back;
            k.boot_discrepancies = discrepancies;
            k.recover_secs = secs;
        }
        Err(e) => k.failed = Some(format!("{e:#}")),
    }
    metrics.set_outage(false);
    k
}

/// The offline phase (`--offline`): `n` lockers offline with a pickup each, then all back
/// and replayed, then verified through the admin API. Times `offline` and `replay` as phases.
async fn offline_phase(
    args: &RunArgs,
    ctx: &Ctx,
    phases: &mut Vec<Phase>,
    pid: Option<u32>,
    n: usize,
    deadline: Instant,
) -> OfflineReport {
    let Some(codes) = &ctx.codes else {
        let message = "no outbox reader: the QR tokens cannot be read";
        ctx.metrics
            .error("offline", ErrorClass::Other, "no outbox reader", message);
        return OfflineReport {
            lockers: n,
            ..OfflineReport::default()
        };
    };
    codes.keep_qr_tokens();
    say(format!("lockerhub: offline phase, {n} lockers (protocol 1.1)"));
    let clock = Clock::start(pid);
    let (mut report, cut) = offline::take_offline(ctx, n, args.connect_concurrency, within(args, deadline)).await;
    phases.push(clock.end("offline"));
    let clock = Clock::start(pid);
    let picked = offline::come_back(ctx, cut, &mut report, args.connect_concurrency, within(args, deadline)).await;
    phases.push(clock.end("replay"));
    offline::verify(ctx, &picked, &mut report, within(args, deadline)).await;
    report
}

/// Lockers among `ids` that the server lists as connected (bounded paging).
async fn connected_server_side(api: &Api, ids: &HashSet<&str>, within: Duration) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + within;
    let items = api
        .all_pages("/api/v1/lockers", ids.len() / 200 + 1000, deadline)
        .await?;
    Ok(items
        .iter()
        .filter(|l| l["connected"] == true && l["id"].as_str().is_some_and(|id| ids.contains(id)))
        .count())
}

async fn run_target(
    args: &RunArgs,
    target: Target,
    epoch: Instant,
    deadline: Instant,
    tag: &str,
) -> anyhow::Result<TargetReport> {
    let name = match target {
        Target::Lockerhub => "lockerhub",
        Target::Echo => "echo",
    };
    let metrics = Arc::new(Metrics::new(Instant::now()));
    let mut rep = TargetReport {
        name: name.into(),
        ..TargetReport::default()
    };
    let mut ep = endpoint(args, target).await?;
    rep.server_pid = ep.pid;
    if let Some(pid) = ep.pid {
        say(format!("{name}: server pid {pid}, {}", ep.api.base));
    }
    let sampler = ep.pid.map(|p| Sampler::start(p, epoch, deadline));
    let proc_start = ep.pid.and_then(read_proc);
    let client_start = read_proc(std::process::id());

    // The carriers' webhook receiver, before the carriers exist.
    let hooks = match target {
        Target::Lockerhub if args.webhooks => Some(crate::hooks::Hooks::start(metrics.clone()).await?),
        _ => None,
    };

    // Provisioning.
    let clock = Clock::start(ep.pid);
    let world = match target {
        Target::Lockerhub => {
            let plan = Plan {
                webhook_url: hooks.as_ref().map(|h| h.url.clone()),
                lockers: args.lockers,
                lockers_per_site: args.lockers_per_site,
                carriers: args.carriers,
                compartments: args.compartments,
                concurrency: args.provision_concurrency,
                tag: tag.to_string(),
            };
            say(format!("{name}: provisioning {} lockers", args.lockers));
            let (w, p) = provision::provision(&ep.api, &plan, within(args, deadline)).await?;
            rep.provisioning = Some(p);
            w
        }
        Target::Echo => provision::echo_world(args.lockers, args.lockers_per_site, args.carriers),
    };
    rep.phases.push(clock.end("provision"));

    // The fleet.
    let sources = sys::sources(ep.host, args.sources);
    let fleet = Arc::new(Fleet {
        target,
        ws_base: ep.ws_base.clone(),
        layout: (1..=args.compartments as i32).map(|n| (n, Size::S)).collect(),
        slots: world
            .lockers
            .iter()
            .enumerate()
            .map(|(i, l)| Slot {
                id: l.id.clone(),
                credential: l.credential.clone(),
                site: l.site,
                source: sources[i % sources.len()],
                capacity: args.compartments as usize,
                state: Default::default(),
            })
            .collect(),
    });
    let rss_before_connect = ep.pid.and_then(read_proc);
    say(format!(
        "{name}: connecting {} lockers from {} source addresses",
        args.lockers,
        sources.len()
    ));
    let clock = Clock::start(ep.pid);
    rep.connect = fleet
        .connect_all(&metrics, args.connect_concurrency, within(args, deadline))
        .await;
    rep.phases.push(clock.end("connect"));
    let rss_after_connect = ep.pid.and_then(read_proc);
    let fds_after_connect = ep.pid.map(sys::open_fds).unwrap_or(0);
    if target == Target::Lockerhub {
        let ids: HashSet<&str> = fleet.slots.iter().map(|s| s.id.as_str()).collect();
        match connected_server_side(&ep.api, &ids, within(args, deadline)).await {
            Ok(n) => rep.connect.held_server_side = Some(n),
            Err(e) => say(format!("warning: could not count connected lockers: {e:#}")),
        }
    }

    // Carrier traffic.
    let codes = match (target, &ep.db) {
        (Target::Lockerhub, Some(db)) => Some(Codes::start(db, deadline)),
        _ => None,
    };
    if target == Target::Lockerhub && codes.is_none() && args.mix.pickup > 0.0 {
        say("warning: no --server-db for this server: pickups are skipped");
    }
    let ctx = Arc::new(Ctx {
        target,
        fleet: fleet.clone(),
        metrics: metrics.clone(),
        api: ep.api.clone(),
        world,
        codes: codes.clone(),
        mix: args.mix,
        tag: tag.to_string(),
        seed: rand::random(),
        pickup_delay: Duration::from_millis(args.pickup_delay_ms),
        ledger: Default::default(),
    });
    let secs = match target {
        Target::Echo => args.baseline_duration.unwrap_or(args.duration),
        Target::Lockerhub => args.duration,
    };
    let room = deadline.saturating_duration_since(Instant::now());
    let duration = Duration::from_secs(secs).min(room.saturating_sub(DRAIN));
    if duration.is_zero() {
        bail!("no time left for traffic within --time-limit {} s", args.time_limit);
    }
    say(format!(
        "{name}: traffic at {} deposits/s for {} s",
        args.rate,
        duration.as_secs()
    ));
    let clock = Clock::start(ep.pid);
    let traffic = traffic::drive(ctx.clone(), args.rate, duration, args.max_in_flight(), DRAIN);
    rep.traffic = Some(match (args.kill_after, ep.child.as_mut()) {
        (Some(after), Some(child)) if target == Target::Lockerhub => {
            let phase = within(args, deadline);
            let kill = kill_during(child, &fleet, &metrics, args, Duration::from_secs(after), phase);
            let (t, k) = tokio::join!(traffic, kill);
            ep.pid = k.new_pid.or(ep.pid);
            rep.kill = Some(k);
            t
        }
        _ => traffic.await,
    });
    rep.phases.push(clock.end("traffic"));

    // The reconnect storm.
    if args.storm {
        say(format!("{name}: reconnect storm"));
        let clock = Clock::start(ep.pid);
        rep.storm = Some(
            fleet
                .storm(&metrics, args.connect_concurrency, within(args, deadline))
                .await,
        );
        rep.phases.push(clock.end("storm"));
    }

    // Disconnect/reconnect waves, RSS after each.
    if args.waves > 0 {
        say(format!("{name}: {} disconnect/reconnect waves", args.waves));
        let mut w = crate::report::WavesReport::default();
        for _ in 0..args.waves {
            fleet.drop_all(&metrics, "wave", within(args, deadline)).await;
            let (back, _) = fleet
                .reconnect_all(&metrics, "wave", args.connect_concurrency, within(args, deadline))
                .await;
            w.back.push(back);
            w.rss_mb.push(
                ep.pid
                    .and_then(read_proc)
                    .map(|r| r.rss_kb as f64 / 1024.0)
                    .unwrap_or(0.0),
            );
        }
        if let (Some(first), Some(last)) = (w.rss_mb.first(), w.rss_mb.last()) {
            w.growth_pct = 100.0 * (last - first) / first.max(1e-9);
        }
        rep.waves = Some(w);
    }

    // Lockers that keep working offline (protocol 1.1), and their journals replayed.
    let offline = args.offline_lockers();
    if target == Target::Lockerhub && offline > 0 {
        rep.offline = Some(offline_phase(args, &ctx, &mut rep.phases, ep.pid, offline, deadline).await);
    }

    // No lost parcels: the ledger against the server's records.
    if let Some(c) = &codes {
        c.stop();
        if let Some(e) = c.failed.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            metrics.error("code_wait", ErrorClass::Other, "outbox reader failed", e);
        }
    }
    if target == Target::Lockerhub {
        let clock = Clock::start(ep.pid);
        match traffic::verify(&ep.api, &ctx.ledger_snapshot(), within(args, deadline)).await {
            Ok(p) => rep.parcels = Some(p),
            Err(e) => metrics.error("verify", ErrorClass::Other, "verification failed", format!("{e:#}")),
        }
        rep.phases.push(clock.end("verify"));
    }

    // Figures.
    if let Some(s) = &sampler {
        rep.samples = s.stop();
    }
    if let (Some(pid), Some(start)) = (ep.pid, proc_start) {
        let end = read_proc(pid).unwrap_or_default();
        let before = rss_before_connect.unwrap_or(start);
        let after = rss_after_connect.unwrap_or(before);
        rep.server = Some(ProcessStats {
            pid,
            rss_start_mb: before.rss_kb as f64 / 1024.0,
            rss_after_connect_mb: after.rss_kb as f64 / 1024.0,
            rss_end_mb: end.rss_kb as f64 / 1024.0,
            rss_peak_mb: end.hwm_kb as f64 / 1024.0,
            rss_per_session_kb: (after.rss_kb.saturating_sub(before.rss_kb)) as f64 / rep.connect.held.max(1) as f64,
            cpu_secs: end.cpu_secs - start.cpu_secs,
            open_fds_after_connect: fds_after_connect,
        });
    }
    if let Some(start) = client_start {
        let end = read_proc(std::process::id()).unwrap_or_default();
        rep.client = Some(ClientStats {
            rss_start_mb: start.rss_kb as f64 / 1024.0,
            rss_end_mb: end.rss_kb as f64 / 1024.0,
            rss_peak_mb: end.hwm_kb as f64 / 1024.0,
            cpu_secs: end.cpu_secs - start.cpu_secs,
        });
    }
    if let Some(c) = &ep.child {
        let lines = c.log_lines();
        if lines > 0 {
            say(format!(
                "{name}: the server logged {lines} warning/error lines; last ones:\n{}",
                c.log_tail(5)
            ));
        }
    }
    rep.latency = metrics.latencies();
    rep.errors = report::errors_report(&metrics);
    rep.timeline = ["connect", "put_parcel", "take_parcel", "reconnect"]
        .iter()
        .map(|op| (op.to_string(), metrics.timeline(op)))
        .filter(|(_, v)| !v.is_empty())
        .collect::<BTreeMap<_, _>>();

    // Tear down: leave an external server as found; stop a child. Then wait (bounded) until
    // this process has let go of the sessions' sockets, so the next target has the fds.
    let fds_before = sys::open_fds(std::process::id()).saturating_sub(fleet.slots.len());
    match ep.child {
        Some(c) => c.stop().await,
        None => fleet.disconnect_all(Duration::from_secs(30)).await,
    }
    drop(ctx);
    drop(fleet);
    let until = Instant::now() + Duration::from_secs(15);
    while sys::open_fds(std::process::id()) > fds_before + 64 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(rep)
}
