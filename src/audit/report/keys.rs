//! The key hierarchy as the records tell it (national → provincial → municipal): every key a
//! successful request made, with its type, region, parent, KCV, origin and its state after the
//! state changes the records hold.
//!
//! Records name what they need: a key made carries `key_type` and `region` in its parameters,
//! a derived key its `parent_id`, an imported one its `issuer_node` and `package_id`
//! (docs/audit-format.md §1). Records written before `key_type` and `region` were added leave
//! them unknown, except a derived key's type, which is its parent's. A key the records only
//! name (the parent of a derivation, a key whose state changed, made before the bundle's first
//! record) is shown as made earlier.

use std::collections::HashMap;

use crate::audit::record::{AuditRecord, KcvEntry};
use crate::hierarchy::Region;

use super::model::EXECUTE;

/// RPC that generates a key outside a ceremony.
const GENERATE: &str = "GenerateKey";
/// RPC that diversifies a key for a child region.
const DERIVE: &str = "DeriveSubKey";
/// RPC that imports a key package.
const IMPORT: &str = "ImportKey";
/// RPC that changes a key's lifecycle state.
const CHANGE_STATE: &str = "ChangeKeyState";
/// The state of a key just made.
const FIRST_STATE: &str = "active";

/// Where a key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin<'a> {
    /// Generated in the node's HSM, in a ceremony or not.
    Generated {
        /// The ceremony that made it.
        ceremony: Option<&'a str>,
    },
    /// Entered as components by custodians, in a ceremony.
    Components {
        /// The ceremony that made it.
        ceremony: Option<&'a str>,
    },
    /// Diversified from its parent.
    Derived,
    /// Imported from a key package of another node.
    Imported {
        /// The node that made the package.
        issuer_node: &'a str,
        /// The package.
        package_id: &'a str,
    },
    /// Made before these records: they only name it.
    Earlier,
}

/// A state change of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange<'a> {
    /// The new state.
    pub state: &'a str,
    /// The record.
    pub record: &'a AuditRecord,
}

/// One key of the hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its type, when the records tell it.
    pub key_type: Option<&'a str>,
    /// Its region code, when the records tell it.
    pub region: Option<String>,
    /// Its parent, for a derived key.
    pub parent: Option<&'a str>,
    /// Its KCV, when a record carries it.
    pub kcv: Option<&'a KcvEntry>,
    /// Where it came from.
    pub origin: Origin<'a>,
    /// The record that made it (none for a key made earlier).
    pub made: Option<&'a AuditRecord>,
    /// Its state changes, in seq order.
    pub changes: Vec<StateChange<'a>>,
    /// Its children (indexes into [`KeyTree::keys`]), in order made.
    pub children: Vec<usize>,
}

impl Key<'_> {
    /// Its state after the changes the records hold: `active` when made, `None` for a key made
    /// earlier whose state the records do not tell.
    pub fn state(&self) -> Option<&str> {
        match (self.changes.last(), self.made) {
            (Some(c), _) => Some(c.state),
            (None, Some(_)) => Some(FIRST_STATE),
            (None, None) => None,
        }
    }

    /// Its tier, from its region code.
    pub fn tier(&self) -> Option<&'static str> {
        Region::parse(self.region.as_deref()?)
            .ok()
            .map(|r| r.tier().as_str())
    }
}

/// The keys, each after its parent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyTree<'a> {
    /// Every key, in order of first mention.
    pub keys: Vec<Key<'a>>,
    /// The keys without a parent, in order of first mention.
    pub roots: Vec<usize>,
}

/// Builds the key tree from `records` (in seq order); only requests that succeeded count.
pub fn key_tree(records: &[AuditRecord]) -> KeyTree<'_> {
    let mut tree = Builder::default();
    for r in records.iter().filter(|r| r.result.ok) {
        if let Some(id) = made_key(r) {
            tree.made(r, id);
        } else if let Some((id, state)) = state_change(r) {
            let at = tree.named(id, r, None, None);
            tree.keys[at].changes.push(StateChange { state, record: r });
        }
    }
    tree.finish()
}

/// The key a successful record made, if it made one.
fn made_key(r: &AuditRecord) -> Option<&str> {
    let makes = match r.rpc.as_str() {
        GENERATE | IMPORT => true,
        DERIVE => r.params.contains_key("parent_id"),
        // A ceremony's run makes a key when its operation generates one (a state change or an
        // action such as a policy reload names no key type).
        EXECUTE => r.params.contains_key("key_type") && !r.params.contains_key("action"),
        _ => false,
    };
    let parent = r.params.get("parent_id");
    makes
        .then(|| {
            r.key_ids
                .iter()
                .rev()
                .find(|k| Some(*k) != parent)
                .map(String::as_str)
        })
        .flatten()
}

/// The key and new state of a successful state change (direct, or a ceremony's run).
fn state_change(r: &AuditRecord) -> Option<(&str, &str)> {
    let id = match r.rpc.as_str() {
        CHANGE_STATE => r.params.get("id")?,
        EXECUTE => r.params.get("key_id")?,
        _ => return None,
    };
    Some((id, r.params.get("state")?))
}

#[derive(Default)]
struct Builder<'a> {
    keys: Vec<Key<'a>>,
    at: HashMap<&'a str, usize>,
}

impl<'a> Builder<'a> {
    /// Adds the key `id` that `r` made. A key is made once: a second record claiming to make
    /// it is not believed over the first (and cannot make a cycle).
    fn made(&mut self, r: &'a AuditRecord, id: &'a str) {
        if self.at.contains_key(id) {
            return;
        }
        let param = |name: &str| r.params.get(name).map(String::as_str);
        let parent_id = param("parent_id").filter(|_| r.rpc == DERIVE);
        let parent = parent_id.map(|p| {
            // The parent's region is that of the child's region's parent.
            let region = param("region")
                .and_then(|c| Region::parse(c).ok())
                .and_then(|c| c.parent())
                .map(|c| c.as_str().to_string());
            self.named(p, r, param("key_type"), region)
        });
        let key_type = param("key_type").or_else(|| parent.and_then(|p| self.keys[p].key_type));
        let origin = match r.rpc.as_str() {
            DERIVE => Origin::Derived,
            IMPORT => Origin::Imported {
                issuer_node: param("issuer_node").unwrap_or_default(),
                package_id: param("package_id").unwrap_or_default(),
            },
            _ if r.params.contains_key("components") => Origin::Components {
                ceremony: r.ceremony.as_deref(),
            },
            _ => Origin::Generated {
                ceremony: r.ceremony.as_deref(),
            },
        };
        self.at.insert(id, self.keys.len());
        self.keys.push(Key {
            id,
            key_type,
            region: param("region").map(str::to_string),
            parent: parent.map(|p| self.keys[p].id),
            kcv: kcv_of(r, id),
            origin,
            made: Some(r),
            changes: Vec::new(),
            children: Vec::new(),
        });
    }

    /// The index of key `id`, which `r` names; a key not seen yet was made before these
    /// records, and is added as such with what `r` tells of it.
    fn named(
        &mut self,
        id: &'a str,
        r: &'a AuditRecord,
        key_type: Option<&'a str>,
        region: Option<String>,
    ) -> usize {
        if let Some(at) = self.at.get(id) {
            return *at;
        }
        self.at.insert(id, self.keys.len());
        self.keys.push(Key {
            id,
            key_type,
            region,
            parent: None,
            kcv: kcv_of(r, id),
            origin: Origin::Earlier,
            made: None,
            changes: Vec::new(),
            children: Vec::new(),
        });
        self.keys.len() - 1
    }

    fn finish(mut self) -> KeyTree<'a> {
        let mut roots = Vec::new();
        for i in 0..self.keys.len() {
            match self.keys[i].parent.and_then(|p| self.at.get(p).copied()) {
                Some(p) if p != i => self.keys[p].children.push(i),
                _ => roots.push(i),
            }
        }
        KeyTree {
            keys: self.keys,
            roots,
        }
    }
}

/// The KCV `r` carries for key `id`.
fn kcv_of<'a>(r: &'a AuditRecord, id: &str) -> Option<&'a KcvEntry> {
    r.kcvs.iter().find(|k| k.key_id == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::AuditDraft;
    use crate::audit::report::test_records::{APPROVER_1, OPENER, chain, d, denied, ok};
    use crate::audit::verify::fixture::params as p;

    fn kcv(id: &str, kcv: &str) -> KcvEntry {
        KcvEntry {
            key_id: id.into(),
            kcv: kcv.into(),
            method: "aes-cmac".into(),
        }
    }

    /// A root made in a ceremony, a province and a city derived from it, the city suspended,
    /// a key imported, a refused derivation, and a derivation from a key made earlier.
    fn history() -> Vec<AuditRecord> {
        let mut root = d(OPENER, EXECUTE, Some("c-1"), ok());
        root.params = p(&[
            ("key_type", "card-master"),
            ("region", "000000"),
            ("approver_1", OPENER),
        ]);
        root.key_ids = vec!["k-root".into()];
        root.kcvs = vec![kcv("k-root", "AAAAAA")];
        let derive = |parent: &str, child: &str, region: &str, ty: Option<&str>| {
            let mut r = d(APPROVER_1, DERIVE, None, ok());
            r.params = p(&[("parent_id", parent), ("region", region)]);
            if let Some(ty) = ty {
                r.params.insert("key_type".into(), ty.into());
            }
            r.key_ids = vec![parent.into(), child.into()];
            r.kcvs = vec![kcv(parent, "PPPPPP"), kcv(child, "CCCCCC")];
            r
        };
        let mut suspend = d(OPENER, CHANGE_STATE, None, ok());
        suspend.params = p(&[("id", "k-city"), ("state", "suspended")]);
        suspend.key_ids = vec!["k-city".into()];
        let mut import = d(OPENER, IMPORT, None, ok());
        import.params = p(&[
            ("issuer_node", "ministry"),
            ("package_id", "p-1"),
            ("key_type", "pin-master"),
            ("region", "440000"),
        ]);
        import.key_ids = vec!["k-imported".into()];
        let mut refused: AuditDraft = derive("k-root", "k-never", "450000", None);
        refused.outcome = Some(denied());
        chain(vec![
            root,
            derive("k-root", "k-prov", "440000", None),
            derive("k-prov", "k-city", "440100", Some("card-master")),
            suspend,
            import,
            refused,
            derive("k-old", "k-old-city", "450100", Some("pin-master")),
        ])
    }

    #[test]
    fn the_tree_has_each_key_under_its_parent() {
        let records = history();
        let tree = key_tree(&records);
        let ids: Vec<&str> = tree.roots.iter().map(|i| tree.keys[*i].id).collect();
        assert_eq!(ids, ["k-root", "k-imported", "k-old"]);
        let root = &tree.keys[tree.roots[0]];
        assert_eq!(root.tier(), Some("national"));
        assert_eq!(
            root.origin,
            Origin::Generated {
                ceremony: Some("c-1")
            }
        );
        assert_eq!(root.kcv.map(|k| k.kcv.as_str()), Some("AAAAAA"));
        let prov = &tree.keys[root.children[0]];
        assert_eq!(
            root.children.len(),
            1,
            "the refused derivation made nothing"
        );
        assert_eq!(
            (prov.id, prov.tier(), prov.parent),
            ("k-prov", Some("provincial"), Some("k-root"))
        );
        // An old record without key_type: the type is the parent's.
        assert_eq!(prov.key_type, Some("card-master"));
        assert_eq!(prov.kcv.map(|k| k.kcv.as_str()), Some("CCCCCC"));
        let city = &tree.keys[prov.children[0]];
        assert_eq!((city.id, city.tier()), ("k-city", Some("municipal")));
        assert_eq!(city.state(), Some("suspended"));
        assert_eq!(prov.state(), Some("active"));
    }

    #[test]
    fn imported_keys_and_keys_made_earlier_say_where_they_come_from() {
        let records = history();
        let tree = key_tree(&records);
        let imported = &tree.keys[tree.roots[1]];
        assert_eq!(
            imported.origin,
            Origin::Imported {
                issuer_node: "ministry",
                package_id: "p-1"
            }
        );
        assert_eq!(imported.region.as_deref(), Some("440000"));
        let old = &tree.keys[tree.roots[2]];
        assert_eq!(old.origin, Origin::Earlier);
        assert_eq!(old.state(), None);
        // What the derivation's record tells of its parent: type, region, KCV.
        assert_eq!(old.key_type, Some("pin-master"));
        assert_eq!(old.region.as_deref(), Some("450000"));
        assert_eq!(old.kcv.map(|k| k.kcv.as_str()), Some("PPPPPP"));
        assert_eq!(tree.keys[old.children[0]].id, "k-old-city");
    }

    #[test]
    fn a_key_is_made_once_and_a_state_change_of_an_unknown_key_names_it() {
        let mut again = d(OPENER, GENERATE, None, ok());
        again.key_ids = vec!["k-1".into()];
        let mut first = again.clone();
        first.params = p(&[("key_type", "card-master")]);
        let mut retire = d(OPENER, EXECUTE, Some("c-2"), ok());
        retire.params = p(&[("key_id", "k-9"), ("state", "retired")]);
        let records = chain(vec![first, again, retire]);
        let tree = key_tree(&records);
        assert_eq!(tree.keys.len(), 2);
        assert_eq!(tree.keys[0].key_type, Some("card-master"));
        assert_eq!(tree.keys[0].made.map(|r| r.seq), Some(1));
        assert_eq!(
            (tree.keys[1].id, tree.keys[1].state()),
            ("k-9", Some("retired"))
        );
        assert_eq!(tree.keys[1].origin, Origin::Earlier);
    }
}
