//! Registry work every feature shares: reading a key's row, making the row of a key this node
//! holds, registering a new HSM key with its record (or destroying it), and sealing a key
//! package with a MAC made in the HSM.

use crate::hierarchy::KeyRecord;
use crate::hierarchy::{KeyId, KeyState, KeyTypeName};
use crate::store::now_rfc3339;
use crate::transport::{Package, PackageHeader};

use super::super::{NodeError, Reason, Request};
use super::Core;

impl Core {
    /// The registry row of key `id`.
    pub(crate) fn key_record(&self, id: &KeyId) -> Result<KeyRecord, NodeError> {
        self.store.get_key(id)?.ok_or_else(|| {
            NodeError::because(
                Reason::KeyNotFound,
                format!("no key {id} in this node's registry"),
            )
            .with("key_id", id)
            .into()
        })
    }

    /// The record of a key this node holds at its own tier and region with no local parent
    /// (generated, entered by components, or imported), active from now.
    pub(crate) fn own_key_record(
        &self,
        id: KeyId,
        key_type: KeyTypeName,
        algorithm: crate::hierarchy::Algorithm,
        kcv: crate::hierarchy::Kcv,
        version: u32,
    ) -> KeyRecord {
        let now = now_rfc3339();
        KeyRecord {
            ck_label: id.ck_label(),
            id,
            key_type,
            algorithm,
            tier: self.tier,
            region: self.region,
            parent_id: None,
            factor: None,
            kcv,
            version,
            state: KeyState::Active,
            created_at: now.clone(),
            updated_at: now,
        }
    }

    /// Writes the row of a key just made in the HSM together with the request's audit record;
    /// if that fails, the key is destroyed.
    pub(crate) fn register_key(
        &self,
        req: &mut Request,
        record: KeyRecord,
    ) -> Result<KeyRecord, NodeError> {
        req.made_key(&record);
        let registered = self.commit(req, None, |d| {
            self.store
                .insert_key_audited(&record, d)
                .map(|logged| ((), Some(logged.seq)))
        });
        match registered {
            Ok(()) => Ok(record),
            Err(e) => {
                if let Err(destroy) = self.token.destroy_key(&record.ck_label) {
                    tracing::error!(
                        label = %record.ck_label,
                        error = %destroy,
                        "registry refused a new key and the HSM could not destroy it; \
                         `hkms keys orphans` reports it"
                    );
                }
                Err(e)
            }
        }
    }

    /// Encodes a package and MACs it in the HSM with the key derived from its card's
    /// transport key.
    pub(crate) fn seal_package(
        &self,
        header: PackageHeader,
        wrapped: Vec<u8>,
    ) -> Result<Vec<u8>, NodeError> {
        let header_bytes =
            Package::header_bytes(&header).map_err(|e| NodeError::Internal(e.to_string()))?;
        let signed = Package::signed_bytes(&header_bytes, &wrapped)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        let mac: [u8; crate::transport::package::MAC_LEN] = self
            .token
            .package_mac(&header.card_id, &signed)?
            .try_into()
            .map_err(|_| NodeError::Internal("package MAC length".into()))?;
        Package {
            header,
            header_bytes,
            wrapped,
            mac,
        }
        .encode()
        .map_err(|e| NodeError::Internal(e.to_string()))
    }
}
