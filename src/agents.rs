//! `vigil agents ...`: the admin routes from the command line, talking to a
//! running server (contract section 5). Prints the server's JSON answer;
//! exits 0 on success, 1 when the server refuses (its message on stderr),
//! 2 when the server cannot be reached.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::{json, Value as J};

use crate::cli::Exit;

/// `vigil agents` options.
#[derive(Args, Debug)]
pub struct AgentsArgs {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub server: SocketAddr,
    /// An admin token (or set VIGIL_TOKEN).
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    pub token: String,
    /// What to do.
    #[command(subcommand)]
    pub what: AgentsCommand,
}

/// What `vigil agents` does.
#[derive(Subcommand, Debug)]
pub enum AgentsCommand {
    /// Every agent with its record, keys and when it last acted.
    List,
    /// Register an agent or update its record.
    Register {
        /// The agent.
        agent: String,
        /// Its role (cohort).
        #[arg(long)]
        role: String,
        /// Who answers for it.
        #[arg(long)]
        owner: String,
        /// What it is for.
        #[arg(long)]
        purpose: Option<String>,
        /// An action its role may take (repeatable).
        #[arg(long = "action")]
        actions: Vec<String>,
    },
    /// Add a public key (a JWK file, as `vigil keygen` prints).
    AddKey {
        /// The agent.
        agent: String,
        /// The public JWK file.
        #[arg(long)]
        jwk: PathBuf,
        /// Not valid before (NumericDate).
        #[arg(long)]
        nbf: Option<i64>,
        /// Expires at (NumericDate).
        #[arg(long)]
        exp: Option<i64>,
    },
    /// Revoke a key (from now, or from `--at`).
    Revoke {
        /// The agent.
        agent: String,
        /// The key id.
        kid: String,
        /// Revoked from (NumericDate).
        #[arg(long)]
        at: Option<i64>,
    },
    /// Decommission an agent (the leaver step).
    Decommission {
        /// The agent.
        agent: String,
    },
    /// Suspend an agent (its events are refused until it is restored).
    Suspend {
        /// The agent.
        agent: String,
    },
    /// End an agent's suspension (a response's too).
    Restore {
        /// The agent.
        agent: String,
    },
    /// Record an owner's attestation that the agent is (not) still needed.
    Attest {
        /// The agent.
        agent: String,
        /// Whether it is still needed.
        #[arg(long)]
        needed: bool,
        /// Who attests.
        #[arg(long)]
        by: String,
    },
}

/// A path segment, percent-encoded (a kid holds `#`).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The request a command makes: method, path and body.
fn request(what: &AgentsCommand) -> anyhow::Result<(&'static str, String, Option<J>)> {
    Ok(match what {
        AgentsCommand::List => ("GET", "/v1/agents".into(), None),
        AgentsCommand::Register {
            agent,
            role,
            owner,
            purpose,
            actions,
        } => (
            "PUT",
            format!("/v1/agents/{}", seg(agent)),
            Some(json!({"role": role, "owner": owner, "purpose": purpose, "actions": actions})),
        ),
        AgentsCommand::AddKey {
            agent,
            jwk,
            nbf,
            exp,
        } => {
            let text = std::fs::read(jwk)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", jwk.display()))?;
            let mut key: J = serde_json::from_slice(&text)
                .map_err(|e| anyhow::anyhow!("{} is not a JWK: {e}", jwk.display()))?;
            if key.get("d").is_some() {
                anyhow::bail!("{} is a private key: pass the public JWK", jwk.display());
            }
            for (m, v) in [("nbf", nbf), ("exp", exp)] {
                if let Some(v) = v {
                    key[m] = json!(v);
                }
            }
            ("POST", format!("/v1/agents/{}/keys", seg(agent)), Some(key))
        }
        AgentsCommand::Revoke { agent, kid, at } => (
            "POST",
            format!("/v1/agents/{}/keys/{}/revoke", seg(agent), seg(kid)),
            Some(json!({"revoked_at": at})),
        ),
        AgentsCommand::Decommission { agent } => (
            "POST",
            format!("/v1/agents/{}/decommission", seg(agent)),
            None,
        ),
        AgentsCommand::Suspend { agent } => {
            ("POST", format!("/v1/agents/{}/suspend", seg(agent)), None)
        }
        AgentsCommand::Restore { agent } => {
            ("POST", format!("/v1/agents/{}/restore", seg(agent)), None)
        }
        AgentsCommand::Attest { agent, needed, by } => (
            "POST",
            format!("/v1/agents/{}/attest", seg(agent)),
            Some(json!({"needed": needed, "by": by})),
        ),
    })
}

/// Runs the command: prints the answer, or fails with exit 1 (refused)
/// or 2 (unreachable, or a bad argument).
pub fn run(args: AgentsArgs) -> Result<(), Exit> {
    let (method, path, body) = request(&args.what)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?;
    let sent = rt.block_on(async {
        let mut client = crate::client::Client::connect(args.server, &args.token).await?;
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        client
            .send(method, &path, Some("application/json"), bytes)
            .await
    });
    let (status, answer) = match sent {
        Ok(r) => r,
        Err(e) => {
            return Err(Exit {
                code: 2,
                message: format!("cannot reach the server at {}: {e}", args.server),
            })
        }
    };
    if (200..300).contains(&status) {
        println!("{}", String::from_utf8_lossy(&answer));
        return Ok(());
    }
    let message = serde_json::from_slice::<J>(&answer)
        .ok()
        .and_then(|j| j["message"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned());
    Err(Exit {
        code: 1,
        message: format!("refused ({status}): {message}"),
    })
}
