//! How the client prints keys: a readable table, or JSON with `--json`.
//!
//! Enum fields are printed as the domain's words (`municipal`, `active`, `aes-cmac`), as the
//! client takes them.

use std::borrow::Cow;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use super::pages::time_text;
use crate::proto::{self, Key};
use crate::server::services::convert::word;

/// A key as `--json` prints it: the proto's fields in its order, enums as words.
#[derive(Serialize)]
struct KeyJson<'a> {
    id: &'a str,
    key_type: &'a str,
    algorithm: Cow<'static, str>,
    tier: Cow<'static, str>,
    region: &'a str,
    parent_id: &'a str,
    factor: &'a str,
    kcv: &'a str,
    kcv_method: Cow<'static, str>,
    version: u32,
    state: Cow<'static, str>,
    created_at: String,
    updated_at: String,
    /// An imported key's issuer, package and card.
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<serde_json::Value>,
}

impl<'a> From<&'a Key> for KeyJson<'a> {
    fn from(k: &'a Key) -> KeyJson<'a> {
        KeyJson {
            id: &k.id,
            key_type: &k.key_type,
            algorithm: word::<proto::Algorithm>(k.algorithm),
            tier: word::<proto::Tier>(k.tier),
            region: &k.region,
            parent_id: &k.parent_id,
            factor: &k.factor,
            kcv: &k.kcv,
            kcv_method: word::<proto::KcvMethod>(k.kcv_method),
            version: k.version,
            state: word::<proto::KeyState>(k.state),
            created_at: time_text(k.created_at.as_ref()),
            updated_at: time_text(k.updated_at.as_ref()),
            origin: k.origin.as_ref().map(|o| {
                serde_json::json!({
                    "issuer_node": o.issuer_node, "issuer_key_id": o.issuer_key_id,
                    "package_id": o.package_id, "parent_kcv": o.parent_kcv, "card_id": o.card_id,
                })
            }),
        }
    }
}

/// Prints keys as a table or as JSON (one array).
pub fn print_keys(keys: &[Key], json: bool) -> anyhow::Result<()> {
    if json {
        let keys: Vec<KeyJson<'_>> = keys.iter().map(KeyJson::from).collect();
        println!("{}", serde_json::to_string_pretty(&keys)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header([
        "ID", "TYPE", "ALG", "TIER", "REGION", "VER", "STATE", "KCV", "PARENT",
    ]);
    for k in keys {
        table.add_row([
            k.id.as_str(),
            k.key_type.as_str(),
            &word::<proto::Algorithm>(k.algorithm),
            &word::<proto::Tier>(k.tier),
            k.region.as_str(),
            &k.version.to_string(),
            &word::<proto::KeyState>(k.state),
            &format!("{} ({})", k.kcv, word::<proto::KcvMethod>(k.kcv_method)),
            if k.parent_id.is_empty() {
                "-"
            } else {
                k.parent_id.as_str()
            },
        ]);
    }
    println!("{table}");
    Ok(())
}

/// The keys as a tree, national → provincial → municipal: each key under its parent, children
/// by region. A key whose parent is not among `keys` (another node's, or filtered out) is a
/// root, marked with its parent's id.
pub fn key_tree(keys: &[Key]) -> String {
    use std::collections::{BTreeMap, HashSet};
    let ids: HashSet<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<&Key>> = BTreeMap::new();
    let mut roots: Vec<&Key> = Vec::new();
    for k in keys {
        if ids.contains(k.parent_id.as_str()) {
            children.entry(k.parent_id.as_str()).or_default().push(k);
        } else {
            roots.push(k);
        }
    }
    let order = |v: &mut Vec<&Key>| {
        v.sort_by(|a, b| (&a.region, &a.key_type, &a.id).cmp(&(&b.region, &b.key_type, &b.id)))
    };
    order(&mut roots);
    for v in children.values_mut() {
        order(v);
    }
    fn line(k: &Key) -> String {
        format!(
            "{} {} {} v{} {} KCV {}",
            k.region,
            k.key_type,
            k.id,
            k.version,
            word::<proto::KeyState>(k.state),
            k.kcv
        )
    }
    fn walk(
        out: &mut String,
        k: &Key,
        prefix: &str,
        last: bool,
        children: &BTreeMap<&str, Vec<&Key>>,
    ) {
        out.push_str(&format!(
            "{prefix}{} {}\n",
            if last { "└─" } else { "├─" },
            line(k)
        ));
        let below = format!("{prefix}{}", if last { "   " } else { "│  " });
        let kids = children
            .get(k.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, c) in kids.iter().enumerate() {
            walk(out, c, &below, i + 1 == kids.len(), children);
        }
    }
    let mut out = String::new();
    for root in roots {
        out.push_str(&line(root));
        if !root.parent_id.is_empty() {
            out.push_str(&format!(" (parent {} not listed)", root.parent_id));
        }
        out.push('\n');
        let kids = children
            .get(root.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, c) in kids.iter().enumerate() {
            walk(&mut out, c, "", i + 1 == kids.len(), &children);
        }
    }
    out
}

/// Prints one key: JSON object, or the table with one row.
pub fn print_key(key: &Key, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&KeyJson::from(key))?);
        return Ok(());
    }
    print_keys(std::slice::from_ref(key), false)?;
    if let Some(o) = &key.origin {
        println!(
            "imported from node {} (its key {}), package {}, wrapped under card {}; parent KCV {}",
            o.issuer_node, o.issuer_key_id, o.package_id, o.card_id, o.parent_kcv
        );
    }
    Ok(())
}

#[cfg(test)]
mod tree_tests {
    use super::*;

    fn key(id: &str, parent: &str, region: &str) -> Key {
        Key {
            id: id.into(),
            parent_id: parent.into(),
            region: region.into(),
            key_type: "card-master".into(),
            kcv: "ABCDEF".into(),
            version: 1,
            ..Key::default()
        }
    }

    #[test]
    fn children_hang_under_their_parents_by_region() {
        let keys = [
            key("k-gz", "k-gd", "440100"),
            key("k-root", "", "000000"),
            key("k-gx", "k-root", "450000"),
            key("k-gd", "k-root", "440000"),
            key("k-sz", "k-gd", "440300"),
            key("k-far", "k-elsewhere", "320000"),
        ];
        let tree = key_tree(&keys);
        let lines: Vec<&str> = tree.lines().collect();
        assert!(lines[0].starts_with("000000 card-master k-root"), "{tree}");
        assert!(lines[1].starts_with("├─ 440000 card-master k-gd"), "{tree}");
        assert!(
            lines[2].starts_with("│  ├─ 440100 card-master k-gz"),
            "{tree}"
        );
        assert!(
            lines[3].starts_with("│  └─ 440300 card-master k-sz"),
            "{tree}"
        );
        assert!(lines[4].starts_with("└─ 450000 card-master k-gx"), "{tree}");
        assert!(
            lines[5].contains("k-far") && lines[5].ends_with("(parent k-elsewhere not listed)"),
            "{tree}"
        );
        assert_eq!(lines.len(), 6);
    }
}
