//! Key use cases: generate, derive, read, list, change state.
//!
//! Creation order (docs/design.md §9, docs/adr/0001-key-creation-order.md): a fresh key id is made;
//! the key is created in the HSM under label `hkms/<id>`; the registry row and the request's
//! audit record are written in one SQLite transaction; if that write fails, the HSM key is
//! destroyed before the error is returned. A crash between the HSM step and the row leaves a
//! token key with no row: the orphan check (`hkms keys orphans`) reports it and can destroy it.
//! Destruction runs the other way round (row marked destroyed, then the HSM object), so a crash
//! there leaves the same kind of orphan.

use crate::hierarchy::{Factor, KeyId, KeyState, KeyTypeName, KeyTypeSpec, Region, Tier, Usage};
use crate::hierarchy::{KeyFilter, KeyRecord};
use crate::hsm::{Lifetime, SecretKeySpec, derived_algorithm};
use crate::policy::Operation;
use crate::store::{KeysAfter, now_rfc3339};

use std::sync::{Mutex, MutexGuard};

use super::paging::{self, Page, PageAsk};
use super::{Core, ErrorClass, NodeError, Reason, Request};

/// The key use cases, over the node's core.
pub struct Keys<'n> {
    pub(super) core: &'n Core,
    /// Held while a key is made: two keys of one type never get the same version number.
    pub(super) generating: &'n Mutex<()>,
}

impl Keys<'_> {
    /// Held while a key is made and numbered (generated, or combined from components).
    pub(crate) fn generating(&self) -> Result<MutexGuard<'_, ()>, NodeError> {
        self.generating
            .lock()
            .map_err(|_| NodeError::Internal("key generation lock poisoned".into()))
    }

    /// Generates a key of `key_type` at this node's tier and region.
    pub fn generate_key(
        &self,
        req: &mut Request,
        key_type: &KeyTypeName,
    ) -> Result<KeyRecord, NodeError> {
        let key_type = key_type.as_str();
        let spec = Core::key_type(&self.core.policy(), key_type)?;
        self.core.authorize(
            req,
            Operation::Generate,
            Some(key_type),
            &self.core.region(),
        )?;
        self.core
            .require_no_ceremony(Operation::Generate, Some(key_type))?;
        self.generate_key_now(req, &spec)
    }

    /// Generates once the policy (and any ceremony) allowed it.
    pub(crate) fn generate_key_now(
        &self,
        req: &mut Request,
        spec: &KeyTypeSpec,
    ) -> Result<KeyRecord, NodeError> {
        if !spec.may_generate_at(self.core.tier()) {
            return Err(NodeError::because(
                Reason::KeyTypeNotAllowedHere,
                format!(
                    "key type `{}` is not generated at the {} tier (the policy allows: {}); \
                     it is derived from its parent instead",
                    spec.name.as_str(),
                    self.core.tier(),
                    tiers(&spec.generate_at)
                ),
            )
            .with("key_type", spec.name.as_str())
            .with("tier", self.core.tier())
            .into());
        }
        let _one_at_a_time = self.generating()?;
        let id = KeyId::new_random();
        let version = self
            .core
            .store
            .next_version(&spec.name, &self.core.region())?;
        let kcv = self.core.token.generate_key(&SecretKeySpec {
            algorithm: spec.algorithm,
            usage: spec.usage,
            // A generated key is a root of this node's hierarchy: it never leaves the HSM.
            exportable: false,
            label: id.ck_label(),
            id: id.ck_id(),
            lifetime: Lifetime::Token,
        })?;
        let record = self
            .core
            .own_key_record(id, spec.name.clone(), spec.algorithm, kcv, version);
        self.core.register_key(req, record)
    }

    /// Diversifies `parent_id` for `region`, a direct child of the parent's region.
    pub fn derive_sub_key(
        &self,
        req: &mut Request,
        parent_id: &KeyId,
        region: Region,
    ) -> Result<KeyRecord, NodeError> {
        let parent =
            self.core
                .authorize_on_key(req, Operation::Derive, parent_id, Some(&region))?;
        if !parent.state.may_derive() {
            return Err(NodeError::because(
                Reason::WrongKeyState,
                format!(
                    "key {parent_id} is {}; only an active key can be diversified",
                    parent.state
                ),
            )
            .with("key_id", parent_id)
            .with("state", parent.state)
            .into());
        }
        if !region.is_child_of(&parent.region) {
            let belongs = match region.parent() {
                Some(p) => format!("it belongs to {p}"),
                None => "it is the national code".to_string(),
            };
            return Err(NodeError::invalid_field(
                "region",
                format!(
                    "region {region} is not a direct child of the parent key's region {} \
                     ({belongs}); derive from that region's key instead",
                    parent.region
                ),
            ));
        }
        let spec = Core::key_type(&self.core.policy(), parent.key_type.as_str()).map_err(|_| {
            NodeError::because(
                Reason::KeyTypeNotAllowedHere,
                format!(
                    "key {parent_id} has type `{}`, which the policy no longer declares",
                    parent.key_type.as_str()
                ),
            )
            .with("key_type", parent.key_type.as_str())
        })?;
        if spec.usage != Usage::Derive || !spec.may_derive_to(region.tier()) {
            return Err(NodeError::because(
                Reason::KeyTypeNotAllowedHere,
                format!(
                    "key type `{}` is not diversified to the {} tier (the policy allows: {})",
                    spec.name.as_str(),
                    region.tier(),
                    tiers(&spec.derive_to)
                ),
            )
            .with("key_type", spec.name.as_str())
            .with("tier", region.tier())
            .into());
        }
        if let Some(existing) = self.core.store.find_child(parent_id, &region)? {
            return Err(NodeError::because(
                Reason::KeyAlreadyDerived,
                format!(
                    "key {parent_id} was already diversified for {region} as {} (state {})",
                    existing.id, existing.state
                ),
            )
            .with("parent_id", parent_id)
            .with("region", region)
            .with("key_id", &existing.id)
            .into());
        }
        let id = KeyId::new_random();
        let factor = Factor::from_region(&region);
        let algorithm = derived_algorithm(parent.algorithm);
        let kcv = self.core.token.derive_key(
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
        self.core.register_key(
            req,
            KeyRecord {
                ck_label: id.ck_label(),
                id,
                key_type: parent.key_type.clone(),
                algorithm,
                tier: region.tier(),
                region,
                parent_id: Some(parent_id.clone()),
                factor: Some(factor),
                kcv,
                version: parent.version,
                state: KeyState::Active,
                created_at: now.clone(),
                updated_at: now,
            },
        )
    }

    /// One key's record, and where it came from when it was imported.
    pub fn get_key(
        &self,
        req: &mut Request,
        id: &KeyId,
    ) -> Result<(KeyRecord, Option<crate::store::KeyOrigin>), NodeError> {
        let record = self.core.authorize_on_key(req, Operation::Read, id, None)?;
        let origin = self.core.store.key_origin(id.as_str())?;
        Ok((record, origin))
    }

    /// One page of the keys matching `filter` that the caller may read (others are left out,
    /// and do not count towards the page), oldest first by `created_at`, then id.
    pub fn list_keys(
        &self,
        req: &mut Request,
        filter: &KeyFilter,
        ask: PageAsk<'_, KeyRecord, KeysAfter>,
    ) -> Result<Page<KeyRecord, KeysAfter>, NodeError> {
        let policy = self.core.policy();
        req.decided_per_item(Operation::Read, &policy.sha256);
        let caller = &req.caller;
        let page = paging::fill(
            ask,
            |after, n| Ok(self.core.store.list_keys_page(filter, after, n)?),
            KeysAfter::of,
            |k| {
                policy
                    .decide(
                        caller,
                        Operation::Read,
                        Some(k.key_type.as_str()),
                        &k.region,
                    )
                    .allowed
            },
        )?;
        req.param("returned", page.items.len().to_string());
        Ok(page)
    }

    /// Moves a key to `state`. With `expected`, refuses unless the key is in that state now.
    /// Retiring and destroying need a ceremony where the policy asks for one.
    pub fn change_key_state(
        &self,
        req: &mut Request,
        id: &KeyId,
        next: KeyState,
        expected: Option<KeyState>,
    ) -> Result<KeyRecord, NodeError> {
        let record = self
            .core
            .authorize_on_key(req, Operation::Manage, id, None)?;
        if needs_quorum_state(next) {
            self.core
                .require_no_ceremony(Operation::Manage, Some(record.key_type.as_str()))?;
        }
        self.change_key_state_now(req, &record, next, expected)
    }

    /// Changes the state once the policy (and any ceremony) allowed it.
    pub(crate) fn change_key_state_now(
        &self,
        req: &mut Request,
        record: &KeyRecord,
        next: KeyState,
        expected: Option<KeyState>,
    ) -> Result<KeyRecord, NodeError> {
        let expected = expected.unwrap_or(record.state);
        let updated = self
            .core
            .commit(req, None, |d| {
                self.core
                    .store
                    .set_state_audited(&record.id, expected, next, d)
                    .map(|(updated, logged)| (updated, Some(logged.seq)))
            })
            .map_err(|e| e.about("key_id", &record.id))?;
        if next == KeyState::Destroyed
            && let Err(e) = self.core.token.destroy_key(&record.ck_label)
        {
            let message = format!(
                "key {} is recorded as destroyed but the HSM could not remove it ({e}); \
                 `hkms keys orphans --destroy` will remove it",
                record.id
            );
            // The state change is recorded; so is the HSM's failure to follow it.
            let side = req.side_draft("DestroyKeyObject", ErrorClass::Internal, &message);
            self.core.record(&side)?;
            return Err(NodeError::Internal(message));
        }
        Ok(updated)
    }
}

/// Retiring and destroying are the state changes a `manage` ceremony guards.
pub(crate) fn needs_quorum_state(next: KeyState) -> bool {
    matches!(next, KeyState::Retired | KeyState::Destroyed)
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
