//! Key use cases: generate, derive, read, list, change state.
//!
//! Creation order (DESIGN.md §6, docs/architecture.md): a fresh key id is made; the key is
//! created in the HSM under label `hkms/<id>`; the registry row is written in one SQLite
//! transaction; if that write fails, the HSM key is destroyed before the error is returned.
//! A crash between the HSM step and the row leaves a token key with no row: the orphan check
//! (`hkms keys orphans`) reports it and can destroy it. Destruction runs the other way round
//! (row marked destroyed, then the HSM object), so a crash there leaves the same kind of orphan.

use crate::hierarchy::{Factor, KeyId, KeyState, KeyTypeName, Region, Tier, Usage};
use crate::hsm::{Lifetime, SecretKeySpec, derived_algorithm};
use crate::policy::{Identity, Operation};
use crate::store::{KeyFilter, KeyRecord, now_rfc3339};

use super::{Node, NodeError};

impl Node {
    /// Generates a key of `key_type` at this node's tier and region.
    pub fn generate_key(&self, caller: &Identity, key_type: &str) -> Result<KeyRecord, NodeError> {
        let spec = Self::key_type(&self.policy(), key_type)?;
        self.authorize(caller, Operation::Generate, Some(key_type), &self.region)?;
        if !spec.may_generate_at(self.tier) {
            return Err(NodeError::FailedPrecondition(format!(
                "key type `{key_type}` is not generated at the {} tier (the policy allows: {}); \
                 it is derived from its parent instead",
                self.tier,
                tiers(&spec.generate_at)
            )));
        }
        let _one_at_a_time = self
            .generate_lock
            .lock()
            .map_err(|_| NodeError::Internal("key generation lock poisoned".into()))?;
        let id = KeyId::new_random();
        let version = self.store.next_version(&spec.name, &self.region)?;
        let kcv = self.hsm.generate_key(&SecretKeySpec {
            algorithm: spec.algorithm,
            usage: spec.usage,
            // A generated key is a root of this node's hierarchy: it never leaves the HSM.
            exportable: false,
            label: id.ck_label(),
            id: id.ck_id(),
            lifetime: Lifetime::Token,
        })?;
        let now = now_rfc3339();
        self.register(KeyRecord {
            ck_label: id.ck_label(),
            id,
            key_type: spec.name.clone(),
            algorithm: spec.algorithm,
            tier: self.tier,
            region: self.region,
            parent_id: None,
            factor: None,
            kcv,
            version,
            state: KeyState::Active,
            created_at: now.clone(),
            updated_at: now,
        })
    }

    /// Diversifies `parent_id` for `region`, a direct child of the parent's region.
    pub fn derive_sub_key(
        &self,
        caller: &Identity,
        parent_id: &str,
        region: &str,
    ) -> Result<KeyRecord, NodeError> {
        let parent_id = KeyId::parse(parent_id)?;
        let region = Region::parse(region)?;
        let parent = self.get_key_record(&parent_id)?;
        self.authorize(
            caller,
            Operation::Derive,
            Some(parent.key_type.as_str()),
            &region,
        )?;
        if !parent.state.may_derive() {
            return Err(NodeError::FailedPrecondition(format!(
                "key {parent_id} is {}; only an active key can be diversified",
                parent.state
            )));
        }
        if !region.is_child_of(&parent.region) {
            let belongs = match region.parent() {
                Some(p) => format!("it belongs to {p}"),
                None => "it is the national code".to_string(),
            };
            return Err(NodeError::InvalidArgument(format!(
                "region {region} is not a direct child of the parent key's region {} ({belongs}); \
                 derive from that region's key instead",
                parent.region
            )));
        }
        let spec = Self::key_type(&self.policy(), parent.key_type.as_str()).map_err(|_| {
            NodeError::FailedPrecondition(format!(
                "key {parent_id} has type `{}`, which the policy no longer declares",
                parent.key_type.as_str()
            ))
        })?;
        if spec.usage != Usage::Derive || !spec.may_derive_to(region.tier()) {
            return Err(NodeError::FailedPrecondition(format!(
                "key type `{}` is not diversified to the {} tier (the policy allows: {})",
                spec.name.as_str(),
                region.tier(),
                tiers(&spec.derive_to)
            )));
        }
        if let Some(existing) = self.store.find_child(&parent_id, &region)? {
            return Err(NodeError::AlreadyExists(format!(
                "key {parent_id} was already diversified for {region} as {} (state {})",
                existing.id, existing.state
            )));
        }
        let id = KeyId::new_random();
        let factor = Factor::from_region(&region);
        let algorithm = derived_algorithm(parent.algorithm);
        let kcv = self.hsm.derive_key(
            &parent.ck_label,
            parent.algorithm,
            &factor,
            &SecretKeySpec {
                algorithm,
                usage: spec.usage,
                exportable: spec.exportable,
                label: id.ck_label(),
                id: id.ck_id(),
                lifetime: Lifetime::Token,
            },
        )?;
        let now = now_rfc3339();
        self.register(KeyRecord {
            ck_label: id.ck_label(),
            id,
            key_type: parent.key_type.clone(),
            algorithm,
            tier: region.tier(),
            region,
            parent_id: Some(parent_id),
            factor: Some(factor),
            kcv,
            version: parent.version,
            state: KeyState::Active,
            created_at: now.clone(),
            updated_at: now,
        })
    }

    /// One key's record.
    pub fn get_key(&self, caller: &Identity, id: &str) -> Result<KeyRecord, NodeError> {
        let record = self.get_key_record(&KeyId::parse(id)?)?;
        self.authorize(
            caller,
            Operation::Read,
            Some(record.key_type.as_str()),
            &record.region,
        )?;
        Ok(record)
    }

    /// Keys matching every non-empty filter that the caller may read (others are left out).
    pub fn list_keys(
        &self,
        caller: &Identity,
        tier: &str,
        region: &str,
        key_type: &str,
        state: &str,
    ) -> Result<Vec<KeyRecord>, NodeError> {
        let filter = KeyFilter {
            tier: non_empty(tier)
                .map(|t| t.parse::<Tier>())
                .transpose()
                .map_err(|e| NodeError::InvalidArgument(format!("tier filter: {e}")))?,
            region: non_empty(region).map(Region::parse).transpose()?,
            key_type: non_empty(key_type).map(KeyTypeName::parse).transpose()?,
            state: non_empty(state)
                .map(|s| s.parse::<KeyState>())
                .transpose()
                .map_err(|e| NodeError::InvalidArgument(format!("state filter: {e}")))?,
        };
        let policy = self.policy();
        let mut keys = self.store.list_keys(&filter)?;
        keys.retain(|k| {
            policy
                .decide(
                    caller,
                    Operation::Read,
                    Some(k.key_type.as_str()),
                    &k.region,
                )
                .allowed
        });
        Ok(keys)
    }

    /// Moves a key to `state`. With `expected`, refuses unless the key is in that state now.
    pub fn change_key_state(
        &self,
        caller: &Identity,
        id: &str,
        state: &str,
        expected: Option<&str>,
    ) -> Result<KeyRecord, NodeError> {
        let id = KeyId::parse(id)?;
        let next: KeyState = state
            .parse()
            .map_err(|e| NodeError::InvalidArgument(format!("state: {e}")))?;
        let record = self.get_key_record(&id)?;
        self.authorize(
            caller,
            Operation::Manage,
            Some(record.key_type.as_str()),
            &record.region,
        )?;
        let expected: KeyState = match expected {
            Some(s) => s
                .parse()
                .map_err(|e| NodeError::InvalidArgument(format!("expected state: {e}")))?,
            None => record.state,
        };
        let updated = self.store.set_state(&id, expected, next)?;
        if next == KeyState::Destroyed {
            self.hsm.destroy_key(&record.ck_label).map_err(|e| {
                NodeError::Internal(format!(
                    "key {id} is recorded as destroyed but the HSM could not remove it ({e}); \
                     `hkms keys orphans --destroy` will remove it"
                ))
            })?;
        }
        Ok(updated)
    }

    fn get_key_record(&self, id: &KeyId) -> Result<KeyRecord, NodeError> {
        self.store
            .get_key(id)?
            .ok_or_else(|| NodeError::NotFound(format!("no key {id} in this node's registry")))
    }

    /// Writes the row of a key just made in the HSM; if that fails, the key is destroyed.
    fn register(&self, record: KeyRecord) -> Result<KeyRecord, NodeError> {
        match self.store.insert_key(&record) {
            Ok(()) => Ok(record),
            Err(e) => {
                if let Err(destroy) = self.hsm.destroy_key(&record.ck_label) {
                    tracing::error!(
                        label = %record.ck_label,
                        error = %destroy,
                        "registry refused a new key and the HSM could not destroy it; \
                         `hkms keys orphans` reports it"
                    );
                }
                Err(e.into())
            }
        }
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn tiers(list: &[Tier]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
