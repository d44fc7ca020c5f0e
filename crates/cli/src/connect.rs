//! Where the client commands (`run` and the admin commands) find their server and credentials.
//!
//! Each setting is taken from the first place that has it:
//!
//! 1. the command-line flag (`--server`, `--token`, `--ca-file`, ...);
//! 2. the environment: `LEASEHOLD_URL`, `LEASEHOLD_TOKEN`, `LEASEHOLD_CA_FILE`;
//! 3. the CLI config file: `--cli-config PATH`, else `$XDG_CONFIG_HOME/leasehold/cli.toml`, else
//!    `~/.config/leasehold/cli.toml` (a missing default file is fine, a missing named one is
//!    an error);
//! 4. the default: `http://127.0.0.1:8470`, no token.
//!
//! The config file (every key optional; unknown keys are refused, so a typo is an error):
//!
//! ```toml
//! url = "https://licenses.example.com"
//! token = "lh_adm_..."          # admin token for admin commands, user token for `run`
//! account = "7c9e..."           # default --account of the user and token commands
//! output = "json"               # default --output
//! client_id = "lh_cid_..."      # a service user for `run`, instead of a token
//! client_secret = "lh_sec_..."
//! ca_file = "/etc/leasehold/ca.pem"  # HTTPS: trust this CA instead of the system's roots
//! ```
//!
//! `https://` URLs are verified against the system's trust store, or only against the CA
//! bundle of `ca_file` when one is given (as `curl --cacert` does).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use leasehold_client::{Client, ClientError};
use serde::Deserialize;

/// The documented default server URL (`leasehold serve` listens there by default).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8470";

/// Exit code: the server could not be reached (sysexits `EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code: the CLI is configured wrongly: no token, bad URL, unreadable config file
/// (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;

/// Connection flags shared by `run` and the admin commands.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// Server URL [env: LEASEHOLD_URL; config: url; default: http://127.0.0.1:8470].
    #[arg(long, visible_alias = "url", value_name = "URL", global = true)]
    pub server: Option<String>,
    /// Bearer token: an admin token for admin commands, a user token for `run`
    /// [env: LEASEHOLD_TOKEN; config: token].
    #[arg(long, value_name = "TOKEN", global = true)]
    pub token: Option<String>,
    /// CLI config file [default: ~/.config/leasehold/cli.toml].
    #[arg(long, value_name = "PATH", global = true)]
    pub cli_config: Option<PathBuf>,
    /// HTTPS: trust the certificates of this PEM file instead of the system's roots
    /// [env: LEASEHOLD_CA_FILE; config: ca_file].
    #[arg(long, value_name = "PATH", global = true)]
    pub ca_file: Option<PathBuf>,
}

/// `--output text|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Aligned tables and `key  value` lines for people.
    Text,
    /// The server's JSON, pretty-printed, for scripts.
    Json,
}

/// The CLI config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub url: Option<String>,
    pub token: Option<String>,
    pub account: Option<String>,
    pub output: Option<OutputFormat>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// How to authenticate.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// No credential (enough for the OAuth2 exchange itself).
    None,
    /// `Authorization: Bearer <token>`.
    Token(String),
    /// A service user's OAuth2 client credentials (the SDK obtains and renews the token).
    Service { id: String, secret: String },
}

/// The resolved settings.
#[derive(Debug)]
pub struct Settings {
    pub url: String,
    pub credentials: Credentials,
    /// The CA bundle to trust for HTTPS, if not the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The config file's values, for command-specific defaults (`account`, `output`).
    pub file: FileSettings,
}

/// A failure before any request was made, or the request's failure, with the exit code the
/// command ends with.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    pub fn config(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: EXIT_CONFIG,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The default config file path, if a home or config folder is known.
fn default_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(Path::new(&dir).join("leasehold").join("cli.toml"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(
        Path::new(&home)
            .join(".config")
            .join("leasehold")
            .join("cli.toml"),
    )
}

/// Reads the config file: the named one (must exist) or the default one (may be missing).
pub fn load_file(named: Option<&Path>) -> Result<FileSettings, Failure> {
    let (path, required) = match named {
        Some(path) => (path.to_path_buf(), true),
        None => match default_config_path() {
            Some(path) => (path, false),
            None => return Ok(FileSettings::default()),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(FileSettings::default())
        }
        Err(e) => {
            return Err(Failure::config(format!(
                "cannot read the CLI config file {}: {e}",
                path.display()
            )))
        }
    };
    toml::from_str(&text).map_err(|e| {
        Failure::config(format!(
            "invalid CLI config file {}: {}",
            path.display(),
            e.message()
        ))
    })
}

impl ConnectArgs {
    /// Flags, then environment, then config file, then defaults. `client_id`/`client_secret`
    /// are the service-user flags of commands that have them: given, they win over any token.
    pub fn resolve(
        &self,
        client_id: Option<&str>,
        client_secret: Option<&str>,
    ) -> Result<Settings, Failure> {
        let file = load_file(self.cli_config.as_deref())?;
        let url = self
            .server
            .clone()
            .or_else(|| env_nonempty("LEASEHOLD_URL"))
            .or_else(|| file.url.clone())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let token = self
            .token
            .clone()
            .or_else(|| env_nonempty("LEASEHOLD_TOKEN"))
            .or_else(|| file.token.clone());
        let ca_file = self
            .ca_file
            .clone()
            .or_else(|| env_nonempty("LEASEHOLD_CA_FILE").map(PathBuf::from))
            .or_else(|| file.ca_file.clone());
        let credentials = match (client_id, token) {
            (Some(id), _) => {
                let secret = client_secret
                    .map(str::to_owned)
                    .or_else(|| file.client_secret.clone())
                    .ok_or_else(|| {
                        Failure::config(
                            "--client-id needs a secret: --client-secret or client_secret in the CLI config file",
                        )
                    })?;
                Credentials::Service {
                    id: id.to_owned(),
                    secret,
                }
            }
            (None, Some(token)) => Credentials::Token(token),
            (None, None) => match (&file.client_id, &file.client_secret) {
                (Some(id), Some(secret)) => Credentials::Service {
                    id: id.clone(),
                    secret: secret.clone(),
                },
                _ => Credentials::None,
            },
        };
        Ok(Settings {
            url,
            credentials,
            ca_file,
            file,
        })
    }
}

impl Settings {
    /// A client for these settings; `what` names the credential the command needs, for the
    /// error when there is none (`None`: the command needs no credential).
    pub fn client(&self, what: Option<&str>) -> Result<Client, Failure> {
        let mut builder = Client::builder(self.url.as_str());
        if let Some(path) = &self.ca_file {
            builder = builder
                .ca_file(path)
                .map_err(|e| Failure::config(e.to_string()))?;
        }
        let builder = match (&self.credentials, what) {
            (Credentials::Token(token), _) => builder.bearer_token(token),
            (Credentials::Service { id, secret }, _) => {
                builder.client_credentials(id, secret)
            }
            (Credentials::None, None) => builder,
            (Credentials::None, Some(what)) => {
                return Err(Failure::config(format!(
                    "no token: this command needs {what}; pass --token, set LEASEHOLD_TOKEN, or put token = \"...\" in the CLI config file"
                )))
            }
        };
        builder.build().map_err(|e| Failure::config(e.to_string()))
    }
}

/// True when the server could not be reached (after the SDK's retries).
pub fn is_unreachable(err: &ClientError) -> bool {
    matches!(err, ClientError::Transport(_)) || err.status() == Some(503)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_takes_every_documented_key_and_refuses_typos() {
        let file: FileSettings = toml::from_str(
            r#"
            url = "http://x:1"
            token = "t"
            account = "a"
            output = "json"
            client_id = "c"
            client_secret = "s"
            ca_file = "/etc/leasehold/ca.pem"
            "#,
        )
        .unwrap();
        assert_eq!(file.output, Some(OutputFormat::Json));
        assert_eq!(file.account.as_deref(), Some("a"));
        assert!(toml::from_str::<FileSettings>("tokn = \"t\"").is_err());
    }

    #[test]
    fn a_named_config_file_must_exist() {
        let err = load_file(Some(Path::new("/nonexistent/leasehold/cli.toml"))).unwrap_err();
        assert_eq!(err.code, EXIT_CONFIG);
        assert!(err.message.contains("/nonexistent/leasehold/cli.toml"));
    }
}
