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
    /// Print the CustomResourceDefinitions, BgpGateway and BgpGatewayRollout
    /// (for `kubectl apply -f -`).
    Crd,
    /// Delete every BgpGateway and wait until the operator has taken each
    /// down gracefully (drain, withdraw). The chart runs this before
    /// `helm uninstall` removes the operator.
    Uninstall {
        /// Give up (exit 1) after this many seconds.
        #[arg(long, default_value_t = 240)]
        timeout_seconds: u64,
    },
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
        /// The agent image of gateways that leave `spec.image` out.
        #[arg(long, env = "NONSTOP_AGENT_IMAGE")]
        agent_image: Option<String>,
        /// Namespaces that may hold gateways (comma-separated; all when empty).
        #[arg(long, value_delimiter = ',')]
        allowed_namespaces: Vec<String>,
        /// Image reference prefixes a gateway's agent image must start with
        /// (comma-separated; any image when empty).
        #[arg(long, value_delimiter = ',')]
        allowed_images: Vec<String>,
        /// Prefixes every announced prefix must lie within (comma-separated
        /// CIDRs; any prefix when empty).
        #[arg(long, value_delimiter = ',')]
        allowed_prefixes: Vec<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", nonstop::crd::documents());
            ExitCode::SUCCESS
        }
        Command::Uninstall { timeout_seconds } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let run = nonstop::operator::uninstall::run(Duration::from_secs(timeout_seconds));
            match runtime.expect("tokio runtime").block_on(run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Run {
            lease_namespace,
            lease_name,
            identity,
            lease_seconds,
            metrics,
            agent_image,
            allowed_namespaces,
            allowed_images,
            allowed_prefixes,
        } => {
            let log_format = match nonstop_agent::init_logging() {
                Ok(format) => format,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let policy = match nonstop::operator::policy::Policy::new(
                &allowed_namespaces,
                &allowed_images,
                &allowed_prefixes,
            ) {
                Ok(policy) => policy,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
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
                agent_image: agent_image.filter(|i| !i.trim().is_empty()),
                log_format,
                policy,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
            match runtime.expect("tokio runtime").block_on(nonstop::operator::run(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if log_format == nonstop_agent::LogFormat::Json => {
                    tracing::error!(error = %e, "nonstop-operator stopped on an error");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
