//! The settings of a `kind = "database"` connector: a front-end database
//! (前置库) given by engine and a connection URL (a secret reference), and
//! each operation as a table (or query) read by watermark or a table
//! written with idempotency keys.

use crate::config::connector::{Direction, Mark};
use crate::config::secret::Secret;
use crate::config::ConnectorSpec;
use crate::connectors::settings::{batch, Problems};
use crate::diag::Problem;
use std::collections::BTreeMap;
use std::time::Duration;

/// The database engines a front-end database may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// PostgreSQL (and engines speaking its protocol, such as KingbaseES
    /// in its PostgreSQL mode).
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
}

impl Engine {
    /// The engine's name as a connector file writes it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }
}

/// A front-end database connector.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    /// The engine.
    pub engine: Engine,
    /// The connection URL, a secret reference.
    pub url: Secret,
    /// Offset of date-times stored without a time zone, in seconds east
    /// of UTC (default +08:00).
    pub zone_offset: i32,
    /// Time limit of one statement (default 30 s).
    pub timeout: Option<Duration>,
    /// Connections at once (default 4).
    pub connections: usize,
    /// The operations, by name.
    pub operations: BTreeMap<String, DatabaseOperation>,
}

/// What a database operation is.
#[derive(Clone, Debug)]
pub enum DatabaseOperation {
    /// Rows read a page at a time in watermark order.
    Read(Read),
    /// Rows written in batches.
    Write(Write),
}

/// A table or query read by watermark.
#[derive(Clone, Debug)]
pub struct Read {
    /// The table, if a table is read (needed to mark rows).
    pub table: Option<String>,
    /// The query, if a query is read.
    pub query: Option<String>,
    /// The watermark columns, in order; the last identifies a row.
    pub watermark: Vec<String>,
    /// The column written once a row is stored.
    pub mark: Option<Mark>,
    /// Rows per page (default 500).
    pub page: usize,
    /// Pause between polls once no rows are waiting (default 5 s).
    pub poll: Duration,
}

impl Read {
    /// What is read, for messages: the table, or `query`.
    pub fn what(&self) -> String {
        match &self.table {
            Some(t) => format!("table {t}"),
            None => "the query".into(),
        }
    }
}

/// A table written.
#[derive(Clone, Debug)]
pub struct Write {
    /// The table.
    pub table: String,
    /// The column holding the idempotency key (unique).
    pub key_column: String,
    /// Upsert on these columns instead of inserting.
    pub upsert_on: Vec<String>,
    /// Rows per transaction (default 500).
    pub batch: usize,
}

/// An SQL name the hub quotes itself: letters, digits and `_`, not
/// starting with a digit; a table may be `schema.name`.
pub fn is_name(s: &str, dotted: bool) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 64
            && !p.as_bytes()[0].is_ascii_digit()
            && p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
    };
    match s.split_once('.') {
        Some((a, b)) if dotted => part(a) && part(b),
        Some(_) => false,
        None => part(s),
    }
}

/// `+08:00` (or `-05:30`, `Z`) as seconds east of UTC.
pub fn parse_offset(s: &str) -> Option<i32> {
    if s == "Z" || s == "UTC" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=14).contains(&h) && (0..60).contains(&m)).then_some(sign * (h * 3600 + m * 60))
}

impl DatabaseSettings {
    /// The settings a connector file gives, or every problem in it.
    pub fn of(spec: &ConnectorSpec) -> Result<Self, Vec<Problem>> {
        let mut p = Problems::default();
        let engine = match spec.engine.as_ref() {
            None => {
                p.connector(
                    None,
                    "a database connector needs engine (postgres or mysql)",
                );
                None
            }
            Some(e) => {
                match e.get_ref().as_str() {
                    "postgres" | "postgresql" => Some(Engine::Postgres),
                    "mysql" | "mariadb" => Some(Engine::Mysql),
                    other => {
                        p.connector(
                        Some(e.span().start),
                        format!("engine must be postgres or mysql (MySQL and MariaDB), not {other:?}"),
                    );
                        None
                    }
                }
            }
        };
        if spec.url.is_none() {
            p.connector(
                None,
                "a database connector needs url, a secret reference such as \"${env:FRONT_DB_URL}\"",
            );
        }
        if spec.base_url.is_some()
            || spec.brokers.is_some()
            || spec.directory.is_some()
            || spec.auth.is_some()
        {
            p.connector(
                None,
                "base_url, auth, brokers and directory are settings of http, kafka and file connectors; a database connector has engine and url",
            );
        }
        let zone_offset = match &spec.time_zone {
            None => 8 * 3600,
            Some(z) => parse_offset(z.get_ref()).unwrap_or_else(|| {
                p.connector(
                    Some(z.span().start),
                    format!(
                        "time_zone must be an offset such as \"+08:00\", not {:?}",
                        z.get_ref()
                    ),
                );
                0
            }),
        };
        let mut operations = BTreeMap::new();
        for (name, sop) in &spec.operations {
            let op = sop.get_ref();
            if let Some(t) = &op.table {
                if !is_name(t, true) {
                    p.op(
                        name,
                        sop,
                        format!("table {t:?} must be a name (letters, digits, _) or schema.name"),
                    );
                }
            }
            let made = match op.direction {
                Direction::Source => {
                    p.foreign(
                        name,
                        sop,
                        "database source",
                        &[
                            "table",
                            "query",
                            "watermark",
                            "mark",
                            "batch",
                            "poll_interval",
                        ],
                    );
                    match (&op.table, &op.query) {
                        (None, None) => p.need(name, sop, "database", "table or query"),
                        (Some(_), Some(_)) => p.op(name, sop, "give table or query, not both"),
                        _ => {}
                    }
                    let watermark = op.watermark.as_ref().map(|w| w.names()).unwrap_or_default();
                    if watermark.is_empty() {
                        p.need(name, sop, "database", "watermark (an increasing id column, or a time column then an id column)");
                    } else if watermark.len() > 2 {
                        p.op(
                            name,
                            sop,
                            "watermark is one column, or a time column then an id column",
                        );
                    }
                    for w in &watermark {
                        if !is_name(w, false) {
                            p.op(name, sop, format!("watermark column {w:?} must be a name"));
                        }
                    }
                    if let Some(m) = &op.mark {
                        if op.table.is_none() {
                            p.op(name, sop, "mark writes to a table: give table, not query");
                        }
                        if !is_name(&m.column, false) {
                            p.op(
                                name,
                                sop,
                                format!("mark column {:?} must be a name", m.column),
                            );
                        }
                    }
                    DatabaseOperation::Read(Read {
                        table: op.table.clone(),
                        query: op.query.clone(),
                        watermark,
                        mark: op.mark.clone(),
                        page: batch(&mut p, name, sop, 500, Ok(())),
                        poll: op
                            .poll_interval
                            .map(|d| d.0)
                            .unwrap_or(Duration::from_secs(5)),
                    })
                }
                Direction::Sink => {
                    p.foreign(
                        name,
                        sop,
                        "database sink",
                        &["table", "key_column", "upsert_on", "batch"],
                    );
                    let Some(table) = op.table.clone() else {
                        p.need(name, sop, "database", "table");
                        continue;
                    };
                    let key_column = op
                        .key_column
                        .clone()
                        .unwrap_or_else(|| "idempotency_key".into());
                    let upsert_on = op.upsert_on.clone().unwrap_or_default();
                    for c in std::iter::once(&key_column).chain(&upsert_on) {
                        if !is_name(c, false) {
                            p.op(name, sop, format!("column {c:?} must be a name"));
                        }
                    }
                    DatabaseOperation::Write(Write {
                        table,
                        key_column,
                        upsert_on,
                        batch: batch(&mut p, name, sop, 500, Ok(())),
                    })
                }
            };
            operations.insert(name.clone(), made);
        }
        match (engine, spec.url.clone()) {
            (Some(engine), Some(url)) => p.or(DatabaseSettings {
                engine,
                url,
                zone_offset,
                timeout: spec.timeout.map(|d| d.0),
                connections: spec.concurrency.unwrap_or(4).max(1) as usize,
                operations,
            }),
            _ => Err(p.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Result<DatabaseSettings, Vec<String>> {
        let spec: ConnectorSpec = toml::from_str(text).expect("parses");
        DatabaseSettings::of(&spec).map_err(|ps| ps.into_iter().map(|p| p.message).collect())
    }

    #[test]
    fn a_front_end_database_reads_and_writes_tables() {
        let s = settings(
            r#"
kind = "database"
engine = "mariadb"
url = "${env:FRONT_DB}"
time_zone = "+08:00"
[operations.decisions]
direction = "source"
schema = "ReferralDecision"
table = "front.decisions"
watermark = ["decided_at", "id"]
mark = { column = "read_flag", value = "1" }
batch = 200
[operations.referrals]
direction = "sink"
schema = "EmploymentReferral"
table = "referrals"
upsert_on = ["request_id"]
"#,
        )
        .unwrap();
        assert_eq!(s.engine, Engine::Mysql);
        assert_eq!(s.zone_offset, 8 * 3600);
        let DatabaseOperation::Read(r) = &s.operations["decisions"] else {
            panic!()
        };
        assert_eq!(r.watermark, ["decided_at", "id"]);
        assert_eq!(r.page, 200);
        assert_eq!(r.mark.as_ref().unwrap().column, "read_flag");
        let DatabaseOperation::Write(w) = &s.operations["referrals"] else {
            panic!()
        };
        assert_eq!(w.key_column, "idempotency_key");
        assert_eq!(w.upsert_on, ["request_id"]);
    }

    #[test]
    fn each_problem_is_named() {
        let e = settings(
            r#"
kind = "database"
engine = "oracle"
url = "${env:X}"
time_zone = "Beijing"
[operations.a]
direction = "source"
schema = "X"
query = "SELECT * FROM t"
mark = { column = "f", value = "1" }
[operations.b]
direction = "sink"
schema = "X"
table = "t; DROP TABLE x"
topic = "t"
"#,
        )
        .unwrap_err();
        let all = e.join("\n");
        for want in [
            "engine must be postgres or mysql",
            "time_zone must be an offset",
            "operation a: a database source operation needs watermark",
            "operation a: mark writes to a table",
            "operation b: table \"t; DROP TABLE x\" must be a name",
            "operation b: topic is not a setting of database sink operations",
        ] {
            assert!(all.contains(want), "{want:?} not in:\n{all}");
        }
        let inline = toml::from_str::<ConnectorSpec>(
            "kind = \"database\"\nengine = \"postgres\"\nurl = \"postgres://u:pw@h/db\"\n",
        );
        assert!(inline.is_err(), "a URL written inline is refused");
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+08:00"), Some(28800));
        assert_eq!(parse_offset("-05:30"), Some(-19800));
        assert_eq!(parse_offset("Z"), Some(0));
        assert_eq!(parse_offset("8"), None);
        assert!(is_name("front.t_1", true) && !is_name("front.t", false) && !is_name("1t", false));
    }
}
