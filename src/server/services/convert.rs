//! The proto enums and the domain types they stand for, in one place.
//!
//! Each enum of `proto/hkms/v1/` has its domain type (`hierarchy::Tier` for `proto::Tier`, …)
//! and each domain value its word, the `as_str` the policy files, the registry, the audit
//! records and the command line use (`municipal`, `pre-active`). A domain value always has its
//! proto value (`From`); a proto value has a domain value unless it is UNSPECIFIED (`TryFrom`,
//! refused with [`EnumError::Unspecified`]). A number this build does not know never becomes a
//! value: it is refused with [`EnumError::UnknownNumber`], an INVALID_ARGUMENT.
//!
//! A request's enum field is recorded as its word and read by `node::input`, like every other
//! field: [`as_node_str`] gives that word, `""` for UNSPECIFIED, which reads as an empty string
//! always did (no filter, or a missing value refused with INVALID_ARGUMENT). The command line goes the other way with
//! [`from_word`] and prints with [`word`].

use std::borrow::Cow;

use crate::hierarchy::{Algorithm, KcvMethod, KeyState, Tier};
use crate::node::{CeremonyState, NodeError};
use crate::policy::Operation;
use crate::proto;
use crate::transport::TransportRole;

/// Why an enum value, a number or a word, names no domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnumError {
    /// The UNSPECIFIED value, where a value is needed.
    #[error("no {what} given ({name}); use one of: {known}")]
    Unspecified {
        /// What the enum holds, e.g. "tier".
        what: &'static str,
        /// The UNSPECIFIED value's proto name.
        name: &'static str,
        /// The values there are.
        known: String,
    },
    /// A number that is no value of the enum in this build (a newer client, or garbage).
    #[error("{number} is not a {what} this node knows; use one of: {known}")]
    UnknownNumber {
        /// What the enum holds.
        what: &'static str,
        /// The number sent.
        number: i32,
        /// The values there are, by their proto names.
        known: String,
    },
    /// A word that names no value.
    #[error("unknown {what} \"{word}\"; use one of: {known}")]
    UnknownWord {
        /// What the enum holds.
        what: &'static str,
        /// The word given.
        word: String,
        /// The words there are.
        known: String,
    },
}

impl From<EnumError> for NodeError {
    fn from(e: EnumError) -> NodeError {
        NodeError::InvalidArgument(e.to_string())
    }
}

/// A proto enum whose values, UNSPECIFIED aside, stand for a domain value with a word.
///
/// Its values are numbered 0 (UNSPECIFIED), then 1, 2, … without gaps, as `proto/hkms/v1/`
/// declares them; [`values`] relies on it.
pub trait WireEnum:
    Copy + Default + PartialEq + Into<i32> + TryFrom<i32, Error = prost::UnknownEnumValue>
{
    /// What the enum holds, for messages: "tier", "key state".
    const WHAT: &'static str;

    /// The value's name in the proto, e.g. `TIER_MUNICIPAL`.
    fn proto_name(self) -> &'static str;

    /// The domain's word for the value (`municipal`), or `None` for UNSPECIFIED.
    fn word(self) -> Option<&'static str>;
}

/// The values of `P` that name something, in proto order (UNSPECIFIED left out).
pub fn values<P: WireEnum>() -> impl Iterator<Item = P> {
    (1..).map_while(|n| P::try_from(n).ok())
}

fn known_words<P: WireEnum>() -> String {
    values::<P>()
        .filter_map(P::word)
        .collect::<Vec<_>>()
        .join(", ")
}

fn known_names<P: WireEnum>() -> String {
    values::<P>()
        .map(P::proto_name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn unspecified<P: WireEnum>() -> EnumError {
    EnumError::Unspecified {
        what: P::WHAT,
        name: P::default().proto_name(),
        known: known_names::<P>(),
    }
}

/// The value a request's raw field holds; a number `P` does not have is refused.
pub fn from_number<P: WireEnum>(number: i32) -> Result<P, EnumError> {
    P::try_from(number).map_err(|_| EnumError::UnknownNumber {
        what: P::WHAT,
        number,
        known: known_names::<P>(),
    })
}

/// The word the node's use cases take for a request's raw field: the value's word, or `""` for
/// UNSPECIFIED (the node reads it as it read an empty string: no filter, or a missing value it
/// refuses with INVALID_ARGUMENT). A number `P` does not have is refused with INVALID_ARGUMENT.
pub fn as_node_str<P: WireEnum>(number: i32) -> Result<&'static str, NodeError> {
    Ok(from_number::<P>(number)?.word().unwrap_or_default())
}

/// The value named by the domain's `word` (`municipal`, `pre-active`, as the command line takes
/// them); the empty word is UNSPECIFIED, as an empty string was before these fields were enums.
pub fn from_word<P: WireEnum>(word: &str) -> Result<P, EnumError> {
    if word.is_empty() {
        return Ok(P::default());
    }
    values::<P>()
        .find(|p| p.word() == Some(word))
        .ok_or_else(|| EnumError::UnknownWord {
            what: P::WHAT,
            word: word.to_owned(),
            known: known_words::<P>(),
        })
}

/// The word to show for a raw field of an answer: the value's word; `unspecified`, or the
/// number itself, for what the node never sends (UNSPECIFIED, or a value of a newer node).
pub fn word<P: WireEnum>(number: i32) -> Cow<'static, str> {
    match P::try_from(number) {
        Ok(p) => p.word().map_or(Cow::Borrowed("unspecified"), Cow::Borrowed),
        Err(_) => Cow::Owned(number.to_string()),
    }
}

// ---- hierarchy::Tier ----

impl From<Tier> for proto::Tier {
    fn from(t: Tier) -> proto::Tier {
        match t {
            Tier::National => proto::Tier::National,
            Tier::Provincial => proto::Tier::Provincial,
            Tier::Municipal => proto::Tier::Municipal,
        }
    }
}

impl TryFrom<proto::Tier> for Tier {
    type Error = EnumError;

    fn try_from(t: proto::Tier) -> Result<Tier, EnumError> {
        match t {
            proto::Tier::Unspecified => Err(unspecified::<proto::Tier>()),
            proto::Tier::National => Ok(Tier::National),
            proto::Tier::Provincial => Ok(Tier::Provincial),
            proto::Tier::Municipal => Ok(Tier::Municipal),
        }
    }
}

impl WireEnum for proto::Tier {
    const WHAT: &'static str = "tier";

    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }

    fn word(self) -> Option<&'static str> {
        Tier::try_from(self).ok().map(Tier::as_str)
    }
}

// ---- hierarchy::Algorithm ----

impl From<Algorithm> for proto::Algorithm {
    fn from(a: Algorithm) -> proto::Algorithm {
        match a {
            Algorithm::Aes128 => proto::Algorithm::Aes128,
            Algorithm::Aes256 => proto::Algorithm::Aes256,
            Algorithm::Des2 => proto::Algorithm::Des2,
        }
    }
}

impl TryFrom<proto::Algorithm> for Algorithm {
    type Error = EnumError;

    fn try_from(a: proto::Algorithm) -> Result<Algorithm, EnumError> {
        match a {
            proto::Algorithm::Unspecified => Err(unspecified::<proto::Algorithm>()),
            proto::Algorithm::Aes128 => Ok(Algorithm::Aes128),
            proto::Algorithm::Aes256 => Ok(Algorithm::Aes256),
            proto::Algorithm::Des2 => Ok(Algorithm::Des2),
        }
    }
}

impl WireEnum for proto::Algorithm {
    const WHAT: &'static str = "algorithm";

    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }

    fn word(self) -> Option<&'static str> {
        Algorithm::try_from(self).ok().map(Algorithm::as_str)
    }
}

// ---- hierarchy::KcvMethod ----

impl From<KcvMethod> for proto::KcvMethod {
    fn from(m: KcvMethod) -> proto::KcvMethod {
        match m {
            KcvMethod::AesCmac => proto::KcvMethod::AesCmac,
            KcvMethod::Des3Cmac => proto::KcvMethod::Des3Cmac,
            KcvMethod::Des3Ecb => proto::KcvMethod::Des3Ecb,
        }
    }
}

impl TryFrom<proto::KcvMethod> for KcvMethod {
    type Error = EnumError;

    fn try_from(m: proto::KcvMethod) -> Result<KcvMethod, EnumError> {
        match m {
            proto::KcvMethod::Unspecified => Err(unspecified::<proto::KcvMethod>()),
            proto::KcvMethod::AesCmac => Ok(KcvMethod::AesCmac),
            proto::KcvMethod::Des3Cmac => Ok(KcvMethod::Des3Cmac),
            proto::KcvMethod::Des3Ecb => Ok(KcvMethod::Des3Ecb),
        }
    }
}

impl WireEnum for proto::KcvMethod {
    const WHAT: &'static str = "KCV method";

    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }

    fn word(self) -> Option<&'static str> {
        KcvMethod::try_from(self).ok().map(KcvMethod::as_str)
    }
}

// ---- hierarchy::KeyState ----

impl From<KeyState> for proto::KeyState {
    fn from(s: KeyState) -> proto::KeyState {
        match s {
            KeyState::PreActive => proto::KeyState::PreActive,
            KeyState::Active => proto::KeyState::Active,
            KeyState::Suspended => proto::KeyState::Suspended,
            KeyState::Retired => proto::KeyState::Retired,
            KeyState::Destroyed => proto::KeyState::Destroyed,
        }
    }
}

impl TryFrom<proto::KeyState> for KeyState {
    type Error = EnumError;

    fn try_from(s: proto::KeyState) -> Result<KeyState, EnumError> {
        match s {
            proto::KeyState::Unspecified => Err(unspecified::<proto::KeyState>()),
            proto::KeyState::PreActive => Ok(KeyState::PreActive),
            proto::KeyState::Active => Ok(KeyState::Active),
            proto::KeyState::Suspended => Ok(KeyState::Suspended),
            proto::KeyState::Retired => Ok(KeyState::Retired),
            proto::KeyState::Destroyed => Ok(KeyState::Destroyed),
        }
    }
}

impl WireEnum for proto::KeyState {
    const WHAT: &'static str = "key state";

    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }

    fn word(self) -> Option<&'static str> {
        KeyState::try_from(self).ok().map(KeyState::as_str)
    }
}

// ---- policy::Operation ----

impl From<Operation> for proto::Operation {
    fn from(o: Operation) -> proto::Operation {
        match o {
            Operation::Generate => proto::Operation::Generate,
            Operation::Derive => proto::Operation::Derive,
            Operation::Export => proto::Operation::Export,
            Operation::Import => proto::Operation::Import,
            Operation::Use => proto::Operation::Use,
            Operation::Read => proto::Operation::Read,
            Operation::ReadAudit => proto::Operation::ReadAudit,
            Operation::FindId => proto::Operation::FindId,
            Operation::Approve => proto::Operation::Approve,
            Operation::Manage => proto::Operation::Manage,
            Operation::Witness => proto::Operation::Witness,
        }
    }
}

impl TryFrom<proto::Operation> for Operation {
    type Error = EnumError;

    fn try_from(o: proto::Operation) -> Result<Operation, EnumError> {
        match o {
            proto::Operation::Unspecified => Err(unspecified::<proto::Operation>()),
            proto::Operation::Generate => Ok(Operation::Generate),
            proto::Operation::Derive => Ok(Operation::Derive),
            proto::Operation::Export => Ok(Operation::Export),
            proto::Operation::Import => Ok(Operation::Import),
            proto::Operation::Use => Ok(Operation::Use),
            proto::Operation::Read => Ok(Operation::Read),
            proto::Operation::ReadAudit => Ok(Operation::ReadAudit),
            proto::Operation::FindId => Ok(Operation::FindId),
            proto::Operation::Approve => Ok(Operation::Approve),
            proto::Operation::Manage => Ok(Operation::Manage),
            proto::Operation::Witness => Ok(Operation::Witness),
        }
    }
}

impl WireEnum for proto::Operation {
    const WHAT: &'static str = "operation";

    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }

    fn word(self) -> Option<&'static str> {
        Operation::try_from(self).ok().map(Operation::as_str)
    }
}

// ---- node::CeremonyState ----

impl From<CeremonyState> for proto::CeremonyState {
    fn from(s: CeremonyState) -> proto::CeremonyState {
        match s {
            CeremonyState::Open => proto::CeremonyState::Open,
            CeremonyState::Running => proto::CeremonyState::Running,
            CeremonyState::Done => proto::CeremonyState::Done,
            CeremonyState::Failed => proto::CeremonyState::Failed,
            CeremonyState::Cancelled => proto::CeremonyState::Cancelled,
            CeremonyState::Expired => proto::CeremonyState::Expired,
            CeremonyState::Used => proto::CeremonyState::Used,
        }
    }
}

impl TryFrom<proto::CeremonyState> for CeremonyState {
    type Error = EnumError;

    fn try_from(s: proto::CeremonyState) -> Result<CeremonyState, EnumError> {
        match s {
            proto::CeremonyState::Unspecified => Err(unspecified::<proto::CeremonyState>()),
            proto::CeremonyState::Open => Ok(CeremonyState::Open),
            proto::CeremonyState::Running => Ok(CeremonyState::Running),
            proto::CeremonyState::Done => Ok(CeremonyState::Done),
            proto::CeremonyState::Failed => Ok(CeremonyState::Failed),
            proto::CeremonyState::Cancelled => Ok(CeremonyState::Cancelled),
            proto::CeremonyState::Expired => Ok(CeremonyState::Expired),
            proto::CeremonyState::Used => Ok(CeremonyState::Used),
        }
    }
}

impl WireEnum for proto::CeremonyState {
    const WHAT: &'static str = "ceremony state";

    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }

    fn word(self) -> Option<&'static str> {
        CeremonyState::try_from(self)
            .ok()
            .map(CeremonyState::as_str)
    }
}

// ---- a transport key's role: the registry's word (`issued`, `loaded`), no domain type ----

impl From<TransportRole> for proto::TransportKeyRole {
    fn from(role: TransportRole) -> Self {
        match role {
            TransportRole::Issued => proto::TransportKeyRole::Issued,
            TransportRole::Loaded => proto::TransportKeyRole::Loaded,
        }
    }
}

impl WireEnum for proto::TransportKeyRole {
    const WHAT: &'static str = "transport key role";

    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }

    fn word(self) -> Option<&'static str> {
        match self {
            proto::TransportKeyRole::Unspecified => None,
            proto::TransportKeyRole::Issued => Some("issued"),
            proto::TransportKeyRole::Loaded => Some("loaded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every domain value goes to the wire and back, and its word is the domain's.
    fn round_trips<D, P>(all: &[D], as_str: fn(D) -> &'static str)
    where
        D: Copy + PartialEq + std::fmt::Debug + TryFrom<P, Error = EnumError>,
        P: WireEnum + From<D> + std::fmt::Debug,
    {
        for &d in all {
            let p = P::from(d);
            assert_eq!(D::try_from(p), Ok(d));
            assert_eq!(p.word(), Some(as_str(d)));
            assert_eq!(from_word::<P>(as_str(d)), Ok(p));
            assert_eq!(as_node_str::<P>(p.into()).ok(), Some(as_str(d)));
            assert_eq!(word::<P>(p.into()), as_str(d));
        }
        // The wire has exactly the domain's values, numbered without gaps.
        assert_eq!(values::<P>().count(), all.len());
        assert!(matches!(
            D::try_from(P::default()),
            Err(EnumError::Unspecified { .. })
        ));
    }

    #[test]
    fn every_domain_value_has_its_wire_value_and_back() {
        round_trips::<Tier, proto::Tier>(&Tier::ALL, Tier::as_str);
        round_trips::<Algorithm, proto::Algorithm>(&Algorithm::ALL, Algorithm::as_str);
        round_trips::<KcvMethod, proto::KcvMethod>(&KcvMethod::ALL, KcvMethod::as_str);
        round_trips::<KeyState, proto::KeyState>(&KeyState::ALL, KeyState::as_str);
        round_trips::<Operation, proto::Operation>(&Operation::ALL, Operation::as_str);
        round_trips::<CeremonyState, proto::CeremonyState>(
            &CeremonyState::ALL,
            CeremonyState::as_str,
        );
    }

    #[test]
    fn transport_key_roles_are_the_registry_words() {
        for role in [TransportRole::Issued, TransportRole::Loaded] {
            let wire = proto::TransportKeyRole::from(role);
            assert_eq!(wire.word(), Some(role.as_str()));
        }
        assert_eq!(word::<proto::TransportKeyRole>(2), "loaded");
    }

    #[test]
    fn unspecified_is_the_empty_word_for_the_node() {
        // As an empty string was: no filter, or a value the node refuses as missing.
        assert_eq!(as_node_str::<proto::Tier>(0).ok(), Some(""));
        assert_eq!(as_node_str::<proto::KeyState>(0).ok(), Some(""));
        assert_eq!(from_word::<proto::Tier>(""), Ok(proto::Tier::Unspecified));
        assert_eq!(word::<proto::KeyState>(0), "unspecified");
    }

    #[test]
    fn unknown_numbers_and_words_are_refused_with_what_there_is() {
        let err = as_node_str::<proto::KeyState>(99).expect_err("99 is no key state");
        assert!(matches!(err, NodeError::InvalidArgument(_)), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("99 is not a key state") && msg.contains("KEY_STATE_RETIRED"),
            "{msg}"
        );
        assert_eq!(as_node_str::<proto::Tier>(-1).ok(), None);
        let msg = from_word::<proto::Tier>("county")
            .expect_err("no county tier")
            .to_string();
        assert_eq!(
            msg,
            "unknown tier \"county\"; use one of: national, provincial, municipal"
        );
        // Words are the domain's exactly: not the proto names, not another case.
        assert!(from_word::<proto::KeyState>("KEY_STATE_ACTIVE").is_err());
        assert!(from_word::<proto::KeyState>("Active").is_err());
        assert_eq!(word::<proto::Tier>(7), "7");
        let msg = Tier::try_from(proto::Tier::Unspecified)
            .expect_err("unspecified")
            .to_string();
        assert_eq!(
            msg,
            "no tier given (TIER_UNSPECIFIED); use one of: TIER_NATIONAL, TIER_PROVINCIAL, \
             TIER_MUNICIPAL"
        );
    }
}
