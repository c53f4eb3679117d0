//! How the registry row of one key ([`KeyRecord`]) is read back from SQLite.

use rusqlite::Row;
use rusqlite::types::ValueRef;

use super::StoreError;
use crate::hierarchy::{
    Algorithm, Factor, Kcv, KcvMethod, KeyId, KeyRecord, KeyState, KeyTypeName, Region, Tier,
};

/// The columns of `keys`, in the order [`from_row`] reads them.
pub(crate) const COLUMNS: &str = "id, key_type, algorithm, tier, region, parent_id, factor, \
     kcv, kcv_method, version, state, ck_label, created_at, updated_at";

/// Builds a record from a row selected with [`COLUMNS`]; anything unexpected is `Corrupt`.
pub(crate) fn from_row(row: &Row<'_>) -> Result<KeyRecord, StoreError> {
    let cells = Cells {
        row,
        id: String::new(),
    };
    let raw_id = cells.text(0, "id")?;
    let cells = Cells {
        row,
        id: raw_id.clone(),
    };
    let bad = |what: String| StoreError::Corrupt {
        id: raw_id.clone(),
        what,
    };

    let id = KeyId::parse(&raw_id).map_err(|e| bad(e.to_string()))?;
    let key_type =
        KeyTypeName::parse(&cells.text(1, "key_type")?).map_err(|e| bad(e.to_string()))?;
    let algorithm = cells
        .text(2, "algorithm")?
        .parse::<Algorithm>()
        .map_err(|e| bad(e.to_string()))?;
    let tier = cells
        .text(3, "tier")?
        .parse::<Tier>()
        .map_err(|e| bad(e.to_string()))?;
    let region = Region::parse(&cells.text(4, "region")?).map_err(|e| bad(e.to_string()))?;
    let parent_id = cells
        .optional_text(5, "parent_id")?
        .map(|p| KeyId::parse(&p))
        .transpose()
        .map_err(|e| bad(format!("parent_id: {e}")))?;
    let factor = cells
        .optional_text(6, "factor")?
        .map(|f| Factor::from_hex(&f))
        .transpose()
        .map_err(|e| bad(e.to_string()))?;
    let method = cells
        .text(8, "kcv_method")?
        .parse::<KcvMethod>()
        .map_err(|e| bad(e.to_string()))?;
    let kcv = Kcv::from_hex(&cells.text(7, "kcv")?, method).map_err(|e| bad(e.to_string()))?;
    let version = u32::try_from(cells.integer(9, "version")?)
        .map_err(|_| bad("version is out of range".to_owned()))?;
    let state = cells
        .text(10, "state")?
        .parse::<KeyState>()
        .map_err(|e| bad(e.to_string()))?;

    let record = KeyRecord {
        id,
        key_type,
        algorithm,
        tier,
        region,
        parent_id,
        factor,
        kcv,
        version,
        state,
        ck_label: cells.text(11, "ck_label")?,
        created_at: cells.text(12, "created_at")?,
        updated_at: cells.text(13, "updated_at")?,
    };
    record.check().map_err(bad)?;
    Ok(record)
}

/// Typed access to the cells of one row, turning surprises into `Corrupt` errors.
struct Cells<'r, 's> {
    row: &'r Row<'s>,
    id: String,
}

impl Cells<'_, '_> {
    fn value(&self, index: usize) -> Result<ValueRef<'_>, StoreError> {
        self.row
            .get_ref(index)
            .map_err(StoreError::sqlite("reading a key row"))
    }

    fn corrupt(&self, what: String) -> StoreError {
        StoreError::Corrupt {
            id: if self.id.is_empty() {
                "(unreadable id)".to_owned()
            } else {
                self.id.clone()
            },
            what,
        }
    }

    fn optional_text(&self, index: usize, name: &str) -> Result<Option<String>, StoreError> {
        match self.value(index)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(bytes) => std::str::from_utf8(bytes)
                .map(|s| Some(s.to_owned()))
                .map_err(|_| self.corrupt(format!("{name} is not valid UTF-8"))),
            _ => Err(self.corrupt(format!("{name} is not text"))),
        }
    }

    fn text(&self, index: usize, name: &str) -> Result<String, StoreError> {
        self.optional_text(index, name)?
            .ok_or_else(|| self.corrupt(format!("{name} is missing")))
    }

    fn integer(&self, index: usize, name: &str) -> Result<i64, StoreError> {
        match self.value(index)? {
            ValueRef::Integer(n) => Ok(n),
            _ => Err(self.corrupt(format!("{name} is not an integer"))),
        }
    }
}
