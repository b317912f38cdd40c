//! `kubectl nonstop`: a gateway's state, rollout history and sessions from
//! the cluster, and the retry of a failed rollout. Installed as
//! `kubectl-nonstop` on the PATH, kubectl runs it as a plugin; it reads the
//! same kubeconfig as kubectl.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Config};
use nonstop::api::BgpGateway;
use nonstop::api::history::{BgpGatewayRollout, RETRY_ANNOTATION};
use nonstop::kubectl;
use nonstop::operator::render::GATEWAY_LABEL;
use serde_json::json;

/// A BgpGateway's state, its rollouts and its sessions, as the operator
/// recorded them; and `retry` for a rollout that failed.
#[derive(Debug, Parser)]
#[command(name = "kubectl nonstop", version, about)]
struct Cli {
    /// The gateway's namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The gateway's conditions, last rollout and each node.
    Status { gateway: String },
    /// Every rollout on record, oldest first: from, to, result, who
    /// triggered it, retries and each node's upgrade.
    History { gateway: String },
    /// Each node's sessions, and those not Established with their last error.
    Peers { gateway: String },
    /// Resumes a failed rollout without editing the spec (sets the
    /// `nonstop.dev/retry` annotation; the retry is recorded).
    Retry { gateway: String },
}

/// The field manager the API server records for a retry.
const MANAGER: &str = "kubectl-nonstop";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    match runtime.expect("tokio runtime").block_on(run(cli)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<String, String> {
    let config = Config::infer().await.map_err(|e| format!("no Kubernetes config: {e}"))?;
    let namespace = cli.namespace.unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
    let gateways: Api<BgpGateway> = Api::namespaced(client.clone(), &namespace);
    let get = |name: String| {
        let gateways = gateways.clone();
        let namespace = namespace.clone();
        async move {
            match gateways.get_opt(&name).await {
                Ok(Some(gw)) => Ok(gw),
                Ok(None) => Err(format!("no BgpGateway {name} in namespace {namespace}")),
                Err(e) => Err(format!("reading BgpGateway {namespace}/{name}: {e}")),
            }
        }
    };
    match cli.command {
        Command::Status { gateway } => Ok(kubectl::status(&get(gateway).await?)),
        Command::Peers { gateway } => {
            let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now());
            Ok(kubectl::peers(&get(gateway).await?, &now))
        }
        Command::History { gateway } => {
            let records: Api<BgpGatewayRollout> = Api::namespaced(client, &namespace);
            let selector = format!("{GATEWAY_LABEL}={gateway}");
            let list = records
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| format!("listing the BgpGatewayRollouts of {gateway}: {e}"))?;
            Ok(kubectl::history(&gateway, &list.items))
        }
        Command::Retry { gateway } => {
            let gw = get(gateway.clone()).await?;
            if let Some(why) = kubectl::nothing_to_retry(&gw) {
                return Err(why);
            }
            let now = Timestamp::now().to_string();
            let patch = json!({"metadata": {"annotations": {RETRY_ANNOTATION: now}}});
            let params = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
            gateways
                .patch(&gateway, &params, &Patch::Merge(patch))
                .await
                .map_err(|e| format!("annotating BgpGateway {namespace}/{gateway}: {e}"))?;
            Ok(format!(
                "retrying the failed rollout of {namespace}/{gateway} (`kubectl nonstop status {gateway}` follows it)\n"
            ))
        }
    }
}
