//! How the client prints keys: a readable table, or JSON with `--json`.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::proto::Key;

/// Prints keys as a table or as JSON (one array).
pub fn print_keys(keys: &[Key], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(keys)?);
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
            k.algorithm.as_str(),
            k.tier.as_str(),
            k.region.as_str(),
            &k.version.to_string(),
            k.state.as_str(),
            &format!("{} ({})", k.kcv, k.kcv_method),
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
        println!("{}", serde_json::to_string_pretty(key)?);
        return Ok(());
    }
    print_keys(std::slice::from_ref(key), false)
}
