//! The webhook routes (account admin, or root): endpoints, their secret, the test ping, the
//! delivery log and redelivery.

use leasehold_proto::{
    CreateWebhook, PatchWebhook, Webhook, WebhookDelivery, WebhookDeliveryList, WebhookList,
};
use reqwest::Method;

use super::Client;
use crate::error::Result;

impl Client {
    /// `POST /v1/accounts/{id}/webhooks`: creates an endpoint. The answer carries its signing
    /// `secret`, shown only this once. 422
    /// [`webhook_target_refused`](leasehold_proto::ErrorCode::WebhookTargetRefused) when the
    /// URL's host does not resolve or is not a public address.
    pub async fn create_webhook(
        &self,
        account_id: &str,
        webhook: &CreateWebhook,
    ) -> Result<Webhook> {
        let request = self.json_request(
            Method::POST,
            &["v1", "accounts", account_id, "webhooks"],
            webhook,
            false,
        )?;
        self.call(request).await
    }

    /// `GET /v1/accounts/{id}/webhooks`: the account's endpoints (no secrets).
    pub async fn list_webhooks(&self, account_id: &str) -> Result<WebhookList> {
        let request = self.request(Method::GET, &["v1", "accounts", account_id, "webhooks"])?;
        self.call(request).await
    }

    /// `PATCH /v1/accounts/{id}/webhooks/{webhook_id}`: changes what the patch names.
    pub async fn update_webhook(
        &self,
        account_id: &str,
        webhook_id: &str,
        patch: &PatchWebhook,
    ) -> Result<Webhook> {
        let request = self.json_request(
            Method::PATCH,
            &["v1", "accounts", account_id, "webhooks", webhook_id],
            patch,
            true,
        )?;
        self.call(request).await
    }

    /// `DELETE /v1/accounts/{id}/webhooks/{webhook_id}`: deletes the endpoint and its log.
    pub async fn delete_webhook(&self, account_id: &str, webhook_id: &str) -> Result<()> {
        let request = self.request(
            Method::DELETE,
            &["v1", "accounts", account_id, "webhooks", webhook_id],
        )?;
        self.execute(request).await.map(drop)
    }

    /// `POST …/webhooks/{webhook_id}/rotate-secret`: a new secret, shown only this once.
    pub async fn rotate_webhook_secret(
        &self,
        account_id: &str,
        webhook_id: &str,
    ) -> Result<Webhook> {
        let request = self.request(
            Method::POST,
            &[
                "v1",
                "accounts",
                account_id,
                "webhooks",
                webhook_id,
                "rotate-secret",
            ],
        )?;
        self.call(request).await
    }

    /// `POST …/webhooks/{webhook_id}/ping`: sends a `ping` event now; its outcome lands in the
    /// delivery log.
    pub async fn ping_webhook(
        &self,
        account_id: &str,
        webhook_id: &str,
    ) -> Result<WebhookDelivery> {
        let request = self.request(
            Method::POST,
            &["v1", "accounts", account_id, "webhooks", webhook_id, "ping"],
        )?;
        self.call(request).await
    }

    /// `GET …/webhooks/{webhook_id}/deliveries`: the delivery log, newest first, older than
    /// `before` when given.
    pub async fn webhook_deliveries(
        &self,
        account_id: &str,
        webhook_id: &str,
        before: Option<&str>,
        limit: Option<u32>,
    ) -> Result<WebhookDeliveryList> {
        let mut request = self.request(
            Method::GET,
            &[
                "v1",
                "accounts",
                account_id,
                "webhooks",
                webhook_id,
                "deliveries",
            ],
        )?;
        {
            let mut q = request.url.query_pairs_mut();
            if let Some(b) = before {
                q.append_pair("before", b);
            }
            if let Some(l) = limit {
                q.append_pair("limit", &l.to_string());
            }
        }
        if request.url.query() == Some("") {
            request.url.set_query(None);
        }
        self.call(request).await
    }

    /// `POST …/deliveries/{delivery_id}/redeliver`: sends the delivery's event again (same
    /// event id), as a new delivery.
    pub async fn redeliver_webhook(
        &self,
        account_id: &str,
        webhook_id: &str,
        delivery_id: &str,
    ) -> Result<WebhookDelivery> {
        let request = self.request(
            Method::POST,
            &[
                "v1",
                "accounts",
                account_id,
                "webhooks",
                webhook_id,
                "deliveries",
                delivery_id,
                "redeliver",
            ],
        )?;
        self.call(request).await
    }
}
