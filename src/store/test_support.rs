//! Record builders shared by the store's unit tests.

use super::{KeyRecord, now_rfc3339};
use crate::hierarchy::{Algorithm, Factor, Kcv, KcvMethod, KeyId, KeyState, KeyTypeName, Region};

/// A generated national key of `key_type`, active, version 1.
pub(crate) fn root_record(key_type: &str) -> KeyRecord {
    let id = KeyId::new_random();
    let now = now_rfc3339();
    KeyRecord {
        ck_label: id.ck_label(),
        id,
        key_type: KeyTypeName::parse(key_type).unwrap(),
        algorithm: Algorithm::Aes128,
        tier: Region::NATIONAL.tier(),
        region: Region::NATIONAL,
        parent_id: None,
        factor: None,
        kcv: Kcv::from_hex("53E107", KcvMethod::AesCmac).unwrap(),
        version: 1,
        state: KeyState::Active,
        created_at: now.clone(),
        updated_at: now,
    }
}

/// A key derived from `parent` for `region`, active, version 1.
pub(crate) fn child_record(parent: &KeyRecord, region: &str) -> KeyRecord {
    let region = Region::parse(region).unwrap();
    let id = KeyId::new_random();
    KeyRecord {
        ck_label: id.ck_label(),
        id,
        tier: region.tier(),
        region,
        parent_id: Some(parent.id.clone()),
        factor: Some(Factor::from_region(&region)),
        kcv: Kcv::from_hex("422347", KcvMethod::AesCmac).unwrap(),
        ..parent.clone()
    }
}
