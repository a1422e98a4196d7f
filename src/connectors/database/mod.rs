//! Front-end database tables (库表交换 through a 前置库): PostgreSQL and
//! MySQL / MariaDB tables as sources and sinks.
//!
//! Source: a table (or a configured query) is read a page at a time in the
//! order of its watermark, an increasing id or a time then an id; the last
//! watermark column identifies a row. A page's records and the watermark
//! after them are stored in one store transaction (the source's cursor),
//! so a hub that dies re-reads at most the page it had not stored, and the
//! inbox keeps each row once (its id is the operation's `id_field`, or
//! `<table> row <id>`). With `mark`, a column is written on each row once
//! it is stored (idempotently), and the rows not yet marked are what is
//! read, whatever their watermark: a row committed late with a lower id
//! is still found. Columns are read against the operation's schema by
//! name: a column that does not fit its field quarantines that row with a
//! reason naming the table, row and column, and the page goes on.
//!
//! Sink: the record's top-level fields go to the columns of the same
//! name, the idempotency key to `key_column` (unique), nested records and
//! lists as JSON text (or JSON, where the column is JSON). A batch is one
//! transaction; a redelivered row is a no-op (`ON CONFLICT DO NOTHING` on
//! PostgreSQL, keys already there left out on MySQL), or, with
//! `upsert_on`, the row is replaced. A row the database refuses (a
//! constraint, a value of the wrong type) is found by halving the batch
//! and is dead with the database's reason; the rest of the batch goes in.

pub mod engine;
pub mod settings;
pub mod value;

use crate::connectors::intake::Intake;
use crate::connectors::BuildError;
use crate::dispatch::failure::DeliveryError;
use crate::dispatch::{Delivered, Sink};
use crate::schema::{RecordType, Type};
use crate::store::{Claimed, StoreError};
use chrono::FixedOffset;
use engine::{Db, DbError, Fault};
use futures::future::BoxFuture;
use settings::{DatabaseSettings, Read, Write};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OnceCell};
use value::{Cell, Column, Kind};

/// Why a poll of a front-end table failed (nothing was stored; the page
/// is read again).
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The database refused or could not be reached.
    #[error("{what}: {error}")]
    Database {
        /// What was read.
        what: String,
        /// Why.
        error: DbError,
    },
    /// The table or query lacks a watermark column.
    #[error("{what} has no column {column} (a watermark column)")]
    NoColumn {
        /// What was read.
        what: String,
        /// The column.
        column: String,
    },
    /// The store could not take the page.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a source found out about its table once.
struct SourcePlan {
    columns: Vec<Column>,
    /// (column, field index) for each field that has a column.
    fields: Vec<(usize, usize)>,
    /// Indexes of the watermark columns.
    watermark: Vec<usize>,
    /// The page query, first page (or with `mark`).
    first: String,
    /// The page query after a cursor.
    after: String,
    /// Marks rows, with the mark value then the ids as parameters (`n`
    /// ids): built per page.
    mark: Option<(String, Vec<String>)>,
}

/// Reads a front-end table into the inbox.
pub struct DatabaseSource {
    intake: Intake,
    db: Db,
    read: Read,
    zone: FixedOffset,
    plan: OnceCell<SourcePlan>,
}

impl DatabaseSource {
    /// A source reading `read` from the connector's database.
    pub fn new(intake: Intake, s: &DatabaseSettings, read: Read) -> Result<Self, BuildError> {
        Ok(DatabaseSource {
            intake,
            db: Db::open(s)?,
            read,
            zone: FixedOffset::east_opt(s.zone_offset).expect("the settings check the offset"),
            plan: OnceCell::new(),
        })
    }

    fn from(&self) -> String {
        match (&self.read.table, &self.read.query) {
            (Some(t), _) => format!("{} src", self.db.quote(t)),
            (None, Some(q)) => format!("({q}) src"),
            (None, None) => unreachable!("the settings need table or query"),
        }
    }

    async fn make_plan(&self) -> Result<SourcePlan, PollError> {
        let what = self.read.what();
        let from = self.from();
        let db_err = |error| PollError::Database {
            what: what.clone(),
            error,
        };
        let columns = self.db.columns(&from).await.map_err(db_err)?;
        let record = record_of(self.intake.source_type());
        let fields = record
            .fields
            .iter()
            .enumerate()
            .filter_map(|(fi, f)| value::column_of(&columns, &f.name).map(|ci| (ci, fi)))
            .collect();
        let mut watermark = Vec::new();
        for w in &self.read.watermark {
            let i = value::column_of(&columns, w).ok_or_else(|| PollError::NoColumn {
                what: what.clone(),
                column: w.clone(),
            })?;
            watermark.push(i);
        }
        // Every column is named through the alias `src`: PostgreSQL reads
        // the rows as text, and a bare name in ORDER BY would be the text
        // (`10002` before `1002`).
        let q = |c: &str| format!("src.{}", self.db.quote(c));
        let table = self
            .read
            .table
            .as_deref()
            .map(|t| self.db.quote(t))
            .unwrap_or_default();
        let bare = |c: &str| self.db.quote(c);
        let list: Vec<String> = columns
            .iter()
            .map(|c| match self.db {
                Db::Pg(_) => format!("{}::text", q(&c.name)),
                Db::My(_) => q(&c.name),
            })
            .collect();
        let order: Vec<String> = self.read.watermark.iter().map(|w| q(w)).collect();
        let order = order.join(", ");
        let select = format!("SELECT {} FROM {from}", list.join(", "));
        let limit = format!("ORDER BY {order} LIMIT {}", self.read.page);
        let id = self.read.watermark.last().expect("a watermark").clone();
        let (first, after, mark) = match (&self.read.mark, self.db.mysql()) {
            (Some(m), false) => {
                let types = self
                    .db
                    .pg_types(&from, &[m.column.clone(), id.clone()])
                    .await
                    .map_err(db_err)?;
                let page = format!(
                    "{select} WHERE {}::text IS DISTINCT FROM $1 {limit}",
                    q(&m.column)
                );
                let update = format!(
                    "UPDATE {table} SET {} = CAST($1::text AS {}) WHERE {} IN ",
                    bare(&m.column),
                    types[0],
                    bare(&id)
                );
                (page.clone(), page, Some((update, vec![types[1].clone()])))
            }
            (Some(m), true) => {
                let page = format!(
                    "{select} WHERE ({c} IS NULL OR {c} <> ?) {limit}",
                    c = q(&m.column)
                );
                let update = format!(
                    "UPDATE {table} SET {} = ? WHERE {} IN ",
                    bare(&m.column),
                    bare(&id)
                );
                (page.clone(), page, Some((update, Vec::new())))
            }
            (None, mysql) => {
                let params: Vec<String> = if mysql {
                    vec!["?".into(); order.split(", ").count()]
                } else {
                    let types = self
                        .db
                        .pg_types(&from, &self.read.watermark)
                        .await
                        .map_err(db_err)?;
                    types
                        .iter()
                        .enumerate()
                        .map(|(i, t)| format!("CAST(${}::text AS {t})", i + 1))
                        .collect()
                };
                let after = format!("{select} WHERE ({order}) > ({}) {limit}", params.join(", "));
                (format!("{select} {limit}"), after, None)
            }
        };
        Ok(SourcePlan {
            columns,
            fields,
            watermark,
            first,
            after,
            mark,
        })
    }

    /// Polls until `shutdown`: at once again while pages come back full,
    /// after `poll_interval` otherwise, with a growing pause after failures.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let source = self.intake.source().to_string();
        tracing::info!(source = %source, what = %self.read.what(), "Reading front-end table");
        let mut failures = 0u32;
        loop {
            let wait = match self.poll_once().await {
                Ok(true) => {
                    failures = 0;
                    Duration::ZERO
                }
                Ok(false) => {
                    failures = 0;
                    self.read.poll
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(source = %source, error = %e, "Reading the front-end table failed; trying again");
                    self.read
                        .poll
                        .min(Duration::from_millis(250) * (1 << failures.min(5)))
                }
            };
            if crate::connectors::pause(wait, &mut shutdown).await {
                return;
            }
        }
    }

    /// Reads one page and stores it; true if another page may follow at once.
    pub async fn poll_once(&self) -> Result<bool, PollError> {
        let source = self.intake.source().to_string();
        let cursor = match &self.read.mark {
            Some(_) => None,
            None => self.intake.store().cursor(&source).await?,
        };
        let page = self.read_page(cursor.as_deref()).await?;
        let n = page.records.len();
        if n == 0 {
            return Ok(false);
        }
        let o = self.intake.commit(page.records).await?;
        tracing::info!(source = %source, rows = n, stored = o.stored, already_stored = o.duplicates,
            messages = o.messages, quarantined = o.quarantined, "Front-end rows stored");
        let plan = self.plan.get().expect("read_page made the plan");
        if let (Some((update, types)), Some(m)) = (&plan.mark, &self.read.mark) {
            // Stored: now mark them read. A hub that dies before this reads
            // them again, and the inbox keeps each once.
            let marks: Vec<String> = match types.first() {
                Some(t) => (0..page.ids.len())
                    .map(|i| format!("CAST(${}::text AS {t})", i + 2))
                    .collect(),
                None => vec!["?".into(); page.ids.len()],
            };
            let sql = format!("{update}({})", marks.join(", "));
            let params: Vec<Option<String>> = std::iter::once(m.value.clone())
                .chain(page.ids)
                .map(Some)
                .collect();
            self.db
                .execute(&sql, &params)
                .await
                .map_err(|error| PollError::Database {
                    what: format!("marking rows of {}", self.read.what()),
                    error,
                })?;
        }
        Ok(n == self.read.page)
    }

    /// Reads the page after `cursor` (with `mark`: the first rows not yet
    /// marked), each row read against the schema and mapped, ready to
    /// store; nothing is stored or marked.
    pub async fn read_page(&self, cursor: Option<&str>) -> Result<Page, PollError> {
        let plan = self.plan.get_or_try_init(|| self.make_plan()).await?;
        let what = self.read.what();
        let (sql, params) = match (&self.read.mark, cursor) {
            (Some(m), _) => (&plan.first, vec![m.value.clone()]),
            (None, None) => (&plan.first, Vec::new()),
            (None, Some(c)) => (
                &plan.after,
                serde_json::from_str::<Vec<String>>(c).unwrap_or_default(),
            ),
        };
        let rows = self
            .db
            .rows(sql, &params, plan.columns.len())
            .await
            .map_err(|error| PollError::Database {
                what: what.clone(),
                error,
            })?;
        let record = record_of(self.intake.source_type());
        let fields: Vec<_> = plan
            .fields
            .iter()
            .map(|(c, f)| (*c, &record.fields[*f]))
            .collect();
        let id_col = *plan.watermark.last().expect("a watermark");
        let last = rows.len().saturating_sub(1);
        let mut page = Page {
            ids: Vec::with_capacity(rows.len()),
            records: Vec::with_capacity(rows.len()),
            cursor: None,
        };
        for (i, row) in rows.iter().enumerate() {
            let id = row[id_col].clone().unwrap_or_else(|| "NULL".into());
            let cursor = (i == last).then(|| {
                let wm: Vec<String> = plan
                    .watermark
                    .iter()
                    .map(|w| row[*w].clone().unwrap_or_default())
                    .collect();
                serde_json::to_string(&wm).unwrap_or_default()
            });
            page.cursor.clone_from(&cursor);
            let at = format!("{what}, row {id}");
            let name = format!("{} row {id}", self.read.table.as_deref().unwrap_or("query"));
            let ingest = match value::read_row(&plan.columns, &fields, row, &self.zone) {
                Ok(json) => {
                    let mut ing = self.intake.prepare(&json, Some(name), cursor);
                    for q in &mut ing.quarantine {
                        q.reason = format!("{at}: {}", q.reason);
                    }
                    ing
                }
                Err(why) => self.intake.unreadable(
                    &value::row_as_text(&plan.columns, row),
                    Some(name),
                    &format!("{at}: {why}"),
                    cursor,
                ),
            };
            page.ids.push(id);
            page.records.push(ingest);
        }
        Ok(page)
    }
}

/// A page of rows, read and mapped, not yet stored.
pub struct Page {
    /// Each row's id (its last watermark column).
    pub ids: Vec<String>,
    /// The rows, ready for the store (the last carries the cursor).
    pub records: Vec<crate::store::Ingest>,
    /// The watermark after the page.
    pub cursor: Option<String>,
}

fn record_of(ty: &Type) -> &RecordType {
    match ty {
        Type::Record(r) => r,
        _ => unreachable!("operation schemas are records"),
    }
}

/// What a sink found out about its table once.
struct SinkPlan {
    /// (column name, kind, field index; None for the key column).
    columns: Vec<(String, Kind, Option<usize>)>,
    /// PostgreSQL: the statement taking the batch as JSON.
    pg: String,
    /// MySQL: which keys are there already (insert without upsert).
    exists: Option<String>,
    /// MySQL: the insert's head and tail around the rows' placeholders.
    insert: (String, String),
}

/// Writes rows into a front-end table.
pub struct DatabaseSink {
    db: Db,
    write: Write,
    record: Arc<RecordType>,
    zone: FixedOffset,
    what: String,
    plan: OnceCell<SinkPlan>,
}

impl DatabaseSink {
    /// A sink writing `record` rows per `write` into the connector's database.
    pub fn new(
        s: &DatabaseSettings,
        write: Write,
        record: Arc<RecordType>,
    ) -> Result<Self, BuildError> {
        Ok(DatabaseSink {
            db: Db::open(s)?,
            what: format!("table {}", write.table),
            write,
            record,
            zone: FixedOffset::east_opt(s.zone_offset).expect("the settings check the offset"),
            plan: OnceCell::new(),
        })
    }

    async fn make_plan(&self) -> Result<SinkPlan, DbError> {
        let table = self.db.quote(&self.write.table);
        let found = self.db.columns(&table).await?;
        let key = &self.write.key_column;
        let mut columns = Vec::new();
        let kc = value::column_of(&found, key).ok_or_else(|| DbError {
            reason: format!("{} has no column {key} for the idempotency key", self.what),
            fault: Fault::Config,
        })?;
        columns.push((found[kc].name.clone(), found[kc].kind, None));
        for (fi, f) in self.record.fields.iter().enumerate() {
            match value::column_of(&found, &f.name) {
                Some(ci) if ci != kc => {
                    columns.push((found[ci].name.clone(), found[ci].kind, Some(fi)))
                }
                Some(_) => {}
                None => {
                    tracing::debug!(table = %self.write.table, field = %f.name, "No column for field; not written")
                }
            }
        }
        for u in &self.write.upsert_on {
            if value::column_of(&found, u).is_none() {
                return Err(DbError {
                    reason: format!("{} has no column {u} (upsert_on)", self.what),
                    fault: Fault::Config,
                });
            }
        }
        let q = |c: &str| self.db.quote(c);
        let names: Vec<String> = columns.iter().map(|(n, ..)| q(n)).collect();
        let list = names.join(", ");
        let upsert = !self.write.upsert_on.is_empty();
        let updates: Vec<&String> = columns
            .iter()
            .zip(&names)
            .filter(|((n, ..), _)| {
                !self
                    .write
                    .upsert_on
                    .iter()
                    .any(|u| u.eq_ignore_ascii_case(n))
            })
            .map(|(_, qn)| qn)
            .collect();
        let pg = {
            let conflict = if upsert {
                let on: Vec<String> = self.write.upsert_on.iter().map(|u| q(u)).collect();
                let set: Vec<String> = updates
                    .iter()
                    .map(|c| format!("{c} = EXCLUDED.{c}"))
                    .collect();
                format!(
                    "ON CONFLICT ({}) DO UPDATE SET {}",
                    on.join(", "),
                    set.join(", ")
                )
            } else {
                format!("ON CONFLICT ({}) DO NOTHING", q(key))
            };
            format!(
                "INSERT INTO {table} ({list}) SELECT {list} FROM json_populate_recordset(NULL::{table}, $1::text::json) {conflict}"
            )
        };
        let exists =
            (!upsert).then(|| format!("SELECT {} FROM {table} WHERE {} IN ", q(key), q(key)));
        let tail = if upsert {
            let set: Vec<String> = updates
                .iter()
                .map(|c| format!("{c} = VALUES({c})"))
                .collect();
            format!(" ON DUPLICATE KEY UPDATE {}", set.join(", "))
        } else {
            String::new()
        };
        Ok(SinkPlan {
            columns,
            pg,
            exists,
            insert: (format!("INSERT INTO {table} ({list}) VALUES "), tail),
        })
    }

    /// A message's row: the key, then each column's cell.
    fn row(&self, plan: &SinkPlan, m: &Claimed) -> Result<Vec<Cell>, String> {
        let v: serde_json::Value = serde_json::from_slice(&m.payload)
            .map_err(|e| format!("the stored record is not JSON: {e}"))?;
        let obj = v
            .as_object()
            .ok_or("the stored record is not a JSON object")?;
        let mysql = self.db.mysql();
        Ok(plan
            .columns
            .iter()
            .map(|(_, kind, field)| match field {
                None => Cell::Text(m.idem_key.clone()),
                Some(fi) => {
                    let f = &self.record.fields[*fi];
                    let v = obj.get(&f.name).unwrap_or(&serde_json::Value::Null);
                    value::write_value(*kind, &f.ty, v, &self.zone, mysql)
                }
            })
            .collect())
    }

    /// Writes rows in one transaction.
    async fn write_rows(
        &self,
        plan: &SinkPlan,
        rows: &[(usize, &Claimed, Vec<Cell>)],
    ) -> Result<(), DbError> {
        match &self.db {
            Db::Pg(_) => {
                let arr: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(_, _, cells)| {
                        let m: serde_json::Map<String, serde_json::Value> = plan
                            .columns
                            .iter()
                            .zip(cells)
                            .map(|((n, ..), c)| (n.clone(), cell_json(c)))
                            .collect();
                        serde_json::Value::Object(m)
                    })
                    .collect();
                self.db
                    .pg_write(&plan.pg, &serde_json::Value::Array(arr))
                    .await?;
            }
            Db::My(_) => {
                let keys: Vec<String> = rows.iter().map(|(_, m, _)| m.idem_key.clone()).collect();
                let exists = plan
                    .exists
                    .as_ref()
                    .map(|e| format!("{e}({})", vec!["?"; keys.len()].join(", ")));
                let one = format!("({})", vec!["?"; plan.columns.len()].join(", "));
                let (head, tail) = &plan.insert;
                let insert = |n: usize| format!("{head}{}{tail}", vec![one.as_str(); n].join(", "));
                let cells = rows
                    .iter()
                    .map(|(_, m, c)| (m.idem_key.as_str(), c.as_slice()))
                    .collect();
                self.db
                    .my_write(exists.as_deref(), &keys, insert, cells)
                    .await?;
            }
        }
        Ok(())
    }

    /// Delivers `ms`, each with its outcome: a batch the database refuses
    /// for its data is halved until the refused rows are found.
    async fn deliver_all(&self, ms: &[Claimed]) -> Vec<Result<Delivered, DeliveryError>> {
        let plan = match self.plan.get_or_try_init(|| self.make_plan()).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(table = %self.write.table, error = %e, "Cannot write to the front-end table");
                let e = delivery_error(&self.what, &e);
                return vec![Err(e); ms.len()];
            }
        };
        let mut out: Vec<Option<Result<Delivered, DeliveryError>>> = vec![None; ms.len()];
        let mut rows = Vec::with_capacity(ms.len());
        for (i, m) in ms.iter().enumerate() {
            match self.row(plan, m) {
                Ok(cells) => rows.push((i, m, cells)),
                Err(why) => out[i] = Some(Err(DeliveryError::Request(why))),
            }
        }
        // MySQL takes at most 65,535 placeholders a statement.
        let per = (60_000 / plan.columns.len().max(1)).max(1);
        let mut todo: Vec<Vec<(usize, &Claimed, Vec<Cell>)>> = Vec::new();
        let mut rest = rows;
        while rest.len() > per {
            let tail = rest.split_off(per);
            todo.push(rest);
            rest = tail;
        }
        if !rest.is_empty() {
            todo.push(rest);
        }
        while let Some(part) = todo.pop() {
            match self.write_rows(plan, &part).await {
                Ok(()) => {
                    for (i, ..) in &part {
                        out[*i] = Some(Ok(Delivered {
                            status_code: None,
                            excerpt: Some(format!("written to {}", self.what)),
                            response_sha256: None,
                        }));
                    }
                }
                Err(e) if e.fault == Fault::Row && part.len() > 1 => {
                    let mut a = part;
                    let b = a.split_off(a.len() / 2);
                    todo.push(b);
                    todo.push(a);
                }
                Err(e) => {
                    tracing::warn!(table = %self.write.table, rows = part.len(), error = %e, "Rows not written to the front-end table");
                    let e = delivery_error(&self.what, &e);
                    for (i, ..) in &part {
                        out[*i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.expect("every message has an outcome"))
            .collect()
    }
}

fn cell_json(c: &Cell) -> serde_json::Value {
    match c {
        Cell::Null => serde_json::Value::Null,
        Cell::Int(i) => (*i).into(),
        Cell::Bool(b) => (*b).into(),
        Cell::Text(s) => s.clone().into(),
        Cell::Json(v) => v.clone(),
    }
}

fn delivery_error(what: &str, e: &DbError) -> DeliveryError {
    DeliveryError::Database {
        reason: format!("{what}: {}", e.reason),
        transient: e.fault == Fault::Transient,
    }
}

impl Sink for DatabaseSink {
    fn deliver<'a>(&'a self, m: &'a Claimed) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move {
            self.deliver_all(std::slice::from_ref(m))
                .await
                .pop()
                .expect("one outcome")
        })
    }

    fn max_batch(&self) -> usize {
        self.write.batch
    }

    fn deliver_each<'a>(
        &'a self,
        ms: &'a [Claimed],
    ) -> BoxFuture<'a, Vec<Result<Delivered, DeliveryError>>> {
        Box::pin(self.deliver_all(ms))
    }
}
