//! gRPC health that reports the token and the registry, not just the process: `token` and
//! `store` are their own service names, and the overall status ("") and `hkms.v1.KeyService`
//! are SERVING only while both answer. `token-sealed` says whether every attack of the token
//! probe held at start (docs/tokens.md); it does not make the node unhealthy. `audit-token`
//! says whether the token of the ceremony log's signing key answers (`[audit.token]`, or the
//! node's token): without it checkpoints and exports fail, but every request is still
//! recorded before it is answered, so it does not make the node unhealthy either.

use std::sync::Arc;
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::node::Node;

/// Health service name of the token check.
pub const TOKEN: &str = "token";
/// Health service name of the registry check.
pub const STORE: &str = "store";
/// Health service name of the token probe's verdict: SERVING when every attack held.
pub const TOKEN_SEALED: &str = "token-sealed";
/// Health service name of the audit key's token check.
pub const AUDIT_TOKEN: &str = "audit-token";
/// Health service name of the key service.
pub const KEY_SERVICE: &str = "hkms.v1.KeyService";

/// Checks once and publishes the result.
pub async fn check_once(node: &Arc<Node>, reporter: &HealthReporter) {
    let n = Arc::clone(node);
    let checked = tokio::task::spawn_blocking(move || {
        let (token, store) = n.core().health();
        (token, store, n.core().audit_token_health())
    })
    .await;
    let (token, store, audit_token) = match checked {
        Ok((t, s, a)) => (t.is_ok(), s.is_ok(), a.is_ok()),
        Err(_) => (false, false, false),
    };
    let status = |ok: bool| {
        if ok {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    reporter.set_service_status(TOKEN, status(token)).await;
    reporter.set_service_status(STORE, status(store)).await;
    reporter
        .set_service_status(AUDIT_TOKEN, status(audit_token))
        .await;
    reporter
        .set_service_status(TOKEN_SEALED, status(node.core().token_probe().sealed()))
        .await;
    reporter
        .set_service_status(KEY_SERVICE, status(token && store))
        .await;
    reporter
        .set_service_status("", status(token && store))
        .await;
}

/// Re-checks every `period` until the task is dropped.
pub async fn watch(node: Arc<Node>, reporter: HealthReporter, period: Duration) {
    loop {
        check_once(&node, &reporter).await;
        tokio::time::sleep(period).await;
    }
}
