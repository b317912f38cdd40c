//! The `nonstop-agent` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nonstop_agent::config::Config;

/// The nonstop BGP gateway agent: speaks BGP to the routers in front of a node
/// and hands its live sessions to its successor on upgrade.
#[derive(Debug, Parser)]
#[command(name = "nonstop-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config file: print every broken rule, or a summary of what it
    /// would speak and announce.
    Check {
        /// The config file (YAML or JSON, the BgpGateway spec's field names).
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: AS {}, {} peer(s), {} announced prefix(es): OK",
                    config.display(),
                    c.asn,
                    c.peers.len(),
                    c.announce.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}
