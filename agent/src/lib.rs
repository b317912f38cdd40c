//! nonstop-agent: the BGP speaker that runs on each gateway node.
//!
//! ```text
//!            config file (same fields as the BgpGateway spec)
//!                 │
//!   routers ◀──▶ session FSMs (sans-IO) ◀──▶ RIBs
//!                 │
//!      successor agent ◀── handoff socket (same node)
//! ```
//!
//! Sans-IO cores: the wire codec ([`wire`]), the session FSM ([`session`]),
//! the RIBs ([`rib`]), Graceful Restart decisions ([`graceful`]) and the
//! handoff protocol ([`handoff`]); the I/O edge is [`speaker`]. [`config`]
//! and [`route`] are shared with the operator's CRD, [`http`] (the bounded
//! HTTP doors) with its binary.

pub mod bmp;
pub mod config;
pub mod graceful;
pub mod handoff;
pub mod health;
pub mod http;
pub mod import;
pub mod prefix_map;
pub mod published;
pub mod restart;
pub mod rib;
pub mod route;
pub mod session;
pub mod show;
pub mod speaker;
pub mod wire;

/// How log lines are written: `text` for people, `json` (one object per
/// line, the event's fields under `fields`) for Loki or Elasticsearch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// The name `NONSTOP_LOG_FORMAT` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }

    /// From `NONSTOP_LOG_FORMAT`: `text` when unset or empty.
    pub fn from_env() -> Result<Self, String> {
        Self::parse(&std::env::var("NONSTOP_LOG_FORMAT").unwrap_or_default())
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("NONSTOP_LOG_FORMAT must be text or json, got {other:?}")),
        }
    }
}

/// Logs to stderr in the format `NONSTOP_LOG_FORMAT` names, filtered by
/// `NONSTOP_LOG` (default `info`), coloured only on a terminal: the agent's
/// and the operator's binaries both start here. Errs on a format it does not
/// know, before anything is logged.
pub fn init_logging() -> Result<LogFormat, String> {
    let format = LogFormat::from_env()?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("NONSTOP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init()
        }
        LogFormat::Json => builder.json().with_ansi(false).with_current_span(false).init(),
    }
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::LogFormat;

    #[test]
    fn log_formats_by_name_and_a_clear_error_otherwise() {
        for (value, want) in [
            ("", Ok(LogFormat::Text)),
            ("text", Ok(LogFormat::Text)),
            (" json ", Ok(LogFormat::Json)),
            ("JSON", Err("NONSTOP_LOG_FORMAT must be text or json, got \"JSON\"".to_string())),
            ("logfmt", Err("NONSTOP_LOG_FORMAT must be text or json, got \"logfmt\"".to_string())),
        ] {
            assert_eq!(LogFormat::parse(value), want, "{value:?}");
        }
        for f in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(LogFormat::parse(f.as_str()), Ok(f));
        }
    }
}
