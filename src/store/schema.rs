//! Schema versions, whichever database holds them: the rules every backend's migrations follow.
//!
//! Each backend keeps its own list of migrations, since their SQL differs, numbered from 1:
//! migration `i` (0-based) brings the schema to version `i + 1`, and the number of migrations
//! is the version the build writes. The rules are shared, and [`migrate`] keeps them:
//!
//! - **Forward only.** A migration that has shipped is never edited nor undone; a change of
//!   schema is a new migration at the end of the list.
//! - **One transaction per step.** A migration commits together with its version number, so a
//!   crash or a failure leaves the database at the version before it.
//! - **Checked under the lock.** Each step reads the version again inside its transaction,
//!   under a lock other migrators also take: several hkms processes can open one database at
//!   once, and the step another one has applied meanwhile is skipped, not run twice.
//! - **A newer schema is refused.** A database at a version this build does not know was
//!   written by a newer hkms; it is refused ([`StoreError::SchemaTooNew`]) before anything is
//!   written, and a version hkms never writes (negative) is [`StoreError::SchemaUnknown`].
//!
//! Where the version lives is the backend's affair ([`Versioned`]). SQLite keeps it in
//! `PRAGMA user_version`, in the file's header, and must go on doing so: that is where every
//! hkms build so far reads it to refuse a newer file. A server database such as PostgreSQL
//! would keep it in a one-row version table, locked by each step.

use super::StoreError;

/// A database whose schema version can be read and moved one migration at a time.
pub(crate) trait Versioned {
    /// The schema version recorded in the database; 0 for an empty one.
    fn schema_version(&mut self) -> Result<i64, StoreError>;

    /// Runs one migration step in a single transaction that holds the lock other migrators
    /// take: reads the version again, passes it to `proceed`, and if that answers `true` runs
    /// `sql`, records `version` and commits. When `proceed` answers `false` nothing changes; an
    /// error from it or from the step leaves the database as it was.
    fn migrate_step(
        &mut self,
        version: i64,
        sql: &str,
        proceed: &dyn Fn(i64) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError>;
}

/// The version a list of migrations brings a database to.
pub(crate) const fn latest(migrations: &[&str]) -> i64 {
    // A list is never near i64::MAX long.
    migrations.len() as i64
}

/// Brings `db` to the version of `migrations`, applying in order the ones it lacks, or refuses
/// a database from a newer hkms.
pub(crate) fn migrate(db: &mut dyn Versioned, migrations: &[&str]) -> Result<(), StoreError> {
    let latest = latest(migrations);
    check_version(db.schema_version()?, latest)?;
    for (version, sql) in (1_i64..).zip(migrations) {
        // Re-read under the step's lock: another process may have migrated meanwhile.
        db.migrate_step(version, sql, &|current| {
            Ok(check_version(current, latest)? < version)
        })?;
    }
    Ok(())
}

/// Accepts a version a build whose newest is `latest` can handle, and returns it.
pub(crate) fn check_version(found: i64, latest: i64) -> Result<i64, StoreError> {
    if found < 0 {
        return Err(StoreError::SchemaUnknown { found });
    }
    if found > latest {
        return Err(StoreError::SchemaTooNew {
            found,
            known: latest,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database held in memory: its version, the steps it ran, and what happens at the next
    /// step (another migrator moving the version first, or a failing step).
    #[derive(Default)]
    struct Fake {
        version: i64,
        ran: Vec<i64>,
        moved_by_another: Option<i64>,
        fail_at: Option<i64>,
    }

    impl Versioned for Fake {
        fn schema_version(&mut self) -> Result<i64, StoreError> {
            Ok(self.version)
        }

        fn migrate_step(
            &mut self,
            version: i64,
            _sql: &str,
            proceed: &dyn Fn(i64) -> Result<bool, StoreError>,
        ) -> Result<(), StoreError> {
            if let Some(other) = self.moved_by_another.take() {
                self.version = other;
            }
            if !proceed(self.version)? {
                return Ok(());
            }
            if self.fail_at == Some(version) {
                return Err(StoreError::Poisoned);
            }
            self.ran.push(version);
            self.version = version;
            Ok(())
        }
    }

    const THREE: &[&str] = &["one", "two", "three"];

    #[test]
    fn only_the_missing_steps_run_in_order() {
        let mut db = Fake {
            version: 1,
            ..Fake::default()
        };
        migrate(&mut db, THREE).unwrap();
        assert_eq!((db.version, db.ran), (3, vec![2, 3]));
    }

    #[test]
    fn a_step_another_migrator_applied_meanwhile_is_skipped() {
        let mut db = Fake {
            moved_by_another: Some(2),
            ..Fake::default()
        };
        migrate(&mut db, THREE).unwrap();
        assert_eq!((db.version, db.ran), (3, vec![3]));
    }

    #[test]
    fn a_newer_schema_is_refused_before_any_step_and_under_the_lock() {
        let mut db = Fake {
            version: 4,
            ..Fake::default()
        };
        let err = migrate(&mut db, THREE).unwrap_err();
        assert!(matches!(
            err,
            StoreError::SchemaTooNew { found: 4, known: 3 }
        ));
        assert!(db.ran.is_empty());

        // A newer hkms migrated between the first check and the step.
        let mut db = Fake {
            moved_by_another: Some(9),
            ..Fake::default()
        };
        let err = migrate(&mut db, THREE).unwrap_err();
        assert!(matches!(
            err,
            StoreError::SchemaTooNew { found: 9, known: 3 }
        ));
        assert!(db.ran.is_empty());
    }

    #[test]
    fn a_negative_version_is_unknown() {
        let mut db = Fake {
            version: -1,
            ..Fake::default()
        };
        assert!(matches!(
            migrate(&mut db, THREE),
            Err(StoreError::SchemaUnknown { found: -1 })
        ));
    }

    #[test]
    fn a_failing_step_stops_at_the_version_before_it() {
        let mut db = Fake {
            fail_at: Some(2),
            ..Fake::default()
        };
        assert!(migrate(&mut db, THREE).is_err());
        assert_eq!((db.version, db.ran), (1, vec![1]));
    }
}
