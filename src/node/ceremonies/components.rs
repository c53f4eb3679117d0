//! Key entry by components: each custodian of a component ceremony enters one clear
//! component, checked by its KCV in the token; the components live only in this process's
//! memory, zeroized, until the key is made from their XOR (most tokens, SoftHSM2 among them,
//! have no XOR derive) or the ceremony lapses.

use std::collections::HashMap;
use std::sync::Mutex;

use zeroize::Zeroizing;

use crate::hierarchy::KeyRecord;
use crate::hierarchy::{KeyId, KeyTypeSpec};
use crate::hsm::{Lifetime, SecretKeySpec};

use super::super::{NodeError, Reason, Request};
use super::state::now_secs;
use super::{Ceremonies, Ceremony, CeremonyId, CeremonyState};

/// One custodian's clear component, wiped on drop.
type Component = (String, Zeroizing<Vec<u8>>);

/// Clear components per ceremony, only in memory.
#[derive(Default)]
pub(crate) struct PendingComponents(Mutex<HashMap<String, Vec<Component>>>);

impl Ceremonies<'_> {
    /// Enters one clear key component of a component ceremony; it counts as the custodian's
    /// approval. The component's KCV must match the one on the custodian's sheet.
    pub fn enter_component(
        &self,
        req: &mut Request,
        id: &CeremonyId,
        component: Zeroizing<Vec<u8>>,
        kcv: &str,
    ) -> Result<Ceremony, NodeError> {
        let id = id.as_str();
        let c = self.ceremony_for_action(req, id)?;
        let parts: usize = c.action.components().ok_or_else(|| {
            NodeError::because(
                Reason::WrongCeremony,
                format!("ceremony {id} takes no components"),
            )
            .with("ceremony_id", id)
        })?;
        let spec = self.ceremony_key_type(&c)?;
        if component.len() != spec.algorithm.key_len() {
            return Err(NodeError::invalid_field(
                "component",
                format!(
                    "a component of a {} key is {} bytes, not {}",
                    spec.algorithm.as_str(),
                    spec.algorithm.key_len(),
                    component.len()
                ),
            ));
        }
        // Split knowledge: a zero component gives the others the whole key.
        if component.iter().all(|b| *b == 0) {
            return Err(NodeError::invalid_field(
                "component",
                "a component of all zeros is refused: each custodian's component must be random",
            ));
        }
        let me = req.caller.to_uri();
        // Under a roster, a custodian is a person: one not on it, or one who entered a
        // component with another certificate, is refused before the component is looked at.
        let approval = super::approval_of(req, &c.approvals, &self.core.policy(), id)?;
        let entered = self.components_entered(id);
        if entered.contains(&me) {
            return Err(NodeError::because(
                Reason::ComponentAlreadyEntered,
                format!(
                    "{me} has already entered a component of ceremony {id}; another custodian \
                     enters the next"
                ),
            )
            .with("ceremony_id", id)
            .into());
        }
        if entered.len() >= parts {
            return Err(NodeError::because(
                Reason::CeremonyNotOpen,
                format!("ceremony {id} has all {parts} components"),
            )
            .with("ceremony_id", id)
            .into());
        }
        let got = self.core.token.component_kcv(spec.algorithm, &component)?;
        req.kcv(&format!("component-{}", entered.len() + 1), &got);
        if !got.to_hex().eq_ignore_ascii_case(kcv.trim()) {
            return Err(NodeError::invalid_field(
                "kcv",
                format!(
                    "the component's KCV is {}, not {}: re-check the component with its custodian",
                    got.to_hex(),
                    kcv.trim()
                ),
            ));
        }
        {
            // Checked again under the lock: two entries racing for one place cannot both land.
            let mut all = self
                .components
                .0
                .lock()
                .map_err(|_| NodeError::Internal("component store poisoned".into()))?;
            let held = all.entry(id.to_string()).or_default();
            if held.iter().any(|(who, _)| *who == me) || held.len() >= parts {
                return Err(NodeError::because(
                    Reason::ComponentAlreadyEntered,
                    format!("ceremony {id} already has this custodian's component, or all {parts}"),
                )
                .with("ceremony_id", id)
                .into());
            }
            // Two equal components cancel out, leaving the key to the third custodian alone.
            if held.iter().any(|(_, other)| same_secret(other, &component)) {
                return Err(NodeError::invalid_field(
                    "component",
                    "this component equals one already entered; each custodian's component \
                     must be their own random value",
                ));
            }
            held.push((me.clone(), component));
        }
        self.record_approval(req, id, approval).inspect_err(|_| {
            // Not recorded as an approval: not held either, so the custodian can enter it again.
            if !req.is_recorded()
                && let Ok(mut all) = self.components.0.lock()
                && let Some(held) = all.get_mut(id)
            {
                held.retain(|(who, _)| *who != me);
            }
        })
    }

    pub(super) fn components_entered(&self, id: &str) -> Vec<String> {
        self.components
            .0
            .lock()
            .map(|all| {
                all.get(id)
                    .map(|v| v.iter().map(|(who, _)| who.clone()).collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    pub(super) fn forget_components(&self, id: &str) {
        if let Ok(mut all) = self.components.0.lock() {
            all.remove(id);
        }
    }

    /// Drops the components of every ceremony that can no longer run (expired a sweep's period
    /// ago, cancelled, ended, or gone), so that a ceremony nobody comes back to does not keep
    /// clear components in memory. A running ceremony keeps them: its run is taking them. The
    /// server calls it now and then; returns how many ceremonies it cleared.
    pub fn forget_lapsed_components(&self) -> usize {
        let ids: Vec<String> = match self.components.0.lock() {
            Ok(all) => all.keys().cloned().collect(),
            Err(_) => return 0,
        };
        let now = now_secs();
        // The last component may come just before expiry; its run claims the ceremony soon after.
        let grace = self.component_sweep_every().as_secs();
        let open = CeremonyState::Open.as_str();
        let running = CeremonyState::Running.as_str();
        let lapsed: Vec<String> = ids
            .into_iter()
            .filter(|id| match self.core.store.get_ceremony(id) {
                Ok(Some(c)) if c.state == running => false,
                Ok(Some(c)) if c.state == open => now >= c.expires_at.saturating_add(grace),
                Ok(Some(_)) | Ok(None) => true,
                // Kept for now; the next sweep tries again.
                Err(_) => false,
            })
            .collect();
        for id in &lapsed {
            self.forget_components(id);
        }
        lapsed.len()
    }

    /// How often [`Ceremonies::forget_lapsed_components`] should run: often enough that components
    /// outlive their ceremony by little.
    pub fn component_sweep_every(&self) -> std::time::Duration {
        self.ttl.clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(30),
        )
    }

    /// XORs the components in zeroized host memory (SoftHSM2 and most tokens offer no XOR
    /// derive) and creates the key in the token, recording that the combination was on the host.
    pub(super) fn combine_components(
        &self,
        exec: &mut Request,
        id: &str,
        spec: &KeyTypeSpec,
    ) -> Result<KeyRecord, NodeError> {
        let parts = {
            let mut all = self
                .components
                .0
                .lock()
                .map_err(|_| NodeError::Internal("component store poisoned".into()))?;
            all.remove(id).unwrap_or_default()
        };
        let wanted: usize = self.ceremony(id)?.action.components().unwrap_or(0);
        let mut custodians: Vec<&str> = parts.iter().map(|(who, _)| who.as_str()).collect();
        custodians.sort_unstable();
        custodians.dedup();
        // Each the key's length: a policy reloaded since may have changed the algorithm.
        let lengths_fit = parts
            .iter()
            .all(|(_, p)| p.len() == spec.algorithm.key_len());
        if wanted < 2 || parts.len() != wanted || custodians.len() != wanted || !lengths_fit {
            return Err(NodeError::FailedPrecondition(format!(
                "ceremony {id} holds {} components from {} custodians, not {wanted}; open a new \
                 ceremony and enter them again",
                parts.len(),
                custodians.len()
            )));
        }
        let mut value = Zeroizing::new(vec![0u8; spec.algorithm.key_len()]);
        for (_, part) in &parts {
            for (v, p) in value.iter_mut().zip(part.iter()) {
                *v ^= *p;
            }
        }
        drop(parts);
        if value.iter().all(|b| *b == 0) {
            return Err(NodeError::InvalidArgument(
                "the components cancel out (their XOR is all zeros); enter new components".into(),
            ));
        }
        exec.param(
            "combined_in",
            "host memory, zeroized (the token has no XOR derive)",
        );
        let _one_at_a_time = self.keys.generating()?;
        let key_id = KeyId::new_random();
        let version = self
            .core
            .store
            .next_version(&spec.name, &self.core.region())?;
        let kcv = self.core.token.import_clear_key(
            &SecretKeySpec {
                algorithm: spec.algorithm,
                usage: spec.usage,
                exportable: false,
                label: key_id.ck_label(),
                id: key_id.ck_id(),
                lifetime: Lifetime::Token,
            },
            &value,
        )?;
        drop(value);
        let record =
            self.core
                .own_key_record(key_id, spec.name.clone(), spec.algorithm, kcv, version);
        self.core.register_key(exec, record)
    }
}

/// Whether two secrets are equal, in a time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}
