//! The key hierarchy of the programme, as pure values with no I/O.
//!
//! - [`Tier`] and [`Region`]: where a node or key sits (ministry `000000`, province `XX0000`,
//!   city `XXYY00`; there is no county tier).
//! - [`Factor`]: the diversification factor `D` and the block `D || ~D` (docs/design.md §3).
//! - [`Algorithm`], [`DiversificationFamily`], [`Kcv`]: what a key is and how it is checked.
//! - [`KeyTypeCatalogue`]: the key types a policy declares, with their rules.
//! - [`KeyId`]: opaque random ids and their PKCS#11 `CKA_ID`/`CKA_LABEL`.
//! - [`KeyState`]: the SP 800-57 lifecycle.
//! - [`KeyRecord`]: the metadata of one key; [`KeyFilter`] selects some.
//! - [`CardSerial`]: a card's application serial number, the factor of its keys.
//!
//! Every constructor validates, so a value of these types is always well formed.

mod algorithm;
mod card_serial;
mod error;
mod factor;
mod key_id;
mod key_record;
mod key_type;
mod lifecycle;
mod region;
mod tier;

pub use algorithm::{Algorithm, DiversificationFamily, Kcv, KcvMethod};
pub use card_serial::CardSerial;
pub use error::HierarchyError;
pub use factor::Factor;
pub use key_id::KeyId;
pub use key_record::{KeyFilter, KeyRecord};
pub(crate) use key_type::line_of;
pub use key_type::{KeyTypeCatalogue, KeyTypeName, KeyTypeSpec, Usage};
pub use lifecycle::KeyState;
pub use region::Region;
pub use tier::Tier;
