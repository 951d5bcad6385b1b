//! Command line: one run (the default) and the hidden echo-server subcommand the run starts.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

/// Drives a simulated locker fleet and carrier traffic against a lockerhub server on loopback,
/// and (with --baseline) the same load against a bare actix-web WebSocket echo server.
#[derive(Parser, Debug)]
#[command(name = "lockerhub-load", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The bare WebSocket echo server (actix-web + actix-web-actors) used as the floor.
    /// Started by the run itself; listens on 127.0.0.1 only.
    #[command(hide = true)]
    EchoServer {
        #[arg(long)]
        port: u16,
        /// Worker threads (0: one per core, as lockerhub does).
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// Micro-benchmark: durable state changes per second through lockerhub's write path (the
    /// SQLite writer with group commit, or PostgreSQL's pool), beside one transaction per
    /// change through a pool of writers (the write path before the writer) in the same run.
    BenchWrites(BenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// State changes per measurement.
    #[arg(long, default_value_t = 20_000)]
    pub changes: usize,
    /// Callers submitting at once (locker actors and handlers, each waiting for its answer).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Also measure this PostgreSQL database (loopback only); a table `lh_bench_writes` is
    /// created and dropped in it.
    #[arg(long)]
    pub postgres_url: Option<String>,
    /// Seconds a measurement may take before it is cut short (and reported as such).
    #[arg(long, default_value_t = 120)]
    pub time_limit: u64,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct RunArgs {
    /// Simulated lockers, each a WebSocket session.
    #[arg(long, default_value_t = 1000)]
    pub lockers: usize,
    /// Target deposits per second (pickups come on top, see --mix).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of carrier traffic.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Traffic mix: `preadvised=F` is the share of deposits a carrier pre-advises with a signed
    /// callback (the rest are walk-up deposits by phone); `pickup=F` is the share of deposited
    /// parcels picked up during the run. `walkup=F` may be given instead of `preadvised`.
    #[arg(long, default_value = "preadvised=0.5,pickup=0.5")]
    pub mix: Mix,
    /// After the traffic, drop every locker's connection and reconnect them all.
    #[arg(long)]
    pub storm: bool,
    /// Source addresses for the lockers' connections: 127.0.0.2 .. 127.0.0.(K+1).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub sources: u8,
    /// Where the JSON report and the SVG chart go.
    #[arg(long, default_value = "load-tests/results")]
    pub out: PathBuf,
    /// Base name of the output files (default: smoke, or run-<UTC time>).
    #[arg(long)]
    pub label: Option<String>,
    /// CI preset: 200 lockers, 10 s at 20 deposits/s, a kill and restart 5 s into the traffic
    /// (--kill-after), a reconnect storm; exits non-zero on any protocol error, lost parcel,
    /// compartment held twice or other error.
    #[arg(long)]
    pub smoke: bool,
    /// Also run the same load against the bare echo server in this run and report ratios to it.
    #[arg(long)]
    pub baseline: bool,
    /// Seconds of echo-baseline traffic (default: the same as --duration).
    #[arg(long)]
    pub baseline_duration: Option<u64>,
    /// Target an already-running server (loopback only) instead of starting one.
    #[arg(long, requires = "admin_key")]
    pub server_url: Option<String>,
    /// Admin API key for --server-url.
    #[arg(long)]
    pub admin_key: Option<String>,
    /// Database of the --server-url server (`sqlite://PATH` or `postgres://…` on loopback),
    /// read for pickup codes (without it, no pickups).
    #[arg(long)]
    pub server_db: Option<String>,
    /// Start lockerhub on this PostgreSQL database (loopback only, and it must exist) instead
    /// of a fresh SQLite file. Each run provisions its own sites and lockers, so consecutive
    /// runs on one database add to it.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Process id of the --server-url server, for its RSS and CPU.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The lockerhub binary to start (default: `lockerhub` beside this binary).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Connections being opened at once (initial connect and storm).
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// HTTP connections to the server at most (admin API and carrier callbacks); requests
    /// beyond them wait for a free one. Each is a file descriptor on both sides.
    #[arg(long, default_value_t = crate::http::DEFAULT_CONNECTIONS)]
    pub http_connections: usize,
    /// Admin API requests in flight at once while provisioning.
    #[arg(long, default_value_t = 32)]
    pub provision_concurrency: usize,
    /// Compartments per locker (all size S).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub compartments: u32,
    /// Lockers per site (each site has one recipient).
    #[arg(long, default_value_t = 100)]
    pub lockers_per_site: usize,
    /// Give the carriers a webhook URL on a receiver this tool runs, and report `webhook`: the
    /// time from a deposit's commit (its `deposited_at`) to its webhook's arrival. Each
    /// carrier may then send 1,000 webhooks/s, 64 at a time (the API's most).
    #[arg(long)]
    pub webhooks: bool,
    /// Carriers posting pre-advice.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub carriers: u32,
    /// Most operations in flight at once; beyond it, scheduled operations are shed and counted
    /// (default: max(256, 4 x rate)).
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Delay between a deposit and its pickup, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub pickup_delay_ms: u64,
    /// After the traffic (and the storm), this many waves of every locker disconnecting and
    /// reconnecting, with the server's RSS after each: memory that does not come back shows
    /// as growth from wave to wave.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub waves: u32,
    /// After the traffic (and the storm and waves), this many lockers (at most --lockers) go
    /// through an offline phase (protocol 1.1, docs/protocol.md §15): each reconnects as a 1.1
    /// device, takes one deposit, loses its network, and lets the recipient in by the signed QR
    /// token from the notification; then all reconnect at once and replay their journals, and
    /// every such parcel must be `picked_up` on the server. 0: no offline phase. lockerhub only,
    /// and it needs the server's database (the QR tokens are read from its outbox). Each
    /// deposit at a 1.1 locker costs the server an Argon2id hash (about 33 ms of CPU), so keep
    /// it to a few hundred.
    #[arg(long, default_value_t = 0)]
    pub offline: usize,
    /// Crash test: this many seconds into the traffic, kill the server with SIGKILL, start it
    /// again on the same database, and reconnect every locker while the traffic goes on. The
    /// verification then shows whether any acknowledged deposit or pickup was lost and whether
    /// any compartment is held by two parcels. The failures a down server causes, between the
    /// kill and the last locker's return, are counted as `outage`, apart from the others (a
    /// wrong answer or a refusal keeps its own class). Only for a server this tool
    /// starts (not --server-url); CPU and RSS figures of such a run span two processes.
    #[arg(long)]
    pub kill_after: Option<u64>,
    /// Bound on the whole run, in seconds.
    #[arg(long, default_value_t = 900)]
    pub time_limit: u64,
    /// Bound on each phase (provisioning, connect, storm, verification), in seconds.
    #[arg(long, default_value_t = 300)]
    pub phase_timeout: u64,
}

impl RunArgs {
    /// Applies the --smoke preset.
    pub fn resolved(mut self) -> Self {
        if self.smoke {
            self.lockers = 200;
            self.duration = 10;
            self.rate = 20.0;
            self.storm = true;
            if self.server_url.is_none() {
                // The crash test: acknowledged means durable, checked on every CI run.
                self.kill_after.get_or_insert(5);
            }
            self.time_limit = self.time_limit.min(150);
            self.phase_timeout = self.phase_timeout.min(60);
            if self.label.is_none() {
                self.label = Some("smoke".into());
            }
        }
        self
    }

    /// Lockers in the offline phase: --offline, capped by the fleet.
    pub fn offline_lockers(&self) -> usize {
        self.offline.min(self.lockers)
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
            .unwrap_or_else(|| ((self.rate * 4.0).ceil() as usize).max(256))
            .max(1)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.lockers == 0 || self.lockers > 1_000_000 {
            return Err("--lockers must be between 1 and 1,000,000".into());
        }
        if !(self.rate > 0.0 && self.rate <= 100_000.0) {
            return Err("--rate must be above 0 and at most 100,000".into());
        }
        if self.duration == 0 || self.duration > 3600 {
            return Err("--duration must be between 1 and 3600 seconds".into());
        }
        if self.connect_concurrency == 0
            || self.provision_concurrency == 0
            || self.lockers_per_site == 0
            || self.http_connections == 0
        {
            return Err("concurrency and --lockers-per-site must be positive".into());
        }
        if let Some(k) = self.kill_after {
            if self.server_url.is_some() {
                return Err("--kill-after needs a server this tool starts, not --server-url".into());
            }
            if k == 0 || k >= self.duration {
                return Err("--kill-after must be within the traffic (--duration)".into());
            }
        }
        if self.offline > 0 && self.server_url.is_some() && self.server_db.is_none() {
            return Err("--offline reads QR tokens from the server's outbox: give --server-db".into());
        }
        if self.time_limit == 0 || self.phase_timeout == 0 {
            return Err("--time-limit and --phase-timeout must be positive".into());
        }
        Ok(())
    }
}

/// The traffic mix.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Mix {
    /// Share of deposits pre-advised by the carrier (the rest are walk-up deposits).
    pub preadvised: f64,
    /// Share of deposited parcels picked up during the run.
    pub pickup: f64,
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut mix = Mix {
            preadvised: 0.5,
            pickup: 0.5,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected key=value, e.g. preadvised=0.5"))?;
            let v = v.trim();
            let share = match v.strip_suffix('%') {
                Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
                None => v.parse::<f64>(),
            }
            .map_err(|_| format!("{part:?}: {v:?} is not a number"))?;
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("{part:?}: a share is between 0 and 1 (or 0% and 100%)"));
            }
            match k.trim() {
                "preadvised" | "pre-advised" => mix.preadvised = share,
                "walkup" | "walk-up" => mix.preadvised = 1.0 - share,
                "pickup" | "pickups" => mix.pickup = share,
                other => return Err(format!("unknown mix key {other:?}: use preadvised, walkup or pickup")),
            }
        }
        Ok(mix)
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "preadvised={},pickup={}", self.preadvised, self.pickup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mixes() {
        assert_eq!(
            "preadvised=0.8,pickup=25%".parse::<Mix>().unwrap(),
            Mix {
                preadvised: 0.8,
                pickup: 0.25
            }
        );
        assert_eq!("walkup=1".parse::<Mix>().unwrap().preadvised, 0.0);
        assert!("pickup=2".parse::<Mix>().is_err());
        assert!("foo=0.1".parse::<Mix>().is_err());
        assert!("pickup".parse::<Mix>().is_err());
    }

    #[test]
    fn smoke_preset() {
        let cli = Cli::parse_from(["lockerhub-load", "--smoke"]);
        let args = cli.run.resolved();
        assert_eq!((args.lockers, args.duration, args.storm), (200, 10, true));
        assert_eq!(args.label.as_deref(), Some("smoke"));
        assert_eq!(args.kill_after, Some(5), "the smoke run is a crash test too");
        args.validate().unwrap();
    }

    #[test]
    fn a_kill_needs_a_server_of_ours_within_the_traffic() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["lockerhub-load", "--duration", "20"];
            argv.extend_from_slice(extra);
            Cli::parse_from(argv).run.resolved().validate()
        };
        assert!(parse(&["--kill-after", "10"]).is_ok());
        assert!(parse(&["--kill-after", "20"]).is_err());
        assert!(parse(&["--kill-after", "0"]).is_err());
        let remote = [
            "--kill-after",
            "5",
            "--server-url",
            "http://127.0.0.1:8080",
            "--admin-key",
            "k",
        ];
        assert!(parse(&remote).is_err());
        // Against a server of someone else's, the smoke run does not kill it.
        let smoke = Cli::parse_from([
            "lockerhub-load",
            "--smoke",
            "--server-url",
            "http://127.0.0.1:1",
            "--admin-key",
            "k",
        ]);
        assert_eq!(smoke.run.resolved().kill_after, None);
    }

    #[test]
    fn the_offline_phase_is_capped_by_the_fleet_and_needs_the_outbox() {
        let args = Cli::parse_from(["lockerhub-load", "--lockers", "20", "--offline", "50"]).run;
        assert_eq!(args.offline_lockers(), 20);
        assert_eq!(
            Cli::parse_from(["lockerhub-load"]).run.offline_lockers(),
            0,
            "off by default"
        );
        let remote = |db: &[&str]| {
            let mut argv = vec![
                "lockerhub-load",
                "--offline",
                "5",
                "--server-url",
                "http://127.0.0.1:8080",
                "--admin-key",
                "k",
            ];
            argv.extend_from_slice(db);
            Cli::parse_from(argv).run.validate()
        };
        assert!(remote(&[]).is_err(), "no database, no QR tokens");
        assert!(remote(&["--server-db", "sqlite://data/lockerhub.db"]).is_ok());
    }
}
