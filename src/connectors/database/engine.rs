//! The two engines behind one face: describe a table or query, read a page
//! of rows in watermark order as text, mark rows, write a batch in one
//! transaction. SQL is built here only from names checked by the settings
//! (quoted) and the configured query; every value travels as a parameter.

use super::settings::{DatabaseSettings, Engine};
use super::value::{Cell, Column, Kind};
use crate::connectors::BuildError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use mysql_async::prelude::Queryable;
use std::str::FromStr;
use std::time::Duration;

/// What a database error means for the rows that met it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// This data was refused (a constraint, a value of the wrong type):
    /// other rows may go in.
    Row,
    /// The statement cannot work (no such table or column, no
    /// permission): no row will go in until the configuration or the
    /// database is changed.
    Config,
    /// The database is down, busy or the connection broke: try again.
    Transient,
}

/// A database error, in words safe to keep (long digit runs masked).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DbError {
    /// What the database said.
    pub reason: String,
    /// What it means.
    pub fault: Fault,
}

impl DbError {
    fn new(reason: impl AsRef<str>, fault: Fault) -> DbError {
        DbError {
            reason: crate::dispatch::failure::excerpt(reason.as_ref(), 400),
            fault,
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> DbError {
        match e.as_db_error() {
            Some(d) => {
                let fault = match &d.code().code()[..2] {
                    "22" | "23" => Fault::Row,
                    "42" | "28" | "3F" | "0A" | "25" => Fault::Config,
                    _ => Fault::Transient,
                };
                DbError::new(
                    format!("{} (SQLSTATE {})", d.message(), d.code().code()),
                    fault,
                )
            }
            None => DbError::new(e.to_string(), Fault::Transient),
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> DbError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            e => DbError::new(format!("no connection: {e}"), Fault::Transient),
        }
    }
}

impl From<mysql_async::Error> for DbError {
    fn from(e: mysql_async::Error) -> DbError {
        match &e {
            mysql_async::Error::Server(s) => {
                let fault = match s.code {
                    // Lock wait timeout, deadlock, too many connections,
                    // read-only, server shutting down.
                    1205 | 1213 | 1040 | 1290 | 1053 | 1927 => Fault::Transient,
                    // No such table, column or database; syntax; access.
                    1146 | 1054 | 1049 | 1064 | 1044 | 1045 | 1142 | 1143 => Fault::Config,
                    _ => Fault::Row,
                };
                DbError::new(format!("{} (MySQL error {})", s.message, s.code), fault)
            }
            _ => DbError::new(e.to_string(), Fault::Transient),
        }
    }
}

/// A pool of connections to one front-end database.
#[derive(Clone)]
pub enum Db {
    /// PostgreSQL.
    Pg(Pool),
    /// MySQL or MariaDB.
    My(mysql_async::Pool),
}

/// A statement's time limit on connections the hub opens.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

impl Db {
    /// A pool for the connector's database (connections are made when
    /// first used); the URL's secret is read now.
    pub fn open(s: &DatabaseSettings) -> Result<Db, BuildError> {
        let url = s.url.resolve()?;
        let timeout = s.timeout.unwrap_or(STATEMENT_TIMEOUT);
        let shown = s.url.to_string();
        Db::with_url(
            s.engine,
            &url,
            s.zone_offset,
            timeout,
            s.connections,
            &shown,
        )
    }

    /// A pool for `url` (`shown` in errors: never the URL itself, which
    /// holds a password).
    fn with_url(
        engine: Engine,
        url: &str,
        zone_offset: i32,
        timeout: Duration,
        connections: usize,
        shown: &str,
    ) -> Result<Db, BuildError> {
        match engine {
            Engine::Postgres => {
                let mut cfg =
                    tokio_postgres::Config::from_str(url).map_err(|e| BuildError::Url {
                        url: shown.to_string(),
                        reason: e.to_string(),
                    })?;
                cfg.connect_timeout(timeout);
                let opts = format!(
                    "{} -c statement_timeout={}",
                    cfg.get_options().unwrap_or(""),
                    timeout.as_millis()
                );
                cfg.options(opts.trim());
                let mgr = Manager::from_config(
                    cfg,
                    tokio_postgres::NoTls,
                    ManagerConfig {
                        recycling_method: RecyclingMethod::Fast,
                    },
                );
                let pool = Pool::builder(mgr)
                    .max_size(connections)
                    .wait_timeout(Some(timeout))
                    .create_timeout(Some(timeout))
                    .runtime(deadpool_postgres::Runtime::Tokio1)
                    .build()
                    .map_err(|e| BuildError::Url {
                        url: shown.to_string(),
                        reason: e.to_string(),
                    })?;
                Ok(Db::Pg(pool))
            }
            Engine::Mysql => {
                let opts = mysql_async::Opts::from_url(url).map_err(|e| BuildError::Url {
                    url: shown.to_string(),
                    reason: e.to_string(),
                })?;
                let constraints =
                    mysql_async::PoolConstraints::new(0, connections).expect("0 <= connections");
                let opts = mysql_async::OptsBuilder::from_opts(opts)
                    .pool_opts(mysql_async::PoolOpts::default().with_constraints(constraints))
                    // Refuse bad values rather than truncate them; read and
                    // write date-times in the connector's zone.
                    .init(vec![
                        "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"
                            .to_string(),
                        format!("SET time_zone = '{}'", offset_text(zone_offset)),
                    ]);
                Ok(Db::My(mysql_async::Pool::new(opts)))
            }
        }
    }

    /// A pool for `url` (`postgres://…` or `mysql://…`), `connections` at
    /// most, date-times without a zone in +08:00 (the demo's simulated
    /// departments use it).
    pub fn connect(url: &str, connections: usize) -> Result<Db, BuildError> {
        let engine = if url.starts_with("mysql://") {
            Engine::Mysql
        } else {
            Engine::Postgres
        };
        Db::with_url(
            engine,
            url,
            8 * 3600,
            STATEMENT_TIMEOUT,
            connections,
            "the url",
        )
    }

    /// Whether this is MySQL.
    pub fn mysql(&self) -> bool {
        matches!(self, Db::My(_))
    }

    /// An SQL name quoted for this engine (`schema.name` quoted per part).
    pub fn quote(&self, name: &str) -> String {
        let q = if self.mysql() { '`' } else { '"' };
        name.split('.')
            .map(|p| format!("{q}{p}{q}"))
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The columns of `from` (a quoted table, or `(query) q`).
    pub async fn columns(&self, from: &str) -> Result<Vec<Column>, DbError> {
        let sql = format!("SELECT * FROM {from} LIMIT 0");
        match self {
            Db::Pg(pool) => {
                let c = pool.get().await?;
                let st = c.prepare(&sql).await?;
                Ok(st
                    .columns()
                    .iter()
                    .map(|c| Column {
                        name: c.name().to_string(),
                        kind: Kind::of_postgres(c.type_().name()),
                    })
                    .collect())
            }
            Db::My(pool) => {
                let mut c = pool.get_conn().await?;
                let st = c.prep(sql).await?;
                Ok(st
                    .columns()
                    .iter()
                    .map(|c| Column {
                        name: c.name_str().to_string(),
                        kind: mysql_kind(c),
                    })
                    .collect())
            }
        }
    }

    /// The PostgreSQL type names of `cols` of `from`, for casting
    /// watermark parameters.
    pub async fn pg_types(&self, from: &str, cols: &[String]) -> Result<Vec<String>, DbError> {
        let Db::Pg(pool) = self else {
            return Ok(Vec::new());
        };
        let list: Vec<String> = cols.iter().map(|c| self.quote(c)).collect();
        let sql = format!("SELECT {} FROM {from} LIMIT 0", list.join(", "));
        let c = pool.get().await?;
        let st = c.prepare(&sql).await?;
        Ok(st
            .columns()
            .iter()
            .map(|c| c.type_().name().to_string())
            .collect())
    }

    /// Runs a page query: every column as text (or NULL).
    pub async fn rows(
        &self,
        sql: &str,
        params: &[String],
        ncols: usize,
    ) -> Result<Vec<Vec<Option<String>>>, DbError> {
        match self {
            Db::Pg(pool) => {
                let c = pool.get().await?;
                let st = c.prepare_cached(sql).await?;
                let ps = pg_params(params);
                let rows = c.query(&st, &ps).await?;
                Ok(rows
                    .iter()
                    .map(|r| (0..ncols).map(|i| r.get::<_, Option<String>>(i)).collect())
                    .collect())
            }
            Db::My(pool) => {
                let mut c = pool.get_conn().await?;
                let st = c.prep(sql).await?;
                let cols = st.columns();
                let ps: Vec<mysql_async::Value> = params
                    .iter()
                    .map(|p| mysql_async::Value::from(p.as_str()))
                    .collect();
                let rows: Vec<mysql_async::Row> =
                    c.exec(&st, mysql_async::Params::Positional(ps)).await?;
                Ok(rows
                    .into_iter()
                    .map(|r| {
                        r.unwrap()
                            .into_iter()
                            .zip(cols.iter())
                            .map(|(v, c)| mysql_text(v, c))
                            .collect()
                    })
                    .collect())
            }
        }
    }

    /// Runs a statement with text parameters (or NULL); the rows it changed.
    pub async fn execute(&self, sql: &str, params: &[Option<String>]) -> Result<u64, DbError> {
        match self {
            Db::Pg(pool) => {
                let c = pool.get().await?;
                let st = c.prepare_cached(sql).await?;
                let ps = pg_params(params);
                Ok(c.execute(&st, &ps).await?)
            }
            Db::My(pool) => {
                let mut c = pool.get_conn().await?;
                let ps: Vec<mysql_async::Value> = params
                    .iter()
                    .map(|p| match p {
                        Some(p) => mysql_async::Value::from(p.as_str()),
                        None => mysql_async::Value::NULL,
                    })
                    .collect();
                c.exec_drop(sql, mysql_async::Params::Positional(ps))
                    .await?;
                Ok(c.affected_rows())
            }
        }
    }

    /// PostgreSQL: one statement taking the batch as a JSON array
    /// (`json_populate_recordset`), in its own transaction.
    pub async fn pg_write(&self, sql: &str, rows: &serde_json::Value) -> Result<u64, DbError> {
        let Db::Pg(pool) = self else {
            unreachable!("pg_write on MySQL")
        };
        let c = pool.get().await?;
        let st = c.prepare_cached(sql).await?;
        let text = rows.to_string();
        Ok(c.execute(&st, &[&text]).await?)
    }

    /// MySQL: the rows in one statement (atomic on its own: one round
    /// trip); where some key is there already (a redelivery; error 1062),
    /// again in one transaction without the keys already there (`exists`,
    /// with the keys as parameters; `None` for an upsert, whose statement
    /// replaces them). `insert(n)` is the statement for `n` rows.
    pub async fn my_write(
        &self,
        exists: Option<&str>,
        keys: &[String],
        insert: impl Fn(usize) -> String,
        rows: Vec<(&str, &[Cell])>,
    ) -> Result<u64, DbError> {
        let Db::My(pool) = self else {
            unreachable!("my_write on PostgreSQL")
        };
        let mut c = pool.get_conn().await?;
        let values = |rows: &[(&str, &[Cell])]| -> Vec<mysql_async::Value> {
            rows.iter()
                .flat_map(|(_, cells)| cells.iter().cloned().map(my_value))
                .collect()
        };
        let first = c
            .exec_drop(
                insert(rows.len()),
                mysql_async::Params::Positional(values(&rows)),
            )
            .await;
        let q = match (first, exists) {
            (Ok(()), _) => return Ok(c.affected_rows()),
            (Err(mysql_async::Error::Server(e)), Some(q)) if e.code == 1062 => q,
            (Err(e), _) => return Err(e.into()),
        };
        let mut tx = c.start_transaction(mysql_async::TxOpts::default()).await?;
        let mut rows = rows;
        let ps: Vec<mysql_async::Value> = keys.iter().map(|k| k.as_str().into()).collect();
        let there: Vec<String> = tx.exec(q, mysql_async::Params::Positional(ps)).await?;
        let there: std::collections::HashSet<String> = there.into_iter().collect();
        rows.retain(|(k, _)| !there.contains(*k));
        let mut n = 0;
        if !rows.is_empty() {
            tx.exec_drop(
                insert(rows.len()),
                mysql_async::Params::Positional(values(&rows)),
            )
            .await?;
            n = tx.affected_rows();
        }
        tx.commit().await?;
        Ok(n)
    }
}

type PgParam<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// Parameters as tokio-postgres takes them.
fn pg_params<T: tokio_postgres::types::ToSql + Sync>(ps: &[T]) -> Vec<PgParam<'_>> {
    ps.iter().map(|p| p as PgParam<'_>).collect()
}

fn my_value(c: Cell) -> mysql_async::Value {
    match c {
        Cell::Null => mysql_async::Value::NULL,
        Cell::Int(i) => mysql_async::Value::Int(i),
        Cell::Bool(b) => mysql_async::Value::Int(b as i64),
        Cell::Text(s) => mysql_async::Value::Bytes(s.into_bytes()),
        Cell::Json(v) => mysql_async::Value::Bytes(v.to_string().into_bytes()),
    }
}

/// `+08:00` for an offset in seconds.
pub fn offset_text(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.abs();
    format!("{sign}{:02}:{:02}", a / 3600, a % 3600 / 60)
}

fn mysql_kind(c: &mysql_async::Column) -> Kind {
    use mysql_async::consts::ColumnType as T;
    match c.column_type() {
        T::MYSQL_TYPE_TINY if c.column_length() == 1 => Kind::Bool,
        T::MYSQL_TYPE_TINY
        | T::MYSQL_TYPE_SHORT
        | T::MYSQL_TYPE_LONG
        | T::MYSQL_TYPE_LONGLONG
        | T::MYSQL_TYPE_INT24
        | T::MYSQL_TYPE_YEAR => Kind::Int,
        T::MYSQL_TYPE_DECIMAL
        | T::MYSQL_TYPE_NEWDECIMAL
        | T::MYSQL_TYPE_FLOAT
        | T::MYSQL_TYPE_DOUBLE => Kind::Num,
        T::MYSQL_TYPE_JSON => Kind::Json,
        T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE => Kind::Date,
        T::MYSQL_TYPE_DATETIME
        | T::MYSQL_TYPE_DATETIME2
        | T::MYSQL_TYPE_TIMESTAMP
        | T::MYSQL_TYPE_TIMESTAMP2 => Kind::Time { zoned: false },
        T::MYSQL_TYPE_VARCHAR
        | T::MYSQL_TYPE_VAR_STRING
        | T::MYSQL_TYPE_STRING
        | T::MYSQL_TYPE_BLOB
        | T::MYSQL_TYPE_TINY_BLOB
        | T::MYSQL_TYPE_MEDIUM_BLOB
        | T::MYSQL_TYPE_LONG_BLOB
        | T::MYSQL_TYPE_ENUM => Kind::Text,
        _ => Kind::Other,
    }
}

/// A MySQL value (binary protocol) as the text the server would show.
fn mysql_text(v: mysql_async::Value, c: &mysql_async::Column) -> Option<String> {
    use mysql_async::Value as V;
    Some(match v {
        V::NULL => return None,
        V::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
        V::Int(i) => i.to_string(),
        V::UInt(u) => u.to_string(),
        V::Float(f) => f.to_string(),
        V::Double(d) => d.to_string(),
        V::Date(y, mo, d, h, mi, s, us) => match mysql_kind(c) {
            Kind::Date => format!("{y:04}-{mo:02}-{d:02}"),
            _ => format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"),
        },
        V::Time(neg, d, h, mi, s, us) => {
            let h = d * 24 + h as u32;
            format!(
                "{}{h:02}:{mi:02}:{s:02}.{us:06}",
                if neg { "-" } else { "" }
            )
        }
    })
}
