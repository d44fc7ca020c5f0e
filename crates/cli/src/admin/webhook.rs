//! `leasehold webhook`: an account's webhook endpoints (create, list, update, delete, rotate
//! the secret), the test ping, the delivery log and redelivery.

use clap::{Args, Subcommand};
use leasehold_client::proto::{CreateWebhook, PatchWebhook, Webhook, WebhookDelivery};

use super::output::{dash_if_empty, key_values, opt, opt_time, print_json, time, yes_no, Table};
use super::{AccountOpt, Admin, CmdResult, Common};

#[derive(Args, Debug)]
pub struct WebhookArgs {
    #[command(flatten)]
    pub(super) common: Common,
    #[command(subcommand)]
    command: WebhookCommand,
}

#[derive(Subcommand, Debug)]
enum WebhookCommand {
    /// Create an endpoint; its signing secret is shown once.
    Create {
        #[command(flatten)]
        account: AccountOpt,
        /// Where events are POSTed (https://… or http://…); `--url` names the server.
        #[arg(long = "target", value_name = "URL")]
        url: String,
        /// Event types to receive, comma-separated (session.opened, license.full, ...; * for all).
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List the account's endpoints.
    List {
        #[command(flatten)]
        account: AccountOpt,
    },
    /// Change an endpoint's URL, events, description, or switch it off and on.
    Update {
        #[command(flatten)]
        account: AccountOpt,
        /// Endpoint id.
        id: String,
        /// A new target URL.
        #[arg(long = "target", value_name = "URL")]
        url: Option<String>,
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        #[arg(long)]
        description: Option<String>,
        /// Stop sending new events to it.
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
    },
    /// Delete an endpoint and its delivery log.
    Delete {
        #[command(flatten)]
        account: AccountOpt,
        id: String,
    },
    /// A new signing secret (shown once); the old one signs nothing from now on.
    RotateSecret {
        #[command(flatten)]
        account: AccountOpt,
        id: String,
    },
    /// Send a test `ping` event now.
    Ping {
        #[command(flatten)]
        account: AccountOpt,
        id: String,
    },
    /// The endpoint's delivery log, newest first.
    Deliveries {
        #[command(flatten)]
        account: AccountOpt,
        id: String,
        /// Deliveries older than this one (a delivery id).
        #[arg(long)]
        before: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Send a delivery's event again (same event id).
    Redeliver {
        #[command(flatten)]
        account: AccountOpt,
        /// Endpoint id.
        id: String,
        /// Delivery id (dl_…).
        delivery: String,
    },
}

impl Admin {
    pub(super) async fn webhook_command(&self, args: WebhookArgs) -> CmdResult {
        let client = self.client()?;
        match args.command {
            WebhookCommand::Create {
                account,
                url,
                events,
                description,
            } => {
                let account = self.account(&account)?;
                let body = CreateWebhook {
                    url,
                    events,
                    description,
                };
                let created = client.create_webhook(&account, &body).await?;
                self.print_webhook(&created);
                eprintln!("note: the signing secret is shown only once: store it now.");
            }
            WebhookCommand::List { account } => {
                let list = client.list_webhooks(&self.account(&account)?).await?;
                if self.json() {
                    print_json(&list);
                    return Ok(());
                }
                let mut table = Table::new(&["ID", "URL", "EVENTS", "ENABLED", "DESCRIPTION"]);
                for w in &list.webhooks {
                    table.row(vec![
                        w.id.clone(),
                        w.url.clone(),
                        w.events.join(","),
                        yes_no(w.enabled),
                        dash_if_empty(&w.description),
                    ]);
                }
                print!("{}", table.render());
            }
            WebhookCommand::Update {
                account,
                id,
                url,
                events,
                description,
                disable,
                enable,
            } => {
                let patch = PatchWebhook {
                    url,
                    events,
                    description,
                    enabled: match (disable, enable) {
                        (true, _) => Some(false),
                        (_, true) => Some(true),
                        _ => None,
                    },
                };
                let w = client
                    .update_webhook(&self.account(&account)?, &id, &patch)
                    .await?;
                self.print_webhook(&w);
            }
            WebhookCommand::Delete { account, id } => {
                client.delete_webhook(&self.account(&account)?, &id).await?;
                if self.json() {
                    print_json(&serde_json::json!({"id": id, "deleted": true}));
                } else {
                    println!("webhook {id} deleted");
                }
            }
            WebhookCommand::RotateSecret { account, id } => {
                let w = client
                    .rotate_webhook_secret(&self.account(&account)?, &id)
                    .await?;
                self.print_webhook(&w);
                eprintln!("note: the signing secret is shown only once: store it now.");
            }
            WebhookCommand::Ping { account, id } => {
                let d = client.ping_webhook(&self.account(&account)?, &id).await?;
                self.print_delivery(&d);
            }
            WebhookCommand::Deliveries {
                account,
                id,
                before,
                limit,
            } => {
                let list = client
                    .webhook_deliveries(
                        &self.account(&account)?,
                        &id,
                        before.as_deref(),
                        Some(limit),
                    )
                    .await?;
                if self.json() {
                    print_json(&list);
                    return Ok(());
                }
                let mut table = Table::new(&[
                    "ID",
                    "EVENT",
                    "TYPE",
                    "STATUS",
                    "ATTEMPTS",
                    "HTTP",
                    "MS",
                    "LAST ATTEMPT",
                ]);
                for d in &list.deliveries {
                    table.row(vec![
                        d.id.clone(),
                        d.event_id.clone(),
                        d.event_type.clone(),
                        d.status.clone(),
                        d.attempts.to_string(),
                        opt(d.response_status),
                        opt(d.latency_ms),
                        opt_time(d.last_attempt_at),
                    ]);
                }
                print!("{}", table.render());
                if let Some(next) = &list.next_before {
                    println!("older: --before {next}");
                }
            }
            WebhookCommand::Redeliver {
                account,
                id,
                delivery,
            } => {
                let d = client
                    .redeliver_webhook(&self.account(&account)?, &id, &delivery)
                    .await?;
                self.print_delivery(&d);
            }
        }
        Ok(())
    }

    fn print_webhook(&self, w: &Webhook) {
        if self.json() {
            print_json(w);
            return;
        }
        let mut pairs = vec![
            ("id", w.id.clone()),
            ("url", w.url.clone()),
            ("events", w.events.join(",")),
            ("description", dash_if_empty(&w.description)),
            ("enabled", yes_no(w.enabled)),
            ("created_at", time(w.created_at)),
        ];
        if let Some(secret) = &w.secret {
            pairs.push(("secret", secret.clone()));
        }
        print!("{}", key_values(&pairs));
    }

    fn print_delivery(&self, d: &WebhookDelivery) {
        if self.json() {
            print_json(d);
            return;
        }
        print!(
            "{}",
            key_values(&[
                ("id", d.id.clone()),
                ("event_id", d.event_id.clone()),
                ("event_type", d.event_type.clone()),
                ("status", d.status.clone()),
                ("attempts", d.attempts.to_string()),
            ])
        );
    }
}
