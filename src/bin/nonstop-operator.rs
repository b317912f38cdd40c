//! The `nonstop-operator` command line.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// The nonstop operator: reconciles BgpGateway resources into one agent per
/// node and rolls upgrades through hitless handoffs.
#[derive(Debug, Parser)]
#[command(name = "nonstop-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the BgpGateway CustomResourceDefinition (for `kubectl apply -f -`).
    Crd,
    /// Run the controller (one replica leads, the others wait on the Lease).
    Run {
        /// Namespace of the leader Lease: the operator's own.
        #[arg(long, env = "POD_NAMESPACE", default_value = "nonstop-system")]
        lease_namespace: String,
        #[arg(long, default_value = "nonstop-operator")]
        lease_name: String,
        /// This replica's name in the Lease and in Events.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Seconds a leader that stops renewing keeps the lead.
        #[arg(long, default_value_t = 15)]
        lease_seconds: u64,
        /// Where /metrics and /healthz are served.
        #[arg(long, default_value = "0.0.0.0:9180")]
        metrics: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", nonstop::crd::yaml());
            ExitCode::SUCCESS
        }
        Command::Run { lease_namespace, lease_name, identity, lease_seconds, metrics } => {
            nonstop_agent::init_logging();
            let identity = identity.unwrap_or_else(|| {
                format!(
                    "{}-{}",
                    rustix::system::uname().nodename().to_string_lossy(),
                    std::process::id()
                )
            });
            let options = nonstop::operator::Options {
                lease_namespace,
                lease_name,
                identity,
                lease_duration: Duration::from_secs(lease_seconds.max(2)),
                metrics,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
            match runtime.expect("tokio runtime").block_on(nonstop::operator::run(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
