//! The routes of dark sites: on the cloud, delegations of a license (create, list, renew,
//! import a return receipt); on the local server, the request for seats, the import of a
//! delegation and its return.

use leasehold_proto::{
    CreateDelegation, CreateDelegationRequest, Delegation, DelegationFile, DelegationList,
    DelegationReceipt, DelegationReport, DelegationRequestFile, ImportDelegation, ImportReceipt,
    ImportReport, ImportedDelegation, ImportedReport, RenewDelegation,
};
use reqwest::Method;

use super::Client;
use crate::error::Result;

impl Client {
    /// `POST /v1/delegation-requests` (root admin of the local server): its signed request.
    pub async fn delegation_request(&self, site: &str) -> Result<DelegationRequestFile> {
        let body = CreateDelegationRequest { site: site.into() };
        let request =
            self.json_request(Method::POST, &["v1", "delegation-requests"], &body, true)?;
        self.call(request).await
    }

    /// `POST /v1/licenses/{id}/delegations` (account admin, on the cloud). Not retried: a
    /// second delegation would take seats again.
    pub async fn create_delegation(
        &self,
        license_id: &str,
        body: &CreateDelegation,
    ) -> Result<DelegationFile> {
        let request = self.json_request(
            Method::POST,
            &["v1", "licenses", license_id, "delegations"],
            body,
            false,
        )?;
        self.call(request).await
    }

    /// `GET /v1/licenses/{id}/delegations` (account admin, on the cloud).
    pub async fn list_delegations(&self, license_id: &str) -> Result<DelegationList> {
        let request = self.request(Method::GET, &["v1", "licenses", license_id, "delegations"])?;
        self.call(request).await
    }

    /// `PATCH /v1/licenses/{id}/delegations/{delegation_id}` (account admin, on the cloud):
    /// a renewal. Not retried: each one raises the sequence.
    pub async fn renew_delegation(
        &self,
        license_id: &str,
        delegation_id: &str,
        body: &RenewDelegation,
    ) -> Result<DelegationFile> {
        let request = self.json_request(
            Method::PATCH,
            &["v1", "licenses", license_id, "delegations", delegation_id],
            body,
            false,
        )?;
        self.call(request).await
    }

    /// `POST /v1/licenses/{id}/delegations/{delegation_id}/receipt` (account admin, on the
    /// cloud): the seats come back.
    pub async fn import_receipt(
        &self,
        license_id: &str,
        delegation_id: &str,
        receipt: &str,
    ) -> Result<Delegation> {
        let body = ImportReceipt {
            receipt: receipt.into(),
        };
        let request = self.json_request(
            Method::POST,
            &[
                "v1",
                "licenses",
                license_id,
                "delegations",
                delegation_id,
                "receipt",
            ],
            &body,
            true,
        )?;
        self.call(request).await
    }

    /// `GET /v1/delegations/{id}/report` (root admin of the local server): a signed usage
    /// report with the next report sequence.
    pub async fn delegation_report(&self, delegation_id: &str) -> Result<DelegationReport> {
        let request = self.request(Method::GET, &["v1", "delegations", delegation_id, "report"])?;
        self.call(request).await
    }

    /// `POST /v1/licenses/{id}/delegations/{delegation_id}/reports` (account admin, on the
    /// cloud): keeps the report when it is newer than the one kept.
    pub async fn import_report(
        &self,
        license_id: &str,
        delegation_id: &str,
        report: &str,
    ) -> Result<ImportedReport> {
        let body = ImportReport {
            report: report.into(),
        };
        let request = self.json_request(
            Method::POST,
            &[
                "v1",
                "licenses",
                license_id,
                "delegations",
                delegation_id,
                "reports",
            ],
            &body,
            true,
        )?;
        self.call(request).await
    }

    /// `POST /v1/delegations` (root admin of the local server): imports a delegation file.
    pub async fn import_delegation(&self, body: &ImportDelegation) -> Result<ImportedDelegation> {
        let request = self.json_request(Method::POST, &["v1", "delegations"], body, true)?;
        self.call(request).await
    }

    /// `POST /v1/delegations/{id}/return` (root admin of the local server): stops the local
    /// license and answers the signed receipt.
    pub async fn return_delegation(&self, delegation_id: &str) -> Result<DelegationReceipt> {
        let request = self.json_request(
            Method::POST,
            &["v1", "delegations", delegation_id, "return"],
            &serde_json::json!({}),
            true,
        )?;
        self.call(request).await
    }
}
