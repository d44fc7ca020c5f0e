//! The admin routes (account admin, or root admin for accounts): accounts, licenses, users
//! and their tokens, live sessions (and revoking them all) and registered users of a license,
//! devices of a `node_locked` license, plans and usage.

use leasehold_proto::{
    AccountCreated, ActivateDevice, CreateAccount, CreateLicense, Device, DeviceList, License,
    LicenseList, LicenseUser, LicenseUserList, PatchLicense, PlanInfo, PutLicenseUser, PutUser,
    SessionList, SessionsRevoked, TokenCreated, User, UserList,
};
use reqwest::{Method, StatusCode};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::Client;
use crate::error::{ClientError, Result};

/// Filters for [`Client::usage_with`]. All optional; the server picks defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageQuery {
    /// Start of the period.
    pub from: Option<OffsetDateTime>,
    /// End of the period.
    pub to: Option<OffsetDateTime>,
    /// Bucket of the series: `minute`, `hour` (the server's default), `day` or `month`.
    pub bucket: Option<String>,
}

impl UsageQuery {
    /// The query string pairs.
    pub(super) fn pairs(&self) -> Result<Vec<(&'static str, String)>> {
        let mut pairs = Vec::new();
        for (name, at) in [("from", self.from), ("to", self.to)] {
            if let Some(at) = at {
                let text = at
                    .format(&Rfc3339)
                    .map_err(|e| ClientError::Config(format!("usage query {name}: {e}")))?;
                pairs.push((name, text));
            }
        }
        if let Some(bucket) = &self.bucket {
            pairs.push(("bucket", bucket.clone()));
        }
        Ok(pairs)
    }
}

/// The answer of [`Client::activate_device`].
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceActivation {
    /// The device as the license records it.
    pub device: Device,
    /// True when this call activated the device (201); false when it already was (200). A
    /// request resent after a transport error whose first try did reach the server also
    /// answers false.
    pub created: bool,
}

impl Client {
    /// `POST /v1/accounts` (root admin): creates an account. The answer carries the account's
    /// admin token, shown only this once.
    pub async fn create_account(&self, name: &str) -> Result<AccountCreated> {
        let body = CreateAccount {
            name: name.to_owned(),
        };
        let request = self.json_request(Method::POST, &["v1", "accounts"], &body, false)?;
        self.call(request).await
    }

    /// `POST /v1/licenses` (account admin): creates a license.
    pub async fn create_license(&self, license: &CreateLicense) -> Result<License> {
        let request = self.json_request(Method::POST, &["v1", "licenses"], license, false)?;
        self.call(request).await
    }

    /// `GET /v1/licenses/{id}` (account admin): the license and its current usage.
    pub async fn get_license(&self, license_id: &str) -> Result<License> {
        let request = self.request(Method::GET, &["v1", "licenses", license_id])?;
        self.call(request).await
    }

    /// `GET /v1/accounts/{id}/licenses` (account admin): every license of the account, without
    /// usage (ask [`Client::get_license`] for one license's seats in use).
    pub async fn list_licenses(&self, account_id: &str) -> Result<LicenseList> {
        let request = self.request(Method::GET, &["v1", "accounts", account_id, "licenses"])?;
        self.call(request).await
    }

    /// `PATCH /v1/licenses/{id}` (account admin): changes the given fields.
    pub async fn patch_license(&self, license_id: &str, patch: &PatchLicense) -> Result<License> {
        let request =
            self.json_request(Method::PATCH, &["v1", "licenses", license_id], patch, true)?;
        self.call(request).await
    }

    /// `PUT /v1/accounts/{id}/users/{username}` (account admin): creates or updates a user. A
    /// new service user comes back with its `client_id` and `client_secret`, shown only once.
    pub async fn put_user(&self, account_id: &str, username: &str, user: &PutUser) -> Result<User> {
        let request = self.json_request(
            Method::PUT,
            &["v1", "accounts", account_id, "users", username],
            user,
            true,
        )?;
        self.call(request).await
    }

    /// `GET /v1/accounts/{id}/users/{username}` (account admin): one user, with its kind and
    /// whether it is active (never a client secret). 404 when the user does not exist.
    pub async fn get_user(&self, account_id: &str, username: &str) -> Result<User> {
        let request = self.request(
            Method::GET,
            &["v1", "accounts", account_id, "users", username],
        )?;
        self.call(request).await
    }

    /// `GET /v1/accounts/{id}/users` (account admin): every user of the account.
    pub async fn list_users(&self, account_id: &str) -> Result<UserList> {
        let request = self.request(Method::GET, &["v1", "accounts", account_id, "users"])?;
        self.call(request).await
    }

    /// `POST /v1/accounts/{id}/users/{username}/tokens` (account admin): issues a user token.
    pub async fn create_user_token(
        &self,
        account_id: &str,
        username: &str,
    ) -> Result<TokenCreated> {
        let mut request = self.request(
            Method::POST,
            &["v1", "accounts", account_id, "users", username, "tokens"],
        )?;
        request.idempotent = false;
        self.call(request).await
    }

    /// `GET /v1/licenses/{id}/sessions` (account admin): the license's live sessions.
    pub async fn list_sessions(&self, license_id: &str) -> Result<SessionList> {
        let request = self.request(Method::GET, &["v1", "licenses", license_id, "sessions"])?;
        self.call(request).await
    }

    /// `DELETE /v1/licenses/{id}/sessions` (account admin): revokes every live session of the
    /// license at once. When it answers the revoke is durable and none of them is live any
    /// more (their holders' next heartbeat is 410 `session_ended`, reason `revoked`); their
    /// `ended` audit events land in the background. Answers how many were revoked. Sent again
    /// after a transport error, it revokes what was opened meanwhile (and answers 0 if nothing).
    pub async fn revoke_license_sessions(&self, license_id: &str) -> Result<SessionsRevoked> {
        let request = self.request(Method::DELETE, &["v1", "licenses", license_id, "sessions"])?;
        self.call(request).await
    }

    /// `GET /v1/accounts/{id}/users/{username}/sessions` (account admin): the user's live
    /// sessions on every license of the account. 404 when the user does not exist.
    pub async fn list_user_sessions(
        &self,
        account_id: &str,
        username: &str,
    ) -> Result<SessionList> {
        let request = self.request(
            Method::GET,
            &["v1", "accounts", account_id, "users", username, "sessions"],
        )?;
        self.call(request).await
    }

    /// `PUT /v1/licenses/{id}/users/{username}` (account admin, `registered_users` licenses):
    /// makes the user active or inactive on the license. Deactivating ends the user's sessions
    /// on it and frees an active-user slot; activating fails with 409
    /// [`active_users_exhausted`](leasehold_proto::ErrorCode::ActiveUsersExhausted) when all
    /// slots are taken.
    pub async fn put_license_user(
        &self,
        license_id: &str,
        username: &str,
        active: bool,
    ) -> Result<LicenseUser> {
        let request = self.json_request(
            Method::PUT,
            &["v1", "licenses", license_id, "users", username],
            &PutLicenseUser { active },
            true,
        )?;
        self.call(request).await
    }

    /// `GET /v1/licenses/{id}/users` (account admin): the users registered on a license.
    pub async fn list_license_users(&self, license_id: &str) -> Result<LicenseUserList> {
        let request = self.request(Method::GET, &["v1", "licenses", license_id, "users"])?;
        self.call(request).await
    }

    /// `POST /v1/licenses/{id}/devices` (account admin, `node_locked` licenses): activates a
    /// device, named by its fingerprint (the `device_id` its sessions give). Activating a device
    /// that already is changes nothing (not even its name) and answers it with `created: false`.
    /// Fails with 409
    /// [`activations_exhausted`](leasehold_proto::ErrorCode::ActivationsExhausted) when every
    /// activation of the license is taken, and 422 on a license of another model.
    pub async fn activate_device(
        &self,
        license_id: &str,
        fingerprint: &str,
        name: &str,
    ) -> Result<DeviceActivation> {
        let body = ActivateDevice {
            fingerprint: fingerprint.to_owned(),
            name: name.to_owned(),
        };
        // Activating a device twice is activating it once: safe to resend after any transport
        // error (the second try then answers `created: false`).
        let request = self.json_request(
            Method::POST,
            &["v1", "licenses", license_id, "devices"],
            &body,
            true,
        )?;
        let (status, device) = self.call_with_status(request).await?;
        Ok(DeviceActivation {
            device,
            created: status == StatusCode::CREATED,
        })
    }

    /// `GET /v1/licenses/{id}/devices` (account admin): the devices activated on a license and
    /// the most that may be.
    pub async fn list_devices(&self, license_id: &str) -> Result<DeviceList> {
        let request = self.request(Method::GET, &["v1", "licenses", license_id, "devices"])?;
        self.call(request).await
    }

    /// `DELETE /v1/licenses/{id}/devices/{fingerprint}` (account admin): deactivates a device,
    /// freeing its activation; its live sessions end with reason
    /// [`device_deactivated`](leasehold_proto::EndReason::DeviceDeactivated). 404 when the
    /// device is not activated on the license.
    pub async fn deactivate_device(&self, license_id: &str, fingerprint: &str) -> Result<()> {
        let request = self.request(
            Method::DELETE,
            &["v1", "licenses", license_id, "devices", fingerprint],
        )?;
        self.execute(request).await.map(drop)
    }

    /// `GET /v1/plans` (account admin): the plans the server is configured with.
    pub async fn list_plans(&self) -> Result<Vec<PlanInfo>> {
        let request = self.request(Method::GET, &["v1", "plans"])?;
        self.call(request).await
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    #[test]
    fn usage_queries_are_rfc3339() {
        let query = UsageQuery {
            from: Some(OffsetDateTime::from_unix_timestamp(0).unwrap()),
            to: None,
            bucket: Some("hour".into()),
        };
        assert_eq!(
            query.pairs().unwrap(),
            vec![
                ("from", "1970-01-01T00:00:00Z".to_owned()),
                ("bucket", "hour".to_owned())
            ]
        );
    }
}
