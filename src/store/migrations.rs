//! SQLite's schema migrations, tracked with `PRAGMA user_version`.
//!
//! Migration `i` (0-based) brings the schema to version `i + 1`. Each runs in its own
//! transaction together with the version bump, so a crash leaves the previous version.
//! Never edit a migration that has shipped; append a new one. The rules, and the refusal of a
//! database from a newer hkms, are the backend-neutral ones of `schema.rs`.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;
use super::schema::{self, Versioned};

/// The migrations, oldest first.
const MIGRATIONS: &[&str] = &[
    // 1: the key registry.
    "CREATE TABLE keys (
        id          TEXT    NOT NULL PRIMARY KEY,
        key_type    TEXT    NOT NULL,
        algorithm   TEXT    NOT NULL CHECK (algorithm IN ('aes128', 'aes256', 'des2')),
        tier        TEXT    NOT NULL CHECK (tier IN ('national', 'provincial', 'municipal')),
        region      TEXT    NOT NULL CHECK (length(region) = 6),
        parent_id   TEXT    NULL REFERENCES keys (id),
        factor      TEXT    NULL CHECK (factor IS NULL OR length(factor) = 16),
        kcv         TEXT    NOT NULL CHECK (length(kcv) = 6),
        kcv_method  TEXT    NOT NULL CHECK (kcv_method IN ('aes-cmac', 'des3-cmac', 'des3-ecb')),
        version     INTEGER NOT NULL CHECK (version >= 1),
        state       TEXT    NOT NULL
                    CHECK (state IN ('pre-active', 'active', 'suspended', 'retired', 'destroyed')),
        ck_label    TEXT    NOT NULL UNIQUE,
        created_at  TEXT    NOT NULL,
        updated_at  TEXT    NOT NULL,
        CHECK ((parent_id IS NULL) = (factor IS NULL))
    ) STRICT;
    CREATE UNIQUE INDEX keys_one_live_child ON keys (parent_id, region)
        WHERE parent_id IS NOT NULL AND state <> 'destroyed';
    CREATE INDEX keys_by_type_region ON keys (key_type, region);
    CREATE INDEX keys_by_parent ON keys (parent_id);",
    // 2: the ceremony log, its checkpoints, and ceremonies with their approvals.
    "CREATE TABLE audit_log (
        seq   INTEGER NOT NULL PRIMARY KEY CHECK (seq >= 1),
        line  TEXT    NOT NULL,
        hash  TEXT    NOT NULL CHECK (length(hash) = 64)
    ) STRICT;
    CREATE TABLE audit_checkpoints (
        seq   INTEGER NOT NULL PRIMARY KEY REFERENCES audit_log (seq),
        line  TEXT    NOT NULL
    ) STRICT;
    CREATE TABLE ceremonies (
        id          TEXT    NOT NULL PRIMARY KEY,
        operation   TEXT    NOT NULL,
        params      TEXT    NOT NULL,
        opener      TEXT    NOT NULL,
        quorum      INTEGER NOT NULL CHECK (quorum >= 1),
        created_at  TEXT    NOT NULL,
        expires_at  INTEGER NOT NULL,
        state       TEXT    NOT NULL
                    CHECK (state IN ('open', 'running', 'done', 'failed', 'cancelled', 'expired', 'used')),
        result      TEXT    NOT NULL DEFAULT ''
    ) STRICT;
    CREATE TABLE ceremony_approvals (
        ceremony_id TEXT NOT NULL REFERENCES ceremonies (id),
        approver    TEXT NOT NULL,
        approved_at TEXT NOT NULL,
        PRIMARY KEY (ceremony_id, approver)
    ) STRICT;",
    // 3: transport key cards, and where imported keys came from.
    "CREATE TABLE transport_keys (
        card_id     TEXT NOT NULL PRIMARY KEY,
        region      TEXT NOT NULL CHECK (length(region) = 6),
        role        TEXT NOT NULL CHECK (role IN ('issued', 'loaded')),
        kcv         TEXT NOT NULL CHECK (length(kcv) = 6),
        ceremony_id TEXT NULL UNIQUE,
        created_at  TEXT NOT NULL
    ) STRICT;
    CREATE TABLE key_origins (
        key_id        TEXT NOT NULL PRIMARY KEY REFERENCES keys (id),
        origin_node   TEXT NOT NULL,
        origin_key_id TEXT NOT NULL,
        package_id    TEXT NOT NULL UNIQUE,
        parent_kcv    TEXT NOT NULL,
        card_id       TEXT NOT NULL
    ) STRICT;",
    // 4: a city's card services read their newest active master at every request; this
    // index answers it with one seek, without sorting. It starts with the columns of
    // keys_by_type_region, which it replaces.
    "CREATE INDEX keys_newest_by_state ON keys (key_type, region, state, version);
    DROP INDEX keys_by_type_region;",
    // 5: the dual-control floor. The policy in force is kept here, so that a restart with a
    // weaker file keeps it (one row); each approval keeps the person of the officer roster
    // and the certificate key it was made with, so that approvals count persons across
    // restarts, and one person approves a ceremony once.
    "CREATE TABLE policy_in_force (
        id          INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
        sha256      TEXT    NOT NULL CHECK (length(sha256) = 64),
        text        TEXT    NOT NULL,
        origin      TEXT    NOT NULL,
        since       TEXT    NOT NULL
    ) STRICT;
    ALTER TABLE ceremony_approvals ADD COLUMN person TEXT NULL;
    ALTER TABLE ceremony_approvals ADD COLUMN certificate_key TEXT NULL
        CHECK (certificate_key IS NULL OR length(certificate_key) = 64);
    CREATE UNIQUE INDEX ceremony_approvals_one_per_person
        ON ceremony_approvals (ceremony_id, person) WHERE person IS NOT NULL;",
    // 6: what this node, as a witness, verified of other nodes' logs.
    "CREATE TABLE witnessed_logs (
        node            TEXT    NOT NULL PRIMARY KEY,
        node_key_sha256 TEXT    NOT NULL CHECK (length(node_key_sha256) = 64),
        verified_seq    INTEGER NOT NULL CHECK (verified_seq >= 0),
        verified_head   TEXT    NOT NULL CHECK (length(verified_head) = 64),
        updated_at      TEXT    NOT NULL
    ) STRICT;",
    // 7: the cosignatures witnesses gave this node for its checkpoints, one per witness key
    // and checkpoint. No foreign key to audit_checkpoints: a cosignature is the witness's word
    // and stays when the log is cut back under it, which is how the cut shows.
    "CREATE TABLE audit_cosignatures (
        witness_key_sha256 TEXT    NOT NULL CHECK (length(witness_key_sha256) = 64),
        seq                INTEGER NOT NULL CHECK (seq >= 1),
        witness            TEXT    NOT NULL,
        line               TEXT    NOT NULL,
        PRIMARY KEY (witness_key_sha256, seq)
    ) STRICT;
    CREATE INDEX audit_cosignatures_by_seq ON audit_cosignatures (seq, witness);",
    // 8: `ListKeys` pages through the keys in the order (created_at, id), each page after the
    // last key of the one before; this index reads a page without sorting the registry.
    "CREATE INDEX keys_by_creation ON keys (created_at, id);",
    // 9: client request ids (docs/api.md, "Retries and request ids"). A request that acted
    // claims its caller's id here in the transaction of its record; its answer (an encoded
    // reply, or a status) follows. Rows past expires_at are free again and swept.
    "CREATE TABLE client_requests (
        actor             TEXT    NOT NULL,
        client_request_id TEXT    NOT NULL
                          CHECK (length(client_request_id) BETWEEN 1 AND 64),
        rpc               TEXT    NOT NULL,
        body_sha256       TEXT    NOT NULL CHECK (length(body_sha256) = 64),
        request_id        TEXT    NOT NULL,
        expires_at        INTEGER NOT NULL,
        answer            BLOB    NULL,
        code              INTEGER NULL,
        message           TEXT    NULL,
        details           BLOB    NULL,
        PRIMARY KEY (actor, client_request_id),
        CHECK (answer IS NULL OR code IS NULL)
    ) STRICT;
    CREATE INDEX client_requests_by_expiry ON client_requests (expires_at);",
];

/// The schema version this build writes.
#[cfg(test)]
pub(crate) const LATEST: i64 = schema::latest(MIGRATIONS);

/// Brings the database to the latest version, or refuses a database from a newer hkms.
pub(crate) fn apply(conn: &mut Connection) -> Result<(), StoreError> {
    schema::migrate(conn, MIGRATIONS)
}

/// The version lives in the file's header (`PRAGMA user_version`), where every hkms build reads
/// it; an immediate transaction takes the write lock, which other migrators take too.
impl Versioned for Connection {
    fn schema_version(&mut self) -> Result<i64, StoreError> {
        user_version(self)
    }

    fn migrate_step(
        &mut self,
        version: i64,
        sql: &str,
        proceed: &dyn Fn(i64) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let tx = self
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::migration(version))?;
        if !proceed(user_version(&tx)?)? {
            return Ok(());
        }
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", version))
            .and_then(|()| tx.commit())
            .map_err(StoreError::migration(version))
    }
}

fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(StoreError::sqlite("reading the schema version"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_reaches_latest_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), LATEST);
    }

    #[test]
    fn applying_twice_is_harmless() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn).unwrap();
        apply(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), LATEST);
    }

    #[test]
    fn a_version_3_registry_gains_the_card_master_index_and_its_key_is_found_through_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        for (version, sql) in (1_i64..).zip(&MIGRATIONS[..3]) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", version).unwrap();
        }
        conn.execute(
            "INSERT INTO keys VALUES ('k-1', 'pin-unblock', 'aes128', 'municipal', '440100', \
             NULL, NULL, '53E107', 'aes-cmac', 1, 'active', 'hkms/k-1', 't', 't')",
            [],
        )
        .unwrap();
        apply(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), LATEST);
        let mut explain = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT id FROM keys {}",
                super::super::keys::NEWEST_ACTIVE
            ))
            .unwrap();
        let plan: Vec<String> = explain
            .query_map(["pin-unblock", "440100"], |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|p| p.contains("keys_newest_by_state")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
        let newest: String = conn
            .query_row(
                &format!("SELECT id FROM keys {}", super::super::keys::NEWEST_ACTIVE),
                ["pin-unblock", "440100"],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(newest, "k-1");
    }

    #[test]
    fn a_version_4_registry_keeps_its_approvals_and_gains_the_floor() {
        let mut conn = Connection::open_in_memory().unwrap();
        for (version, sql) in (1_i64..).zip(&MIGRATIONS[..4]) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", version).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO ceremonies VALUES ('c-1', 'generate', '{}', 'a', 2, 't', 9, 'open', '');
             INSERT INTO ceremony_approvals VALUES ('c-1', 'a', 't');",
        )
        .unwrap();
        apply(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), LATEST);
        let (person, key): (Option<String>, Option<String>) = conn
            .query_row(
                "SELECT person, certificate_key FROM ceremony_approvals WHERE approver = 'a'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((person, key), (None, None));
        // One person approves a ceremony once, whatever the certificate.
        let approve = |who: &str, person: &str| {
            conn.execute(
                "INSERT INTO ceremony_approvals VALUES ('c-1', ?1, 't', ?2, NULL)",
                [who, person],
            )
        };
        approve("b", "alice").unwrap();
        assert!(approve("c", "alice").is_err());
        approve("c", "bob").unwrap();
        // One policy in force.
        let put = |id: i64| {
            conn.execute(
                "INSERT INTO policy_in_force VALUES (?1, ?2, 'x', 'p.toml', 't')",
                rusqlite::params![id, "a".repeat(64)],
            )
        };
        put(1).unwrap();
        assert!(put(2).is_err());
    }

    #[test]
    fn newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        let err = apply(&mut conn).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "database schema version 99 is newer than this hkms (knows {}); upgrade hkms",
                LATEST
            )
        );
    }

    #[test]
    fn negative_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", -1).unwrap();
        assert!(matches!(
            apply(&mut conn),
            Err(StoreError::SchemaUnknown { found: -1 })
        ));
    }

    #[test]
    fn failed_migration_leaves_previous_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        // A table in the way makes migration 1 fail.
        conn.execute_batch("CREATE TABLE keys (x INTEGER);")
            .unwrap();
        let err = apply(&mut conn).unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { version: 1, .. }),
            "{err}"
        );
        assert_eq!(user_version(&conn).unwrap(), 0);
    }
}
