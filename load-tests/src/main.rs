//! lockerhub-load: drives a simulated locker fleet and carrier traffic against a lockerhub
//! server on loopback, beside a bare actix-web WebSocket echo server as the floor. See
//! load-tests/README.md.

mod bench;
mod chart;
mod cli;
mod echo;
mod fleet;
mod hooks;
mod http;
mod metrics;
mod offline;
mod outbox;
mod progress;
mod provision;
mod report;
mod run;
mod server;
mod sys;
mod traffic;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::EchoServer { port, workers }) => return echo::serve(port, workers),
        Some(Command::BenchWrites(args)) => return bench::main(args),
        None => {}
    }
    let args = cli.run;
    // A last bound over the run's own --time-limit.
    let limit = Duration::from_secs(args.clone().resolved().time_limit + 60);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = rt.block_on(async move {
        tokio::select! {
            r = tokio::time::timeout(limit, run::run(args)) => match r {
                Ok(Ok(code)) => code,
                Ok(Err(e)) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
                Err(_) => {
                    eprintln!("error: the run exceeded its time limit");
                    ExitCode::from(3)
                }
            },
            // Children are killed as the run is dropped.
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted");
                ExitCode::from(130)
            }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    code
}
