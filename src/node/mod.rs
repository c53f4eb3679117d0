//! One hkms node: its identity (tier, region), its token, its registry and its key types, and
//! the use cases that tie them together. Everything here is synchronous; the gRPC layer runs it
//! on blocking threads.

mod error;
mod keys;
mod orphans;

use std::path::Path;

pub use error::{ErrorClass, NodeError};
pub use orphans::OrphanReport;

use crate::config::NodeConfig;
use crate::hierarchy::{KeyTypeCatalogue, KeyTypeSpec, Region, Tier};
use crate::hsm::Hsm;
use crate::store::Store;

/// A running node's state.
pub struct Node {
    name: String,
    tier: Tier,
    region: Region,
    hsm: Hsm,
    store: Store,
    catalogue: KeyTypeCatalogue,
    /// Serialises generation so that two keys of one type never get the same version number.
    generate_lock: std::sync::Mutex<()>,
}

impl Node {
    /// Loads the key types, opens the registry and logs in to the token. Any failure here means
    /// the node must not serve; the error says what to fix.
    pub fn open(config: &NodeConfig) -> Result<Node, NodeError> {
        let catalogue = load_catalogue(&config.policy)?;
        let store = Store::open(&config.database_path())?;
        let hsm = Hsm::open(&config.hsm)?;
        Ok(Node {
            name: config.name.clone(),
            tier: config.tier,
            region: config.region,
            hsm,
            store,
            catalogue,
            generate_lock: std::sync::Mutex::new(()),
        })
    }

    /// The node's name from its config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's tier.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The node's region.
    pub fn region(&self) -> Region {
        self.region
    }

    /// The node's token.
    pub fn hsm(&self) -> &Hsm {
        &self.hsm
    }

    /// The node's registry.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the token and the registry answer, for health reporting.
    pub fn health(&self) -> (Result<(), NodeError>, Result<(), NodeError>) {
        (
            self.hsm.check_alive().map_err(NodeError::from),
            self.store.ping().map_err(NodeError::from),
        )
    }

    fn key_type(&self, name: &str) -> Result<&KeyTypeSpec, NodeError> {
        self.catalogue.get(name).ok_or_else(|| {
            NodeError::InvalidArgument(format!(
                "unknown key type `{name}`; the policy declares: {}",
                self.catalogue.names().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

/// Reads the key-type catalogue from the policy file.
pub fn load_catalogue(path: &Path) -> Result<KeyTypeCatalogue, NodeError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        NodeError::FailedPrecondition(format!("cannot read policy file {}: {e}", path.display()))
    })?;
    KeyTypeCatalogue::from_toml_str(&text, &path.display().to_string())
        .map_err(|e| NodeError::FailedPrecondition(e.to_string()))
}
