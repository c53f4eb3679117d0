//! Moving sub-keys between nodes: issuing and loading transport key cards, exporting a sub-key
//! as a key package for its region, importing a package (docs/design.md §3.6).

use std::time::SystemTime;

use secrecy::SecretString;

use crate::hierarchy::{Algorithm, KeyId, KeyState, KeyTypeName, Region, Usage};
use crate::hierarchy::{KeyFilter, KeyRecord};
use crate::hsm::transport::CardToken;
use crate::hsm::{Lifetime, SecretKeySpec, TokenLocator};
use crate::policy::Operation;
use crate::store::{KeyOrigin, TransportKeysAfter, now_rfc3339};
use crate::transport::{Package, PackageHeader};
use crate::transport::{TransportKey, TransportRole};

use std::path::PathBuf;
use std::sync::Mutex;

use super::paging::{self, Page, PageAsk};
use super::{Ceremonies, CeremonyAction, CeremonyState, Core, InField, NodeError, Reason, Request};

/// The key type name the policy uses for transport keys.
const TRANSPORT: &str = crate::policy::TRANSPORT_KEY_TYPE;

/// How this node reaches transport key cards.
pub(crate) struct CardSettings {
    /// The security officer PIN source (nodes that issue transport key cards).
    so_pin: Option<crate::hsm::PinSource>,
    /// The PKCS#11 module of transport key cards.
    module: PathBuf,
    /// Whether that module is the node token's own library (one PKCS#11 state for both).
    shares_token_module: bool,
    /// Serialises card work: two loads of one card must not both unwrap its key, and a card
    /// login (user, then SO) is the whole process's.
    one_at_a_time: Mutex<()>,
}

impl CardSettings {
    /// Cards through `module`, with the node's SO PIN source when it issues cards;
    /// `token_module` is the node token's module.
    pub(crate) fn new(
        so_pin: Option<crate::hsm::PinSource>,
        module: PathBuf,
        token_module: &std::path::Path,
    ) -> CardSettings {
        CardSettings {
            so_pin,
            shares_token_module: crate::hsm::same_module(&module, token_module),
            module,
            one_at_a_time: Mutex::new(()),
        }
    }
}

/// The transport use cases (cards and packages), over the node's core.
pub struct Transport<'n> {
    pub(super) core: &'n Core,
    /// Issuing a card under dual control spends an `issue-card` ceremony.
    pub(super) ceremonies: Ceremonies<'n>,
    pub(super) cards: &'n CardSettings,
    /// How long a package can be imported.
    pub(super) package_ttl: std::time::Duration,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Constant-time equality of two MACs.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a card job holds (see `Transport::card_work`).
struct CardWork<'a> {
    hsm: &'a dyn crate::hsm::Token,
    module: Option<crate::hsm::ModuleHold<'a>>,
    _one_at_a_time: std::sync::MutexGuard<'a, ()>,
}

impl Drop for CardWork<'_> {
    fn drop(&mut self) {
        // A recycle put off by this job comes now, not at some later destroy.
        drop(self.module.take());
        self.hsm.recycle_if_due();
    }
}

/// A card as the caller presents it: its label and its two PINs.
pub struct CardAccess<'a> {
    /// The card token's label.
    pub label: &'a str,
    /// The user PIN.
    pub pin: &'a SecretString,
    /// The security officer PIN (loading only).
    pub so_pin: &'a SecretString,
}

impl Transport<'_> {
    /// Held through one card job (issue or load), from its checks to its record: one job at a
    /// time, and no module re-initialisation under it.
    fn card_work(&self) -> CardWork<'_> {
        // The lock guards no data: a poisoned one is as good as a sound one.
        let one_at_a_time = self
            .cards
            .one_at_a_time
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        CardWork {
            hsm: self.core.token(),
            module: Some(self.core.token.hold_module()),
            _one_at_a_time: one_at_a_time,
        }
    }

    /// Opens the card `label` with the PIN the caller gave. What goes wrong there is the
    /// caller's to mend (the card, its PIN), not the node's configuration.
    fn open_card(&self, label: &str, pin: &SecretString) -> Result<CardToken, NodeError> {
        use crate::hsm::HsmError;
        check_card_label(label).field("card_label")?;
        check_card_pin(label, "PIN", pin).field("card_pin")?;
        let locator = TokenLocator::by_label(label);
        let opened = match CardToken::open(&self.cards.module, &locator, pin) {
            // A card inserted since the module was initialised may be unseen yet (SoftHSM2
            // reads its token folder only then): look once more, after initialising it again.
            Err(HsmError::TokenNotFound { .. }) => {
                self.rescan_cards()?;
                CardToken::open(&self.cards.module, &locator, pin)
            }
            other => other,
        };
        let not_ready = |why: String| -> NodeError {
            NodeError::because(Reason::CardNotReady, why)
                .with("card_label", label)
                .into()
        };
        opened.map_err(|e| match e {
            HsmError::TokenNotFound { .. } => not_ready(format!(
                "no card labelled `{label}` is present; insert it, or check its label"
            )),
            HsmError::AmbiguousToken { count, .. } => not_ready(format!(
                "{count} cards labelled `{label}` are present; leave only the one to use"
            )),
            HsmError::PinIncorrect => NodeError::invalid_field(
                "card_pin",
                format!(
                    "card `{label}` refused its PIN (CKR_PIN_INCORRECT); check the PIN: each \
                     wrong try counts towards locking the card"
                ),
            ),
            HsmError::PinLocked => not_ready(format!(
                "the PIN of card `{label}` is locked (CKR_PIN_LOCKED); its security officer \
                 must reset it"
            )),
            other => NodeError::from(other),
        })
    }

    /// Has the card module look for cards again; called under the card job, with no card open.
    fn rescan_cards(&self) -> Result<(), crate::hsm::HsmError> {
        if self.cards.shares_token_module {
            self.core.token.rescan_tokens()
        } else {
            CardToken::rescan(&self.cards.module)
        }
    }

    /// Issues a transport key for `region` onto the card `card_label`. Under dual control the
    /// caller names the done `manage` ceremony (action issue-card) that approved it.
    pub fn issue_card(
        &self,
        req: &mut Request,
        region: Region,
        card_label: &str,
        card_pin: &SecretString,
        ceremony_id: Option<&str>,
    ) -> Result<TransportKey, NodeError> {
        self.core
            .authorize(req, Operation::Export, Some(TRANSPORT), &region)?;
        // The approving ceremony and its result, when the policy puts issuing under dual control.
        let mut approval: Option<(&str, String)> = None;
        if self.core.policy().quorum(Operation::Manage, None).is_some() {
            let id = ceremony_id.ok_or_else(|| {
                NodeError::because(
                    Reason::CeremonyRequired,
                    "issuing a transport key card is under dual control: open `hkms ceremony \
                     open --op manage --action issue-card --region R`, have it approved, then \
                     issue with --ceremony ID",
                )
                .with("operation", "manage")
                .with("action", "issue-card")
            })?;
            req.param("ceremony", id);
            super::ceremonies::check_ceremony_id(id).field("ceremony_id")?;
            req.ceremony(id);
            let c = self.ceremonies.ceremony(id)?;
            let approved = c.state == CeremonyState::Done
                && c.action == (CeremonyAction::IssueCard { region });
            if !approved {
                return Err(NodeError::because(Reason::WrongCeremony, format!(
                    "ceremony {id} did not approve issuing a card for {region} (it is {}, {:?}); \
                     one ceremony approves one card",
                    c.state.as_str(),
                    c.action.params()
                )).with("ceremony_id", id).with("state", c.state.as_str()).into());
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(u64::MAX);
            if now >= c.expires_at {
                return Err(NodeError::because(
                    Reason::CeremonyExpired,
                    format!(
                        "the approval of ceremony {id} has expired; open a new issue-card ceremony"
                    ),
                )
                .with("ceremony_id", id)
                .into());
            }
            approval = Some((id, c.result));
        }
        let so_pin = self
            .cards
            .so_pin
            .as_ref()
            .ok_or_else(|| {
                NodeError::FailedPrecondition(
                    "this node has no security officer PIN source ([token] so_pin_file or \
                     so_pin_env); only the security officer can mark a transport key trusted"
                        .into(),
                )
            })?
            .read()?;
        let _card_work = self.card_work();
        // A wrong card or PIN is found before the approval is spent.
        let card = self.open_card(card_label, card_pin)?;
        if let Some((id, result)) = &approval {
            // Spend the approval before any HSM work: two requests cannot both use it. The
            // request's record says whether the card was then issued.
            if !self.core.store.set_ceremony_state(
                id,
                CeremonyState::Done.as_str(),
                CeremonyState::Used.as_str(),
                &format!("{result}; spent on a card by {}", req.caller),
            )? {
                return Err(NodeError::because(
                    Reason::CeremonyNotOpen,
                    format!(
                        "ceremony {id} was used for a card already; one ceremony approves one card"
                    ),
                )
                .with("ceremony_id", id)
                .with("state", "used")
                .into());
            }
        }
        let card_id = format!(
            "card-{region}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let (kcv, _) = self
            .core
            .token
            .issue_transport_key(&so_pin, &card, &card_id)?;
        let row = self.record_transport(
            req,
            card_id,
            region,
            TransportRole::Issued,
            &kcv,
            ceremony_id,
        )?;
        // Registered, so kept for good: sealed against change and destruction. The card is
        // issued either way; a key left unsealed is sealed at the next start.
        if let Err(e) = self.core.token.seal_issuer_key(&row.card_id) {
            tracing::error!(card_id = %row.card_id, error = %e, "the issuer's transport key is registered but not sealed; the node seals it at its next start");
        }
        Ok(row)
    }

    /// Loads the transport key of `card_id` from the card into this node's token, if its KCV is
    /// the one the issuer gave (`expected_kcv`).
    pub fn load_card(
        &self,
        req: &mut Request,
        card: &CardAccess<'_>,
        card_id: &str,
        expected_kcv: &str,
    ) -> Result<TransportKey, NodeError> {
        req.param("card", card.label);
        req.param("card_id", card_id);
        req.param("expected_kcv", expected_kcv);
        self.core
            .authorize(req, Operation::Import, Some(TRANSPORT), &self.core.region())?;
        let for_region = card_id
            .strip_prefix("card-")
            .and_then(|r| r.get(..6))
            .and_then(|r| Region::parse(r).ok())
            .ok_or_else(|| {
                NodeError::invalid_field("card_id", format!("`{card_id}` is not a card id"))
            })?;
        if for_region != self.core.region() {
            return Err(NodeError::from(
                NodeError::because(
                    Reason::CardNotReady,
                    format!(
                        "card {card_id} was issued for {for_region}, not for this node's {}",
                        self.core.region()
                    ),
                )
                .with("card_id", card_id),
            ));
        }
        if self.core.store.transport_key(card_id)?.is_some() {
            return Err(NodeError::from(
                NodeError::because(
                    Reason::CardAlreadyLoaded,
                    format!("the transport key of card {card_id} is registered here already"),
                )
                .with("card_id", card_id),
            ));
        }
        let expected = expected_kcv.trim().to_ascii_uppercase();
        if expected.len() != 6 || !expected.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(NodeError::invalid_field(
                "expected_kcv",
                "give the KCV the issuer printed with the card (6 hex digits)",
            ));
        }
        check_card_label(card.label).field("card_label")?;
        check_card_pin(card.label, "security officer PIN", card.so_pin).field("card_so_pin")?;
        // One card job at a time: a second load of this card must find the first one's row.
        let _card_work = self.card_work();
        if self.core.store.transport_key(card_id)?.is_some() {
            return Err(NodeError::from(
                NodeError::because(
                    Reason::CardAlreadyLoaded,
                    format!("the transport key of card {card_id} is registered here already"),
                )
                .with("card_id", card_id),
            ));
        }
        let token = self.open_card(card.label, card.pin)?;
        let on_card = match self.core.token.card_transport_kcv(&token, card_id) {
            Ok(kcv) => kcv.to_hex(),
            Err(crate::hsm::HsmError::KeyNotFound { .. }) => {
                return Err(NodeError::because(Reason::CardNotReady, format!(
                    "card `{}` holds no transport key for {card_id} (loaded already, or another \
                     card)",
                    card.label
                )).with("card_id", card_id).into());
            }
            Err(e) => return Err(e.into()),
        };
        if !on_card.eq_ignore_ascii_case(&expected) {
            return Err(NodeError::because(Reason::CardNotReady, format!(
                "the transport key of {card_id} on card `{}` has KCV {on_card}, not {expected} as \
                 issued: this is not the card that was issued; do not load it",
                card.label
            )).with("card_id", card_id).into());
        }
        let (kcv, _) = self
            .core
            .token
            .load_transport_key(&token, card.so_pin, card_id)?;
        let row = self.record_transport(
            req,
            card_id.to_string(),
            self.core.region(),
            TransportRole::Loaded,
            &kcv,
            None,
        )?;
        // Registered: the card's copy has done its one journey.
        if let Err(e) = self.core.token.spend_card_copy(&token, card_id) {
            tracing::warn!(card_id, error = %e, "the card keeps its copy of a loaded transport key; destroy it");
        }
        Ok(row)
    }

    fn record_transport(
        &self,
        req: &mut Request,
        card_id: String,
        region: Region,
        role: TransportRole,
        kcv: &crate::hierarchy::Kcv,
        ceremony_id: Option<&str>,
    ) -> Result<TransportKey, NodeError> {
        req.key_id(&card_id);
        req.kcv(&card_id, kcv);
        let row = TransportKey {
            card_id,
            region,
            role,
            kcv: kcv.to_hex(),
            ceremony_id: ceremony_id.map(str::to_string),
            created_at: now_rfc3339(),
        };
        self.core
            .commit(req, None, |d| {
                self.core
                    .store
                    .insert_transport_key_audited(&row, d)
                    .map(|logged| ((), Some(logged.seq)))
            })
            .inspect_err(|_| {
                // Not registered, so not kept: no transport key without its row.
                let _ = self
                    .core
                    .token
                    .destroy_key(&crate::hsm::transport::transport_label(&row.card_id));
                let _ = self
                    .core
                    .token
                    .destroy_key(&crate::hsm::transport::package_mac_label(&row.card_id));
            })?;
        Ok(row)
    }

    /// One page of the transport keys this node issued or loaded, newest (last recorded)
    /// first.
    pub fn list_transport_keys(
        &self,
        req: &mut Request,
        ask: PageAsk<'_, TransportKey, TransportKeysAfter>,
    ) -> Result<Page<TransportKey, TransportKeysAfter>, NodeError> {
        self.core
            .authorize(req, Operation::Read, None, &self.core.region())?;
        let fits = ask.fits;
        let page = paging::fill(
            PageAsk {
                size: ask.size,
                after: ask.after,
                fits: &mut |(_, key): &(TransportKeysAfter, TransportKey)| fits(key),
            },
            |after, n| Ok(self.core.store.transport_keys_page(after.copied(), n)?),
            |(place, _)| *place,
            |_| true,
        )?;
        Ok(page.map(|(_, key)| key))
    }

    /// Wraps `key_id` (a sub-key made for `recipient`) as a key package for that region, under
    /// the transport key of `card_id` or of the newest card issued for the region.
    pub fn export_key(
        &self,
        req: &mut Request,
        key_id: &KeyId,
        recipient: Region,
        card_id: Option<&str>,
    ) -> Result<Vec<u8>, NodeError> {
        let key = self
            .core
            .authorize_on_key(req, Operation::Export, key_id, Some(&recipient))?;
        if key.region != recipient {
            return Err(NodeError::invalid_field(
                "recipient_region",
                format!(
                    "key {} was made for {}; a package for {recipient} cannot carry it",
                    key.id, key.region
                ),
            ));
        }
        if !key.region.is_descendant_of(&self.core.region()) {
            return Err(NodeError::FailedPrecondition(format!(
                "key {} is this node's own ({}); a node exports only sub-keys it made for the \
                 regions below it",
                key.id, key.region
            )));
        }
        if key.state != KeyState::Active {
            return Err(NodeError::from(
                NodeError::because(
                    Reason::WrongKeyState,
                    format!(
                        "key {} is {}; only an active key is exported",
                        key.id, key.state
                    ),
                )
                .with("key_id", &key.id)
                .with("state", key.state),
            ));
        }
        let spec = Core::key_type(&self.core.policy(), key.key_type.as_str())?;
        if !spec.exportable {
            return Err(NodeError::from(
                NodeError::because(
                    Reason::KeyTypeNotAllowedHere,
                    format!("key type `{}` is not exportable", spec.name.as_str()),
                )
                .with("key_type", spec.name.as_str()),
            ));
        }
        let card = self
            .core
            .store
            .transport_keys()?
            .into_iter()
            .find(|t| {
                t.role == TransportRole::Issued
                    && t.region == recipient
                    && card_id.is_none_or(|c| c == t.card_id)
            })
            .ok_or_else(|| {
                NodeError::because(
                    Reason::CardNotReady,
                    format!(
                        "no transport key card {}was issued here for {recipient}; issue one \
                         first (`hkms transport issue-card`)",
                        card_id.map(|c| format!("{c} ")).unwrap_or_default()
                    ),
                )
                .with("region", recipient)
            })?;
        let parent_kcv = match &key.parent_id {
            Some(p) => self.core.key_record(p)?.kcv.to_hex(),
            None => String::new(),
        };
        let now = SystemTime::now();
        let header = PackageHeader {
            package_id: format!("p-{}", uuid::Uuid::new_v4().simple()),
            key_type: key.key_type.as_str().into(),
            algorithm: key.algorithm.as_str().into(),
            usage: spec.usage.as_str().into(),
            kcv: key.kcv.to_hex(),
            kcv_method: key.kcv.method.as_str().into(),
            parent_kcv,
            issuer_node: self.core.name().to_string(),
            issuer_region: self.core.region().to_string(),
            source_key_id: key.id.to_string(),
            recipient_region: recipient.to_string(),
            card_id: card.card_id.clone(),
            version: key.version,
            created_at: rfc3339(now),
            not_after: rfc3339(now + self.package_ttl),
            card_serial: String::new(),
        };
        req.param("package_id", header.package_id.clone());
        req.param("card_id", card.card_id.clone());
        let seal = || -> Result<Vec<u8>, NodeError> {
            let wrapped = self
                .core
                .token
                .wrap_for_transport(&card.card_id, &key.ck_label)?;
            self.core.seal_package(header.clone(), wrapped)
        };
        // A remembered handle of an object destroyed since fails once; then the token is
        // searched again, and says what is gone.
        let sealed = match seal() {
            Err(NodeError::Hsm(e)) if e.is_invalid_handle() => seal(),
            other => other,
        };
        sealed.map_err(|e| match e {
            NodeError::Hsm(h) => card_objects_gone(h, &card),
            other => other,
        })
    }

    /// Checks and imports a key package made for this node.
    pub fn import_key(&self, req: &mut Request, bytes: &[u8]) -> Result<KeyRecord, NodeError> {
        let pkg = Package::decode(bytes)
            .map_err(|e| NodeError::because(Reason::PackageInvalid, e.to_string()))?;
        let h = &pkg.header;
        req.param("package_id", h.package_id.clone());
        req.param("issuer_node", h.issuer_node.clone());
        req.param("card_id", h.card_id.clone());
        req.param("key_type", h.key_type.clone());
        if h.recipient_region != self.core.region().as_str() {
            return Err(NodeError::from(
                NodeError::because(
                    Reason::PackageInvalid,
                    format!(
                        "the package is for region {}, and this node is {}",
                        h.recipient_region,
                        self.core.region()
                    ),
                )
                .with("package_id", &h.package_id),
            ));
        }
        self.core.authorize(
            req,
            Operation::Import,
            Some(&h.key_type),
            &self.core.region(),
        )?;
        let card = self
            .core
            .store
            .transport_key(&h.card_id)?
            .filter(|t| t.role == TransportRole::Loaded)
            .ok_or_else(|| {
                NodeError::because(
                    Reason::CardNotReady,
                    format!(
                        "no transport key of card {} is loaded here: the package was wrapped \
                         for another card, or load the card first",
                        h.card_id
                    ),
                )
                .with("card_id", &h.card_id)
            })?;
        let signed = Package::signed_bytes(&pkg.header_bytes, &pkg.wrapped).map_err(|e| {
            NodeError::because(Reason::PackageInvalid, e.to_string())
                .with("package_id", &h.package_id)
        })?;
        let mac = self.core.token.package_mac(&card.card_id, &signed)?;
        if !same(&mac, &pkg.mac) {
            return Err(NodeError::because(
                Reason::PackageInvalid,
                "the package's MAC does not verify: its header, key or MAC was changed, or it was \
                 made for another card; nothing was imported",
            )
            .with("package_id", &h.package_id)
            .into());
        }
        let not_after = humantime::parse_rfc3339(&h.not_after).map_err(|_| {
            NodeError::from(
                NodeError::because(
                    Reason::PackageInvalid,
                    "the package's not_after is malformed",
                )
                .with("package_id", &h.package_id),
            )
        })?;
        if SystemTime::now() > not_after {
            return Err(NodeError::from(
                NodeError::because(
                    Reason::PackageStale,
                    format!(
                        "the package expired at {}; ask the issuer for a new one",
                        h.not_after
                    ),
                )
                .with("package_id", &h.package_id),
            ));
        }
        let spec = Core::key_type(&self.core.policy(), &h.key_type)?;
        let algorithm: Algorithm = h.algorithm.parse().map_err(|_| {
            NodeError::from(
                NodeError::because(
                    Reason::PackageInvalid,
                    format!("unknown algorithm `{}`", h.algorithm),
                )
                .with("package_id", &h.package_id),
            )
        })?;
        if algorithm != crate::hsm::derived_algorithm(spec.algorithm) && algorithm != spec.algorithm
        {
            return Err(NodeError::from(
                NodeError::because(
                    Reason::PackageInvalid,
                    format!(
                        "the package says {} but key type `{}` is {}",
                        h.algorithm,
                        h.key_type,
                        spec.algorithm.as_str()
                    ),
                )
                .with("package_id", &h.package_id),
            ));
        }
        // A package carries a diversified sub-key: a derive key, which the loaded transport
        // key's unwrap template insists on.
        if spec.usage != Usage::Derive || h.usage != Usage::Derive.as_str() {
            return Err(NodeError::because(
                Reason::PackageInvalid,
                format!(
                    "the package carries a `{}` key of usage {}; packages carry only diversified \
                     sub-keys, whose usage is derive",
                    h.key_type, h.usage
                ),
            )
            .with("package_id", &h.package_id)
            .into());
        }
        // The wrapped length gives the key's length away: a longer key under the header's
        // algorithm would be unwrapped as it is.
        let expected = crate::transport::wrapped_len(algorithm.key_len());
        if pkg.wrapped.len() != expected {
            return Err(NodeError::because(Reason::PackageInvalid, format!(
                "the package's wrapped key is {} bytes, and a wrapped {} key is {expected}: the \
                 key is not the length its header says; nothing was imported",
                pkg.wrapped.len(),
                algorithm.as_str()
            )).with("package_id", &h.package_id).into());
        }
        if self.core.store.package_imported(&h.package_id)? {
            return Err(NodeError::from(
                NodeError::because(
                    Reason::PackageAlreadyImported,
                    format!("package {} was imported already", h.package_id),
                )
                .with("package_id", &h.package_id),
            ));
        }
        let newest = self
            .core
            .store
            .list_keys(&KeyFilter {
                key_type: Some(KeyTypeName::parse(&h.key_type)?),
                region: Some(self.core.region()),
                ..KeyFilter::default()
            })?
            .into_iter()
            .filter(|k| k.state != KeyState::Destroyed)
            .map(|k| k.version)
            .max();
        if let Some(v) = newest
            && v >= h.version
        {
            return Err(NodeError::because(
                Reason::PackageStale,
                format!(
                    "a `{}` key of version {v} is registered here; a package of version {} cannot \
                     replace it (replay of an older package)",
                    h.key_type, h.version
                ),
            )
            .with("package_id", &h.package_id)
            .into());
        }
        let id = KeyId::new_random();
        let kcv = self.core.token.unwrap_from_transport(
            &card.card_id,
            &pkg.wrapped,
            &SecretKeySpec {
                algorithm,
                usage: spec.usage,
                exportable: false,
                label: id.ck_label(),
                id: id.ck_id(),
                lifetime: Lifetime::Token,
            },
        )?;
        if !kcv.to_hex().eq_ignore_ascii_case(&h.kcv) {
            let _ = self.core.token.destroy_key(&id.ck_label());
            return Err(NodeError::from(
                NodeError::because(
                    Reason::PackageInvalid,
                    format!(
                        "the unwrapped key's KCV {} is not the package's {}; nothing was imported",
                        kcv.to_hex(),
                        h.kcv
                    ),
                )
                .with("package_id", &h.package_id),
            ));
        }
        let record = self.core.own_key_record(
            id,
            KeyTypeName::parse(&h.key_type)?,
            algorithm,
            kcv,
            h.version,
        );
        req.made_key(&record);
        let origin = KeyOrigin {
            origin_node: h.issuer_node.clone(),
            origin_key_id: h.source_key_id.clone(),
            package_id: h.package_id.clone(),
            parent_kcv: h.parent_kcv.clone(),
            card_id: card.card_id.clone(),
        };
        let registered = self.core.commit(req, None, |d| {
            self.core
                .store
                .insert_imported_key_audited(&record, &origin, d)
                .map(|logged| ((), Some(logged.seq)))
        });
        match registered {
            Ok(()) => Ok(record),
            Err(e) => {
                let _ = self.core.token.destroy_key(&record.ck_label);
                Err(e)
            }
        }
    }
}

/// A failure because the card's transport key or package MAC key is gone from the token
/// (destroyed outside hkms): the card is of no more use, which the issuer must be told.
fn card_objects_gone(e: crate::hsm::HsmError, card: &TransportKey) -> NodeError {
    use crate::hsm::HsmError;
    use crate::hsm::transport::{package_mac_label, transport_label};
    let what = match &e {
        HsmError::KeyNotFound { label } if *label == transport_label(&card.card_id) => {
            "transport key"
        }
        HsmError::KeyNotFound { label } if *label == package_mac_label(&card.card_id) => {
            "package MAC key"
        }
        _ => return NodeError::Hsm(e),
    };
    NodeError::from(
        NodeError::because(
            Reason::CardNotReady,
            format!(
                "the {what} of card {} for {} is no longer on this node's token (destroyed outside \
                 hkms; `hkms keys orphans` lists what is missing); issue a new card for {} (`hkms \
                 transport issue-card`)",
                card.card_id, card.region, card.region
            ),
        )
        .with("card_id", &card.card_id),
    )
}

/// The longest card label: PKCS#11 token labels are 32 bytes.
const MAX_CARD_LABEL: usize = 32;

/// The longest card PIN sent to a card. Longer ones are refused here: sent on, a wrong PIN
/// costs one of the card's tries, and nothing is gained by handing a token megabytes.
pub(crate) const MAX_CARD_PIN: usize = 64;

/// A card label the node may name in its log: 1-32 bytes, nothing invisible.
fn check_card_label(label: &str) -> Result<(), NodeError> {
    if label.is_empty()
        || label.len() > MAX_CARD_LABEL
        || crate::untrusted_text::has_invisible(label)
    {
        return Err(NodeError::InvalidArgument(format!(
            "a card label is 1-{MAX_CARD_LABEL} bytes of visible characters, as printed on \
             the card; got {} bytes",
            label.len()
        )));
    }
    Ok(())
}

/// A card PIN worth a try on the card: given, and at most [`MAX_CARD_PIN`] bytes.
fn check_card_pin(label: &str, which: &str, pin: &SecretString) -> Result<(), NodeError> {
    let len = secrecy::ExposeSecret::expose_secret(pin).len();
    if len == 0 {
        // Sent on, an empty PIN would cost one of the card's tries.
        return Err(NodeError::InvalidArgument(format!(
            "no {which} was given for card `{label}`"
        )));
    }
    if len > MAX_CARD_PIN {
        return Err(NodeError::InvalidArgument(format!(
            "the {which} given for card `{label}` is {len} bytes; a card PIN is at most \
             {MAX_CARD_PIN} (it was not tried on the card)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_pins_are_bounded_before_any_card_sees_them() {
        let pin = |s: &str| SecretString::from(s.to_string());
        assert!(check_card_pin("card-1", "PIN", &pin("123456")).is_ok());
        assert!(check_card_pin("card-1", "PIN", &pin(&"9".repeat(MAX_CARD_PIN))).is_ok());
        let empty = check_card_pin("card-1", "PIN", &pin("")).unwrap_err();
        assert!(empty.to_string().contains("no PIN was given"), "{empty}");
        let huge = "7".repeat(1 << 20);
        let err = check_card_pin("card-1", "PIN", &pin(&huge)).unwrap_err();
        assert!(matches!(err, NodeError::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("not tried on the card"), "{err}");
        assert!(
            !err.to_string().contains("7777"),
            "the PIN is not repeated: {err}"
        );
        let long = "7".repeat(MAX_CARD_PIN + 1);
        assert!(check_card_pin("card-1", "PIN", &pin(&long)).is_err());
    }

    #[test]
    fn card_labels_are_short_and_visible() {
        assert!(check_card_label("transport-440000-01").is_ok());
        assert!(check_card_label(&"x".repeat(32)).is_ok());
        for bad in [
            "",
            &"x".repeat(33),
            "card\n1",
            "card\u{202E}1",
            "card\u{200B}",
        ] {
            let err = check_card_label(bad).unwrap_err();
            assert!(
                matches!(err, NodeError::InvalidArgument(_)),
                "{bad:?}: {err}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn a_card_pin_reaches_the_card_only_within_its_bounds(
            len in 0usize..300,
            label in "\\PC{0,40}|[a-z0-9-]{1,32}"
        ) {
            let pin = SecretString::from("5".repeat(len));
            let label_ok = check_card_label(&label).is_ok();
            proptest::prop_assert_eq!(
                label_ok,
                (1..=MAX_CARD_LABEL).contains(&label.len())
                    && !crate::untrusted_text::has_invisible(&label)
            );
            proptest::prop_assert_eq!(
                check_card_pin("card", "PIN", &pin).is_ok(),
                (1..=MAX_CARD_PIN).contains(&len)
            );
        }
    }
}
