//! The two dialects' schemas must not drift: a migrated SQLite store and a
//! migrated PostgreSQL store have the same tables with the same columns,
//! and from V10 on a migration has the same number and name in both
//! folders (a dialect with nothing to change gets a migration that says
//! why in a comment).
//!
//! Before V10 the folders diverged: PostgreSQL's V7 (pending messages in
//! one index) and V8 (no foreign-key check per message) have no SQLite
//! counterpart, so SQLite's V7 is PostgreSQL's V9. They stay as they are:
//! renumbering a migration that a store has applied would make refinery
//! refuse that store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tongban::store::Store;

/// Where the two folders diverged, as it was when they were put in step.
const BEFORE_V10: [(&str, &[&str]); 2] = [
    (
        "sqlite",
        &[
            "V1__outbox.sql",
            "V2__leaner_message_indexes.sql",
            "V3__payouts.sql",
            "V4__reconciliation.sql",
            "V5__batch_files.sql",
            "V6__operations.sql",
            "V7__batch_items_by_position.sql",
        ],
    ),
    (
        "postgres",
        &[
            "V1__outbox.sql",
            "V2__leaner_message_indexes.sql",
            "V3__payouts.sql",
            "V4__reconciliation.sql",
            "V5__batch_files.sql",
            "V6__operations.sql",
            "V7__pending_in_one_index.sql",
            "V8__no_row_lock_per_message.sql",
            "V9__batch_items_by_position.sql",
        ],
    ),
];

/// The migration files of a dialect, by version.
fn migrations(dialect: &str) -> BTreeMap<u32, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/store/migrations")
        .join(dialect);
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .map(|name| {
            let v = name
                .strip_prefix('V')
                .and_then(|r| r.split("__").next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{dialect}/{name} is not named V<n>__<what>.sql"));
            (v, name)
        })
        .collect()
}

#[test]
fn migrations_from_v10_have_one_number_and_name_in_both_dialects() {
    let sqlite = migrations("sqlite");
    let postgres = migrations("postgres");
    for (dialect, before) in BEFORE_V10 {
        let m = if dialect == "sqlite" {
            &sqlite
        } else {
            &postgres
        };
        let old: Vec<&str> = m
            .iter()
            .filter(|(v, _)| **v < 10)
            .map(|(_, n)| n.as_str())
            .collect();
        assert_eq!(
            old, before,
            "{dialect}: no migration below V10 may be added, renamed or removed now; the next one is V10 in both folders"
        );
    }
    let later = |m: &BTreeMap<u32, String>| -> Vec<String> {
        m.range(10..).map(|(_, n)| n.clone()).collect()
    };
    assert_eq!(
        later(&sqlite),
        later(&postgres),
        "from V10 on, each migration has the same number and name in src/store/migrations/sqlite and src/store/migrations/postgres"
    );
}

/// Table → columns of a migrated SQLite store.
fn sqlite_schema(path: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
        .prepare(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> 'refinery_schema_history'",
        )
        .unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
    {
        let (t, col) = r.unwrap();
        out.entry(t).or_default().insert(col);
    }
    out
}

/// Table → columns of a migrated PostgreSQL store.
async fn postgres_schema(url: &str) -> BTreeMap<String, BTreeSet<String>> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name <> 'refinery_schema_history'",
            &[],
        )
        .await
        .unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().insert(r.get(1));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_have_the_same_tables_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    Store::open("sqlite://schema.db", dir.path()).await.unwrap();
    let sqlite = sqlite_schema(&dir.path().join("schema.db"));
    let url = crate::support::pg::database().await;
    Store::open(&url, Path::new(".")).await.unwrap();
    let postgres = postgres_schema(&url).await;
    assert!(
        sqlite.contains_key("messages") && sqlite.len() > 8,
        "{sqlite:?}"
    );
    let tables: BTreeSet<&String> = sqlite.keys().chain(postgres.keys()).collect();
    let mut drift = Vec::new();
    for t in tables {
        match (sqlite.get(t), postgres.get(t)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => drift.push(format!(
                "{t}: only in SQLite {:?}, only in PostgreSQL {:?}",
                a.difference(b).collect::<Vec<_>>(),
                b.difference(a).collect::<Vec<_>>()
            )),
            (Some(_), None) => drift.push(format!("table {t} is in SQLite only")),
            (None, _) => drift.push(format!("table {t} is in PostgreSQL only")),
        }
    }
    assert!(
        drift.is_empty(),
        "the stores' schemas drifted:\n{}",
        drift.join("\n")
    );
}
