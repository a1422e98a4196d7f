//! `mappings/<feed>.toml`: a feed from one operation to another, its
//! expressions and its test cases.

use super::connector::BodyFormat;
use crate::mapping::{MapError, Outcome, Program};
use crate::schema::{self, Datum, Schema, Type};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use toml::Spanned;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedFile {
    pub description: Option<String>,
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    #[serde(rename = "as")]
    pub root: Option<Spanned<String>>,
    pub key: Spanned<String>,
    pub idempotency_key: Option<Spanned<String>>,
    pub when: Option<Spanned<String>>,
    #[serde(default)]
    pub fields: BTreeMap<String, Spanned<String>>,
    #[serde(default, rename = "test")]
    pub tests: Vec<Spanned<TestFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TestFile {
    pub name: String,
    pub input: toml::Value,
    pub expect: Option<toml::Value>,
    pub reject: Option<String>,
    pub error: Option<String>,
    #[serde(default)]
    pub filtered: bool,
    pub idempotency_key: Option<String>,
    pub serves: Option<Vec<String>>,
}

/// `connector.operation`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpRef {
    /// Connector name (file stem under `connectors/`).
    pub connector: String,
    /// Operation name.
    pub operation: String,
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.connector, self.operation)
    }
}

/// A loaded, compiled feed.
pub struct Mapping {
    /// Feed name (file stem).
    pub name: String,
    /// Its file.
    pub file: PathBuf,
    /// What it is for.
    pub description: Option<String>,
    /// Source operation.
    pub from: OpRef,
    /// Target operation.
    pub to: OpRef,
    /// Source record schema.
    pub source: Arc<Schema>,
    /// Target record schema.
    pub target: Arc<Schema>,
    /// How source records are encoded.
    pub source_format: BodyFormat,
    /// The compiled expressions.
    pub program: Program,
    /// Test cases beside the mapping.
    pub tests: Vec<TestCase>,
    /// The source record type (kept to avoid rebuilding it per record).
    pub(super) source_ty: Type,
    /// The target record type.
    pub(super) target_ty: Type,
}

/// One test case.
pub struct TestCase {
    /// Its name.
    pub name: String,
    /// Line of its `[[test]]` table.
    pub line: usize,
    /// The source record as JSON.
    pub input: serde_json::Value,
    /// What must come out.
    pub expect: Expect,
    /// With an expected record: the business idempotency value its
    /// `idempotency_key` must give.
    pub idempotency_key: Option<String>,
    /// The provinces the case runs as a hub of (`serves = ["37"]`: what
    /// `serves()` answers); without it, every province. A provincial
    /// hub's own `mappings/tables/jurisdiction.csv` does not change what
    /// the shipped cases expect.
    pub serves: Option<Vec<String>>,
}

/// The expected result of a test case.
pub enum Expect {
    /// This target record.
    Output(Datum),
    /// A rejection at this part (target field, `when`, `key`, or input path),
    /// optionally with a message containing `error`.
    Reject {
        /// Part at fault.
        part: String,
        /// Text the message must contain.
        error: Option<String>,
    },
    /// Dropped by `when`.
    Filtered,
}

/// Where a record failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// It does not fit the source schema.
    Decode,
    /// A mapping expression or a target field check failed.
    Map,
}

/// A record that could not be mapped: where, and why. The message never
/// holds unmasked personal data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Decode or map.
    pub stage: Stage,
    /// Input path (decode) or target field / `when` / `key` (map).
    pub part: String,
    /// The reason.
    pub message: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.stage, self.part.as_str()) {
            (Stage::Decode, "") => write!(f, "input: {}", self.message),
            (Stage::Decode, p) => write!(f, "input field `{p}`: {}", self.message),
            (Stage::Map, p @ ("when" | "key")) => write!(f, "{p}: {}", self.message),
            (Stage::Map, p) => write!(f, "field `{p}`: {}", self.message),
        }
    }
}

impl From<MapError> for Rejection {
    fn from(e: MapError) -> Self {
        Rejection {
            stage: Stage::Map,
            part: e.part,
            message: crate::domain::mask::text(&e.message),
        }
    }
}

impl From<schema::DecodeError> for Rejection {
    /// The reader quotes what it found (`"…" is not one of …`): masked,
    /// since it may hold an ID number or a bank card.
    fn from(e: schema::DecodeError) -> Self {
        Rejection {
            stage: Stage::Decode,
            part: e.path,
            message: crate::domain::mask::text(&e.message),
        }
    }
}

/// The result of one test case.
pub struct TestResult {
    /// Case name.
    pub name: String,
    /// Line of the case.
    pub line: usize,
    /// `None` on success, else what differed.
    pub failure: Option<String>,
}

impl Mapping {
    /// The source type.
    pub fn source_type(&self) -> &Type {
        &self.source_ty
    }

    /// The target type.
    pub fn target_type(&self) -> &Type {
        &self.target_ty
    }

    /// Decodes one JSON source record (unknown fields are ignored).
    pub fn decode_json(&self, bytes: &[u8]) -> Result<Datum, Rejection> {
        Ok(schema::decode_json(bytes, &self.source_ty)?)
    }

    /// Maps one decoded record.
    pub fn apply(&self, rec: &Datum) -> Result<Outcome, Rejection> {
        Ok(self.program.run(rec)?)
    }

    /// Runs every test case.
    pub fn run_tests(&self) -> Vec<TestResult> {
        self.tests.iter().map(|t| self.run_test(t)).collect()
    }

    fn run_test(&self, t: &TestCase) -> TestResult {
        let provinces: Vec<String> = match &t.serves {
            Some(p) => p.clone(),
            None => crate::domain::id::PROVINCES
                .iter()
                .map(|p| format!("{p:02}"))
                .collect(),
        };
        let table = crate::mapping::Table::parse(
            "jurisdiction",
            format!(
                "province,name\n{}",
                provinces
                    .iter()
                    .map(|p| format!("{p},\n"))
                    .collect::<String>()
            )
            .as_bytes(),
        )
        .map(|t| Arc::new(t.0))
        .ok();
        let consts = table.map(|t| self.program.consts_with(t));
        let got = schema::decode_json_value(&t.input, &self.source_ty, true)
            .map_err(Rejection::from)
            .and_then(|d| match &consts {
                Some(k) => Ok(self.program.run_with(&d, k)?),
                None => self.apply(&d),
            });
        let target = &self.target_ty;
        let failure = match (&t.expect, got) {
            (
                Expect::Output(want),
                Ok(Outcome::Mapped {
                    record,
                    idempotency,
                    ..
                }),
            ) => match (&t.idempotency_key, idempotency) {
                _ if record != *want => Some(diff(&want.to_json(target), &record.to_json(target))),
                (Some(w), got) if got.as_deref() != Some(w.as_str()) => Some(format!(
                    "idempotency_key: expected {w:?}, got {:?}",
                    got.as_deref()
                        .unwrap_or("none (the mapping names no idempotency_key)")
                )),
                _ => None,
            },
            (Expect::Output(_), Ok(Outcome::Filtered)) => {
                Some("expected a record, but `when` filtered the input out".into())
            }
            (Expect::Output(_), Err(r)) => {
                Some(format!("expected a record, but it was rejected: {r}"))
            }
            (Expect::Filtered, Ok(Outcome::Filtered)) => None,
            (Expect::Filtered, Ok(Outcome::Mapped { record, .. })) => Some(format!(
                "expected `when` to filter the input out, but it mapped to {}",
                record.to_json(target)
            )),
            (Expect::Filtered, Err(r)) => Some(format!(
                "expected `when` to filter the input out, but it was rejected: {r}"
            )),
            (Expect::Reject { part, error }, Err(r)) => {
                if r.part != *part {
                    Some(format!("expected a rejection at `{part}`, but it was rejected at another place: {r}"))
                } else {
                    error
                        .as_ref()
                        .filter(|e| !r.message.contains(e.as_str()))
                        .map(|e| {
                            format!(
                                "expected a rejection at `{part}` saying {e:?}, but it said: {r}"
                            )
                        })
                }
            }
            (Expect::Reject { part, .. }, Ok(Outcome::Mapped { record, .. })) => Some(format!(
                "expected a rejection at `{part}`, but it mapped to {}",
                record.to_json(target)
            )),
            (Expect::Reject { part, .. }, Ok(Outcome::Filtered)) => Some(format!(
                "expected a rejection at `{part}`, but `when` filtered the input out"
            )),
        };
        TestResult {
            name: t.name.clone(),
            line: t.line,
            failure,
        }
    }
}

/// A field-by-field diff of two JSON records.
pub fn diff(want: &serde_json::Value, got: &serde_json::Value) -> String {
    use serde_json::Value;
    let mut lines = Vec::new();
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) if gv == wv => {}
                    Some(gv) if wv.is_object() && gv.is_object() => {
                        for l in diff(wv, gv).lines() {
                            lines.push(format!("  {k}.{}", l.trim_start()));
                        }
                    }
                    Some(gv) => lines.push(format!("  {k}: expected {wv}, got {gv}")),
                    None => lines.push(format!("  {k}: expected {wv}, got nothing")),
                }
            }
            for (k, gv) in g {
                if !w.contains_key(k) {
                    lines.push(format!("  {k}: not expected, got {gv}"));
                }
            }
        }
        _ => lines.push(format!("  expected {want}, got {got}")),
    }
    lines.join("\n")
}

/// Converts a TOML value to JSON (dates become `YYYY-MM-DD` strings).
pub fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}
