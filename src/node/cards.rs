//! Card services at a city's service window: the PIN UNBLOCK / PIN RELOAD command for one card,
//! made in the HSM from the city's own master key and the card's serial. The PIN is held in
//! zeroized memory and never recorded; the cardholder's and agent's ID numbers are recorded
//! only as their MAC under the token's ID MAC key (`Core::id_mac`), which never leaves it.

use std::path::Path;

use zeroize::Zeroizing;

use crate::card::{self, AGENT_ID_MAC, CARDHOLDER_ID_MAC, CardCommand, IdNumber, LEGACY_SALT_LEN};
use crate::hierarchy::KeyRecord;
use crate::hierarchy::{CardSerial, KeyTypeName};
use crate::policy::Operation;
use crate::transport::TransportRole;

use super::limits::{CardLimiter, unix_now};
use super::{Core, NodeError, Reason, Request};

/// The card service use cases, over the node's core.
pub struct Cards<'n> {
    pub(super) core: &'n Core,
    /// How long a personalisation package can be imported.
    pub(super) package_ttl: std::time::Duration,
    /// The node's counts of card commands, against the policy's `[card_limits]`.
    pub(super) limiter: &'n CardLimiter,
}

/// What the window asks for.
pub struct CardRequest {
    /// Unblock or reload.
    pub command: CardCommand,
    /// The card's application serial number.
    pub serial: CardSerial,
    /// The card's GET CHALLENGE answer, 16 hex digits.
    pub challenge: String,
    /// Unblock: the current PIN; reload: the new PIN.
    pub pin: Zeroizing<String>,
    /// The window operator who served the cardholder.
    pub served_by: String,
    /// The cardholder's ID number (recorded as its ID MAC).
    pub cardholder_id: Zeroizing<String>,
    /// The agent's ID number when an agent acts for the cardholder (its ID MAC).
    pub agent_id: Option<Zeroizing<String>>,
}

/// The command for the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardAnswer {
    /// The complete command APDU.
    pub apdu: Vec<u8>,
    /// The master key it was made with.
    pub master_key_id: String,
    /// That key's version.
    pub master_version: u32,
}

/// The file in the data folder where nodes from before ID MACs kept the salt of their ID
/// hashes.
pub const LEGACY_SALT_FILE: &str = "id-salt";

/// The salt of the ID hashes that records made before ID MACs carry, if this node has one:
/// with it, an auditor's lookup (`Audit::find_id_number`) also finds those records. It is never
/// made any more: a node that never had one has no such records. A salt that is there but
/// unreadable, or not 32 bytes, stops the node, so that old records do not silently stop
/// matching; an operator who moved it off the host (docs/card-commands.md §9) gets lookups of
/// ID MACs only.
pub(crate) fn load_legacy_salt(
    data_dir: &Path,
) -> Result<Option<Zeroizing<[u8; LEGACY_SALT_LEN]>>, NodeError> {
    let path = data_dir.join(LEGACY_SALT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(NodeError::FailedPrecondition(format!(
                "cannot read the ID salt {} of records made before ID MACs: {e}; fix its \
                 permissions, or move it off the host (docs/card-commands.md §9)",
                path.display()
            )));
        }
    };
    let salt: [u8; LEGACY_SALT_LEN] = bytes.as_slice().try_into().map_err(|_| {
        NodeError::FailedPrecondition(format!(
            "the ID salt {} is not {LEGACY_SALT_LEN} bytes; restore it from backup (the ID \
             hashes of records made before ID MACs depend on it), or move it off the host",
            path.display()
        ))
    })?;
    Ok(Some(Zeroizing::new(salt)))
}

impl Cards<'_> {
    /// Builds the PIN UNBLOCK or PIN RELOAD command for one card of this city.
    pub fn card_command(&self, req: &mut Request, c: CardRequest) -> Result<CardAnswer, NodeError> {
        let serial = c.serial.factor();
        let challenge = card::parse_challenge(&c.challenge)
            .map_err(|e| NodeError::invalid_field("challenge", e.to_string()))?;
        let served_by = c.served_by.trim();
        // Recorded and shown in reports: nothing invisible, nothing that reorders the text.
        if served_by.is_empty()
            || served_by.len() > 64
            || crate::untrusted_text::has_invisible(served_by)
        {
            return Err(NodeError::invalid_field(
                "served_by",
                "served_by must name the window operator: 1-64 bytes of visible characters (no \
                 control, bidi or zero-width characters)",
            ));
        }
        // Both checked before either is MACed; recorded before the decision, so that a refused
        // request still shows whose card was asked for.
        let cardholder = IdNumber::parse(&c.cardholder_id, "cardholder's")
            .map_err(|e| NodeError::invalid_field("cardholder_id", e.to_string()))?;
        let agent = c
            .agent_id
            .as_ref()
            .map(|a| IdNumber::parse(a, "agent's"))
            .transpose()
            .map_err(|e| NodeError::invalid_field("agent_id", e.to_string()))?;
        req.param(CARDHOLDER_ID_MAC, self.core.id_mac(&cardholder)?);
        if let Some(agent) = &agent {
            req.param(AGENT_ID_MAC, self.core.id_mac(agent)?);
        }
        let key_type = c.command.key_type();
        self.core
            .authorize(req, Operation::Use, Some(key_type), &self.core.region())?;
        let pins = self.core.policy().pins;
        card::check_pin(&c.pin, pins.min_length, pins.max_length)
            .map_err(|e| NodeError::invalid_field("pin", e.to_string()))?;
        let master = self.card_master(key_type)?;
        // Last of the checks: only a command the node would make counts against its limits,
        // and a refused one (here or above) counts nowhere. Limits of the policy in force now,
        // counts since the node started.
        let limits = self.core.policy().card_limits;
        self.limiter
            .admit(
                &limits,
                &req.caller.to_string(),
                serial.as_bytes(),
                unix_now(),
            )
            .map_err(|refusal| {
                req.param("card_limit", refusal.limit.as_str());
                NodeError::ResourceExhausted(refusal)
            })?;
        req.key(&master);
        let block = card::pin_block(&c.pin);
        let apdu = self.core.token.card_command(
            c.command,
            &master.ck_label,
            &serial,
            &challenge,
            &block,
        )?;
        Ok(CardAnswer {
            apdu,
            master_key_id: master.id.to_string(),
            master_version: master.version,
        })
    }

    /// The city's active master key of this type, newest version first. Card services run
    /// only on a city's node: elsewhere a card factor could coincide with a region factor.
    fn card_master(&self, key_type: &str) -> Result<KeyRecord, NodeError> {
        if self.core.tier() != crate::hierarchy::Tier::Municipal {
            return Err(NodeError::FailedPrecondition(format!(
                "card services run on a city's node; this node is {} {}",
                self.core.tier(),
                self.core.region()
            )));
        }
        self.core.store
            .newest_active_key(&KeyTypeName::parse(key_type)?, &self.core.region())?
            .ok_or_else(|| {
                NodeError::FailedPrecondition(format!(
                    "this node holds no active `{key_type}` key for {}; import or generate one first",
                    self.core.region()
                ))
            })
    }
}

/// One card's key packages for the personalisation bureau: (key type, package bytes).
pub type CardPackages = Vec<(String, Vec<u8>)>;

impl Cards<'_> {
    /// Personalises one card: its pin-unblock and pin-reload keys, derived from the city's
    /// masters with the card's serial, each wrapped under the bureau's transport key
    /// (`bureau_card_id`, a card this node issued for its own region) as a key package.
    pub fn personalise_card(
        &self,
        req: &mut Request,
        bureau_card_id: &str,
        serial: &CardSerial,
    ) -> Result<CardPackages, NodeError> {
        let factor = serial.factor();
        // Allowed first: which bureau cards exist is no answer for a caller who may not export.
        for command in [CardCommand::Unblock, CardCommand::Reload] {
            // Card keys leave the HSM (wrapped for the bureau): an export, not a window's use.
            self.core.authorize(
                req,
                Operation::Export,
                Some(command.key_type()),
                &self.core.region(),
            )?;
        }
        let bureau = self
            .core
            .store
            .transport_key(bureau_card_id)?
            .filter(|t| t.role == TransportRole::Issued && t.region == self.core.region())
            .ok_or_else(|| {
                NodeError::from(
                    NodeError::because(
                        Reason::CardNotReady,
                        format!(
                            "no bureau card {bureau_card_id} was issued by this node for {}",
                            self.core.region()
                        ),
                    )
                    .with("bureau_card_id", bureau_card_id),
                )
            })?;
        let mut out = Vec::new();
        for command in [CardCommand::Unblock, CardCommand::Reload] {
            let key_type = command.key_type();
            let master = self.card_master(key_type)?;
            // The record names the master each card key came from.
            req.key(&master);
            let (wrapped, kcv) =
                self.core
                    .token
                    .export_card_key(&master.ck_label, &factor, &bureau.card_id)?;
            req.kcv(&format!("card:{serial}:{key_type}"), &kcv);
            let now = std::time::SystemTime::now();
            let header = crate::transport::PackageHeader {
                package_id: format!("p-{}", uuid::Uuid::new_v4().simple()),
                key_type: key_type.into(),
                algorithm: "aes128".into(),
                usage: "card".into(),
                kcv: kcv.to_hex(),
                kcv_method: kcv.method.as_str().into(),
                parent_kcv: master.kcv.to_hex(),
                issuer_node: self.core.name().to_string(),
                issuer_region: self.core.region().to_string(),
                source_key_id: master.id.to_string(),
                recipient_region: self.core.region().to_string(),
                card_id: bureau.card_id.clone(),
                version: master.version,
                created_at: humantime::format_rfc3339_seconds(now).to_string(),
                not_after: humantime::format_rfc3339_seconds(now + self.package_ttl).to_string(),
                card_serial: serial.to_string(),
            };
            let package = self.core.seal_package(header, wrapped)?;
            out.push((key_type.to_string(), package));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_salt_is_made_for_a_node_without_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        assert!(load_legacy_salt(&dir).unwrap().is_none());
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load_legacy_salt(&dir).unwrap().is_none());
        assert!(!dir.join(LEGACY_SALT_FILE).exists());
    }

    #[test]
    fn an_existing_salt_is_read_and_a_bad_one_stops_the_node() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join(LEGACY_SALT_FILE);
        std::fs::write(&path, [9u8; 32]).unwrap();
        assert_eq!(*load_legacy_salt(dir).unwrap().unwrap(), [9u8; 32]);

        // Cut short: refused, and left as it is.
        std::fs::write(&path, b"").unwrap();
        let err = load_legacy_salt(dir).unwrap_err();
        assert!(err.to_string().contains("not 32 bytes"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"");

        // Unreadable: an error about reading it.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let err = load_legacy_salt(dir).unwrap_err();
        assert!(err.to_string().contains("cannot read the ID salt"), "{err}");
    }
}
