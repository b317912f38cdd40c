//! `lab`: bring the lab up and down, and tell how it stands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use nonstop_lab::{controlplane, lab_dir, process};

/// A real Kubernetes control plane, nodes and BGP routers on this machine.
#[derive(Debug, Parser)]
#[command(name = "lab", about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what is missing, build or reuse the control plane, start it.
    Up,
    /// Stop everything the lab started and remove its state (not the cache).
    Down,
    /// What runs, and whether the API answers.
    Status,
    /// Print `export KUBECONFIG=…` (use: eval "$(lab env)").
    Env,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn packages() -> nonstop_lab::Result<()> {
    let wanted = ["etcd-server", "iproute2", "openssl", "gobgpd", "bird2", "frr"];
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|p| {
            !std::process::Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("==> installing {}", missing.join(" "));
    process::run("apt-get update", std::process::Command::new("apt-get").args(["update", "-qq"]))?;
    process::run(
        "apt-get install",
        std::process::Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(())
}

fn main() -> ExitCode {
    let dir = lab_dir();
    let started = Instant::now();
    let result: nonstop_lab::Result<()> = match Cli::parse().command {
        Cmd::Up => (|| {
            packages()?;
            controlplane::build(&repo())?;
            println!("==> starting the control plane in {}", dir.display());
            controlplane::start(&dir)?;
            println!(
                "==> lab up in {:.1}s; eval \"$(lab env)\" then kubectl get nodes",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        })(),
        Cmd::Down => {
            controlplane::stop(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            println!("lab down");
            Ok(())
        }
        Cmd::Status => {
            for name in controlplane::DAEMONS {
                match process::running(&dir, name) {
                    Some(pid) => println!("{name:<24} running (pid {pid})"),
                    None => println!("{name:<24} stopped"),
                }
            }
            match controlplane::ready(&dir) {
                Ok(()) => println!(
                    "API https://{}:{} ready",
                    controlplane::API_HOST,
                    controlplane::API_PORT
                ),
                Err(e) => println!("API not ready: {e}"),
            }
            Ok(())
        }
        Cmd::Env => {
            println!("export KUBECONFIG={}", controlplane::kubeconfig(&dir).display());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
