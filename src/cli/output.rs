//! How the client prints keys: a readable table, or JSON with `--json`.
//!
//! Enum fields are printed as the domain's words (`municipal`, `active`, `aes-cmac`), as the
//! client takes them.

use std::borrow::Cow;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

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
    created_at: &'a str,
    updated_at: &'a str,
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
            created_at: &k.created_at,
            updated_at: &k.updated_at,
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

/// Prints one key: JSON object, or the table with one row.
pub fn print_key(key: &Key, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&KeyJson::from(key))?);
        return Ok(());
    }
    print_keys(std::slice::from_ref(key), false)
}
