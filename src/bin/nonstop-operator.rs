//! The `nonstop-operator` command line.

use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => print!("{}", nonstop::crd::yaml()),
    }
    ExitCode::SUCCESS
}
