//! The reconciliation of token and registry: keys on the token that no live row explains
//! (left by a crash between the HSM step and the registry write), and live rows whose key is
//! gone from the token. A secret key with no label is an orphan too: hkms labels every object
//! it makes, and SoftHSM2 leaves an empty, unlabelled object when the process dies while the
//! token is creating one (its file is written before the template is applied).

use std::collections::BTreeSet;

use crate::hierarchy::{KeyFilter, KeyRecord};
use crate::transport::TransportKey;

use super::{Keys, NodeError};

/// Every `hkms/` label is ours; other objects on the token are not hkms's business.
const LABEL_PREFIX: &str = "hkms/";

/// What the reconciliation found.
#[derive(Debug, Clone, Default)]
pub struct OrphanReport {
    /// Labels of hkms keys on the token with no row, or whose row says destroyed; an empty
    /// label for each unlabelled secret key.
    pub orphans: Vec<String>,
    /// Rows that are not destroyed but whose key is missing from the token.
    pub missing: Vec<KeyRecord>,
    /// Registered transport cards whose transport key or package MAC key is missing.
    pub missing_transport: Vec<MissingTransport>,
}

/// A registered transport card's object that is not on the token: packages to or from that
/// card cannot be made or read any more, and the card must be issued again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingTransport {
    /// The card.
    pub card: TransportKey,
    /// The missing object's label.
    pub label: String,
    /// "transport key" or "package MAC key".
    pub what: &'static str,
}

impl Keys<'_> {
    /// Compares the token with the registry. Run it while no key is being created, or expect
    /// the key in flight to show up as an orphan.
    pub fn find_orphans(&self) -> Result<OrphanReport, NodeError> {
        reconcile(self.core.token.as_ref(), self.core.store.as_ref())
    }
    /// Destroys the orphans of a fresh report; returns how many objects went.
    pub fn destroy_orphans(&self) -> Result<usize, NodeError> {
        let report = self.find_orphans()?;
        let mut destroyed = 0;
        for label in &report.orphans {
            if !label.is_empty() {
                destroyed += self.core.token.destroy_key(label)?;
            }
        }
        if report.orphans.iter().any(String::is_empty) {
            destroyed += self.core.token.destroy_unlabelled_secret_keys()?;
        }
        Ok(destroyed)
    }
}

/// Compares `token` with `store` (see [`Keys::find_orphans`]); also for the local audit tools,
/// which must work on a token the node refuses to start on.
pub fn reconcile(
    token: &dyn crate::hsm::Token,
    store: &dyn crate::store::Store,
) -> Result<OrphanReport, NodeError> {
    let labels = token.secret_key_labels()?;
    let unlabelled = labels.iter().filter(|l| l.is_empty()).count();
    let on_token: BTreeSet<String> = labels
        .into_iter()
        .filter(|l| l.starts_with(LABEL_PREFIX))
        .collect();
    let mut live: BTreeSet<String> = store.labels()?.into_iter().collect();
    // The node's own fixed secret key, made at start, with no registry row.
    live.insert(crate::hsm::ID_MAC_LABEL.to_string());
    // Transport keys are registered in their own table.
    let mut missing_transport = Vec::new();
    for t in store.transport_keys()? {
        for (what, label) in [
            (
                "transport key",
                crate::hsm::transport::transport_label(&t.card_id),
            ),
            (
                "package MAC key",
                crate::hsm::transport::package_mac_label(&t.card_id),
            ),
        ] {
            if !on_token.contains(&label) {
                missing_transport.push(MissingTransport {
                    card: t.clone(),
                    label: label.clone(),
                    what,
                });
            }
            live.insert(label);
        }
    }
    let mut orphans: Vec<String> = on_token.difference(&live).cloned().collect();
    orphans.extend(std::iter::repeat_n(String::new(), unlabelled));
    let missing = store
        .list_keys(&KeyFilter::default())?
        .into_iter()
        .filter(|r| live.contains(&r.ck_label) && !on_token.contains(&r.ck_label))
        .collect();
    Ok(OrphanReport {
        orphans,
        missing,
        missing_transport,
    })
}
