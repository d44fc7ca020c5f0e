//! The admin side of the protocol, for setting scenarios up (not measured): a fresh account per
//! run, its licenses and users with their tokens, and reading or changing a license.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::http::{Conn, Request};
use crate::load::unexpected;

/// The admin side of the protocol, for setting scenarios up (not measured).
pub struct Admin {
    pub addr: SocketAddr,
    pub account_id: String,
    pub admin_token: String,
}

/// A JSON call that must answer `expect`.
pub async fn call_json(
    conn: &mut Conn,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
    expect: &[u16],
) -> anyhow::Result<Value> {
    let bytes = body.map(|b| b.to_string().into_bytes());
    let (status, answer) = conn
        .call(Request {
            method,
            path,
            token: Some(token),
            body: bytes.as_deref(),
        })
        .await
        .with_context(|| format!("{method} {path}"))?;
    if !expect.contains(&status) {
        bail!(
            "{}",
            unexpected(&format!("{method} {path}"), status, &answer)
        );
    }
    if answer.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&answer).with_context(|| format!("{method} {path}: not JSON"))
}

fn str_field(v: &Value, key: &str) -> anyhow::Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no {key} in {v}"))
}

impl Admin {
    /// Creates a fresh account for this run.
    pub async fn new(addr: SocketAddr, root: &str, name: &str) -> anyhow::Result<Admin> {
        let mut conn = Conn::new(addr);
        let account = call_json(
            &mut conn,
            "POST",
            "/v1/accounts",
            root,
            Some(&json!({ "name": name })),
            &[201],
        )
        .await
        .context("creating the bench account (is the admin token right?)")?;
        Ok(Admin {
            addr,
            account_id: str_field(&account, "id")?,
            admin_token: str_field(&account, "admin_token")?,
        })
    }

    pub async fn license(&self, seats: u64, inactivity_secs: u64) -> anyhow::Result<String> {
        let mut conn = Conn::new(self.addr);
        let lic = call_json(
            &mut conn,
            "POST",
            "/v1/licenses",
            &self.admin_token,
            Some(&json!({
                "account_id": self.account_id,
                "product": "bench",
                "model": "concurrent_sessions",
                "seats": seats,
                "inactivity_timeout_secs": inactivity_secs,
            })),
            &[201],
        )
        .await?;
        str_field(&lic, "id")
    }

    /// Creates `n` interactive users (`{prefix}{i}`) and one token each, `parallel` at a time.
    pub async fn user_tokens(
        &self,
        prefix: &str,
        n: usize,
        parallel: usize,
    ) -> anyhow::Result<Vec<Arc<str>>> {
        let next = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..parallel.clamp(1, n.max(1)) {
            let (next, addr) = (next.clone(), self.addr);
            let (account, admin, prefix) = (
                self.account_id.clone(),
                self.admin_token.clone(),
                prefix.to_owned(),
            );
            handles.push(tokio::spawn(async move {
                let mut conn = Conn::new(addr);
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return anyhow::Ok(out);
                    }
                    let user = format!("{prefix}{i}");
                    call_json(
                        &mut conn,
                        "PUT",
                        &format!("/v1/accounts/{account}/users/{user}"),
                        &admin,
                        Some(&json!({"kind": "interactive", "active": true})),
                        &[200, 201],
                    )
                    .await?;
                    let tok = call_json(
                        &mut conn,
                        "POST",
                        &format!("/v1/accounts/{account}/users/{user}/tokens"),
                        &admin,
                        None,
                        &[201],
                    )
                    .await?;
                    out.push((i, Arc::<str>::from(str_field(&tok, "token")?)));
                }
            }));
        }
        let mut all = Vec::with_capacity(n);
        for h in handles {
            all.extend(h.await??);
        }
        all.sort_by_key(|(i, _)| *i);
        Ok(all.into_iter().map(|(_, t)| t).collect())
    }

    pub async fn in_use(&self, license_id: &str) -> anyhow::Result<u64> {
        let mut conn = Conn::new(self.addr);
        let lic = call_json(
            &mut conn,
            "GET",
            &format!("/v1/licenses/{license_id}"),
            &self.admin_token,
            None,
            &[200],
        )
        .await?;
        lic.pointer("/usage/in_use")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("no usage.in_use in {lic}"))
    }

    /// Registers a webhook endpoint for every event of the account at `url`.
    pub async fn webhook(&self, url: &str) -> anyhow::Result<String> {
        let mut conn = Conn::new(self.addr);
        let created = call_json(
            &mut conn,
            "POST",
            &format!("/v1/accounts/{}/webhooks", self.account_id),
            &self.admin_token,
            Some(&json!({"url": url, "events": ["*"], "description": "bench"})),
            &[201],
        )
        .await
        .context("registering the bench webhook")?;
        str_field(&created, "id")
    }

    /// Another handle on the same account (for calls made in parallel).
    pub fn clone_handle(&self) -> Admin {
        Admin {
            addr: self.addr,
            account_id: self.account_id.clone(),
            admin_token: self.admin_token.clone(),
        }
    }

    /// `in_use` and `ending` of a license's usage.
    pub async fn usage(&self, license_id: &str) -> anyhow::Result<(u64, u64)> {
        let mut conn = Conn::new(self.addr);
        let lic = call_json(
            &mut conn,
            "GET",
            &format!("/v1/licenses/{license_id}"),
            &self.admin_token,
            None,
            &[200],
        )
        .await?;
        let field = |k: &str| {
            lic.pointer(&format!("/usage/{k}"))
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow!("no usage.{k} in {lic}"))
        };
        Ok((field("in_use")?, field("ending")?))
    }

    /// Revokes every session of a license; answers how many.
    pub async fn revoke_all(&self, license_id: &str) -> anyhow::Result<u64> {
        let mut conn = Conn::new(self.addr);
        let answer = call_json(
            &mut conn,
            "DELETE",
            &format!("/v1/licenses/{license_id}/sessions"),
            &self.admin_token,
            None,
            &[200],
        )
        .await?;
        answer
            .get("revoked")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("no revoked in {answer}"))
    }

    /// Activates or deactivates an interactive user of the account.
    pub async fn set_user_active(&self, username: &str, active: bool) -> anyhow::Result<()> {
        let mut conn = Conn::new(self.addr);
        call_json(
            &mut conn,
            "PUT",
            &format!("/v1/accounts/{}/users/{username}", self.account_id),
            &self.admin_token,
            Some(&json!({"kind": "interactive", "active": active})),
            &[200, 201],
        )
        .await?;
        Ok(())
    }

    pub async fn patch_license(&self, license_id: &str, patch: Value) -> anyhow::Result<()> {
        let mut conn = Conn::new(self.addr);
        call_json(
            &mut conn,
            "PATCH",
            &format!("/v1/licenses/{license_id}"),
            &self.admin_token,
            Some(&patch),
            &[200],
        )
        .await?;
        Ok(())
    }
}
