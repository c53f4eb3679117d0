//! The token goes away under a running server and comes back: requests fail with UNAVAILABLE
//! meanwhile (no hang, no crash), health says NOT_SERVING, and once the token is back the same
//! server process serves again without a restart (issue 7, "Faults").
//!
//! How the token goes away: the test renames the SoftHSM2 token folder (`directories.tokendir`
//! of the node's `softhsm2.conf`) and renames it back. What Debian's SoftHSM2 2.6.1 does to a
//! process that initialised the library before (tried with a small `cryptoki` program):
//!
//! - while the folder is gone, `C_GetSlotList` still lists the slot, `C_GetTokenInfo` returns
//!   `CKR_GENERAL_ERROR`, `C_FindObjects` finds nothing, `C_SignInit` with a key handle found
//!   earlier returns `CKR_OBJECT_HANDLE_INVALID`, `C_GenerateKey` returns `CKR_GENERAL_ERROR`,
//!   and the open sessions still say they are logged in (`C_GetSessionInfo`);
//! - when the folder is back, nothing changes for that process: the token stays invalid until
//!   the library is finalized and initialised again;
//! - `C_Initialize` while the folder is missing fails with `CKR_GENERAL_ERROR` and leaves the
//!   library uninitialised (`CKR_CRYPTOKI_NOT_INITIALIZED` afterwards); once the folder is
//!   back, `C_Initialize` works and the token is found again by its label with its objects.
//!
//! So SoftHSM2 never answers with the textbook `CKR_DEVICE_REMOVED` here: hkms asks the token
//! (`C_GetTokenInfo`) after such ambiguous errors, and its rebuild must go through `C_Finalize`
//! and `C_Initialize`, the "finalized library" case. A real disappearance of the folder is used
//! rather than a proxy or a fault-injecting module, since it exercises exactly that path.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{TestNode, USER_PIN, stderr, stdout, try_derive};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const AUDITOR: &str = "hkms://auditor/national/000000/auditor-1";

/// The node's SoftHSM2 token folder, and where it goes while the token is away.
struct TokenFolder {
    here: PathBuf,
    away: PathBuf,
}

impl TokenFolder {
    fn of(node: &TestNode) -> TokenFolder {
        let base = node
            .token
            .conf
            .parent()
            .expect("token folder")
            .to_path_buf();
        TokenFolder {
            here: base.join("tokens"),
            away: base.join("tokens-away"),
        }
    }

    /// The token disappears for every process using this SoftHSM2 configuration.
    fn take_away(&self) {
        std::fs::rename(&self.here, &self.away).expect("move the token folder away");
    }

    /// The token is back, with everything it held.
    fn bring_back(&self) {
        std::fs::rename(&self.away, &self.here).expect("move the token folder back");
    }
}

async fn health(node: &TestNode, service: &str) -> ServingStatus {
    HealthClient::new(node.channel().await)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status()
}

/// Polls `check` until it gives a value; gives up (and fails the test) after about a minute,
/// so that a server that never recovers is a failure, not a hung test.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..240 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("gave up waiting for {what}");
}

/// Exports the ceremony log as an auditor and verifies it offline.
fn audit_log_verifies(node: &TestNode) {
    let bundle = node.dir.path().join("bundle");
    let o = node.cli_as(
        AUDITOR,
        &["audit", "export", "--out", &bundle.display().to_string()],
    );
    assert!(o.status.success(), "export: {}", stderr(&o));
    let key_sha256 = support::exported_key_sha256(&o);
    let o = std::process::Command::new(support::hkms_bin())
        .args(["audit", "verify", &bundle.display().to_string()])
        .args(["--expect-key-sha256", &key_sha256])
        .output()
        .expect("run verify");
    assert!(o.status.success(), "verify: {}{}", stdout(&o), stderr(&o));
}

#[tokio::test]
async fn a_token_that_goes_away_and_comes_back_is_served_again_without_a_restart() {
    let mut node = TestNode::start("national", "000000");
    let root = node.generate("card-master").await;
    support::derive(&node, &root.id, "440000").await;
    let pid = node.pid();
    assert_eq!(health(&node, "token").await, ServingStatus::Serving);

    let folder = TokenFolder::of(&node);
    folder.take_away();
    let mut c = node.client().await;
    for _ in 0..3 {
        let err = try_derive(&mut c, &root.id, "450000")
            .await
            .expect_err("a derivation without a token");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("re-establish"), "{}", err.message());
        assert!(err.message().contains("retry"), "{}", err.message());
    }
    eventually("health NOT_SERVING", || async {
        let token = health(&node, "token").await;
        let overall = health(&node, "").await;
        (token == ServingStatus::NotServing && overall == ServingStatus::NotServing).then_some(())
    })
    .await;
    assert!(node.running(), "the server died without its token");

    folder.bring_back();
    let child = eventually("a derivation after the token came back", || {
        let mut c = c.clone();
        let parent = root.id.clone();
        async move { try_derive(&mut c, &parent, "450000").await.ok() }
    })
    .await;
    assert_eq!(child.region, "450000");
    try_derive(&mut c, &root.id, "460000")
        .await
        .expect("the next derivation works at once");
    eventually("health SERVING", || async {
        let token = health(&node, "token").await;
        let overall = health(&node, "").await;
        (token == ServingStatus::Serving && overall == ServingStatus::Serving).then_some(())
    })
    .await;
    assert_eq!(node.pid(), pid);
    assert!(node.running());
    assert_eq!(support::key_count(&node).await, 4);

    audit_log_verifies(&node);
    let log = node.log();
    assert!(log.contains("HSM sessions lost"), "{log}");
    assert!(log.contains("HSM sessions rebuilt"), "{log}");
    assert!(!log.contains(USER_PIN), "the PIN is in the log");
}

#[tokio::test]
async fn requests_in_flight_when_the_token_goes_away_fail_cleanly_and_later_ones_succeed() {
    let mut node = TestNode::start("national", "000000");
    let root = node.generate("card-master").await;
    let province = support::derive(&node, &root.id, "440000").await;
    let pid = node.pid();

    // Four clients derive the 99 city keys of one province, one after another, retrying a
    // city whose derivation failed; every failure must be UNAVAILABLE.
    let derived = Arc::new(AtomicUsize::new(0));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let mut c = node.client().await;
        let parent = province.id.clone();
        let (derived, unavailable) = (Arc::clone(&derived), Arc::clone(&unavailable));
        workers.push(tokio::spawn(async move {
            for city in (1..=99).filter(|i| i % 4 == w) {
                let region = format!("44{city:02}00");
                for attempt in 0.. {
                    assert!(attempt < 600, "{region} never derived");
                    match try_derive(&mut c, &parent, &region).await {
                        Ok(_) => {
                            derived.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Err(e) => {
                            assert_eq!(e.code(), Code::Unavailable, "{region}: {e:?}");
                            assert!(e.message().contains("re-establish"), "{}", e.message());
                            unavailable.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }));
    }

    eventually("derivations under way", || async {
        (derived.load(Ordering::SeqCst) >= 4).then_some(())
    })
    .await;
    let folder = TokenFolder::of(&node);
    folder.take_away();
    eventually("a request failing without the token", || async {
        (unavailable.load(Ordering::SeqCst) >= 4).then_some(())
    })
    .await;
    folder.bring_back();
    for w in workers {
        w.await
            .expect("a client saw something other than success or UNAVAILABLE");
    }

    assert_eq!(derived.load(Ordering::SeqCst), 99);
    assert_eq!(support::key_count(&node).await, 2 + 99);
    assert_eq!(node.pid(), pid);
    assert!(node.running());
    audit_log_verifies(&node);
    // One loss, noticed by many requests, is handled once: one warning, one rebuild.
    let log = node.log();
    assert_eq!(log.matches("HSM sessions lost").count(), 1, "{log}");
    assert_eq!(log.matches("HSM sessions rebuilt").count(), 1, "{log}");
}
