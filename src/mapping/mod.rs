//! Mappings: one source record in, zero or one target record out.
//!
//! A mapping's `when`, `key` and field expressions are CEL, type-checked
//! against the source and target Avro schemas and compiled to closures
//! ([`compile`]). [`Program::run`] evaluates them in the target schema's field
//! order and checks every value against its field's type and domain format,
//! so the first error reported is the first field that is wrong.
//!
//! Layer 3: uses the schemas and the domain rules only.

pub mod compile;
pub mod functions;
pub mod table;
pub mod value;

pub use compile::{Compiler, ExprError};
pub use table::Table;
pub use value::{EvalError, Val};

use crate::schema::{Datum, Format, RecordType, Type};
use compile::{Consts, Eval, Kind, Typed};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Which expression of a mapping a message is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// The `when` filter.
    When,
    /// The ordering `key`.
    Key,
    /// The business `idempotency_key`.
    Idempotency,
    /// The expression of a target field.
    Field(String),
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::When => f.write_str("when"),
            Part::Key => f.write_str("key"),
            Part::Idempotency => f.write_str("idempotency_key"),
            Part::Field(n) => f.write_str(n),
        }
    }
}

/// A compile error in one part of a mapping.
#[derive(Debug, Clone)]
pub struct PartError {
    /// The part.
    pub part: Part,
    /// The error, with an offset into that part's expression (or `None`
    /// when it concerns the part as a whole).
    pub offset: Option<usize>,
    /// The message.
    pub message: String,
}

/// The source text of a mapping, as the config loader hands it over.
pub struct MappingSource<'s> {
    /// Name the expressions use for the source record (`event`).
    pub root_name: &'s str,
    /// Source record type.
    pub source: Arc<RecordType>,
    /// Target record type.
    pub target: Arc<RecordType>,
    /// `when` filter, if any.
    pub when: Option<&'s str>,
    /// Ordering key expression.
    pub key: &'s str,
    /// What the message does, as the target knows it (a string): messages
    /// to one target with the same value are one delivery, whichever feed
    /// or record made them. Without it, each record's message is its own.
    pub idempotency: Option<&'s str>,
    /// Target field name → expression.
    pub fields: Vec<(&'s str, &'s str)>,
}

struct FieldProg {
    name: String,
    ty: Type,
    format: Option<Format>,
    how: How,
}

enum How {
    Expr(Eval),
    Default(Datum),
    Nested(Vec<FieldProg>),
}

/// A compiled mapping.
pub struct Program {
    consts: Consts,
    when: Option<Eval>,
    key: Eval,
    idempotency: Option<Eval>,
    fields: Vec<FieldProg>,
    target: Arc<RecordType>,
}

/// What a mapping made of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A target record and its ordering key.
    Mapped {
        /// The ordering key (the person).
        key: compact_str::CompactString,
        /// The target record.
        record: Datum,
        /// The business idempotency value, if the mapping names one.
        idempotency: Option<compact_str::CompactString>,
    },
    /// The `when` filter dropped the record.
    Filtered,
}

/// Why a record could not be mapped: the part at fault and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {message}")]
pub struct MapError {
    /// `when`, `key`, or the target field.
    pub part: String,
    /// The reason (never contains unmasked personal data).
    pub message: String,
}

impl Program {
    /// Type-checks and compiles a mapping. All errors of all parts are returned together.
    pub fn compile(
        src: &MappingSource<'_>,
        tables: &BTreeMap<String, Arc<Table>>,
    ) -> Result<Program, Vec<PartError>> {
        let mut c = Compiler::new(src.root_name, src.source.clone(), tables);
        let mut errors = Vec::new();

        let when = match src.when {
            None => None,
            Some(w) => {
                let t = c.compile(w);
                let f = t.and_then(|t| c.want(t, Kind::Bool, 0, "`when`"));
                take(&mut c, Part::When, &mut errors);
                f
            }
        };
        let key = {
            let t = c.compile(src.key);
            let f = t.and_then(|t| match t.ty.required() {
                Type::Int { .. } => {
                    let f = c.want(t, Kind::Int, 0, "`key`")?;
                    Some(int_key(f))
                }
                _ => c.want(t, Kind::Str, 0, "`key`"),
            });
            take(&mut c, Part::Key, &mut errors);
            f
        };
        let idempotency = src.idempotency.map(|src| {
            let t = c.compile(src);
            let f = t.and_then(|t| c.want(t, Kind::Str, 0, "`idempotency_key`"));
            take(&mut c, Part::Idempotency, &mut errors);
            f
        });

        let exprs: BTreeMap<&str, &str> = src.fields.iter().copied().collect();
        let mut used = std::collections::BTreeSet::new();
        let fields = build_fields(&mut c, &src.target, "", &exprs, &mut used, &mut errors);
        for name in exprs.keys().filter(|k| !used.contains(**k)) {
            let (parent, leaf) = name.rsplit_once('.').unwrap_or(("", name));
            let rec_desc = if parent.is_empty() {
                format!("record {}", src.target.short_name())
            } else {
                format!("`{parent}`")
            };
            errors.push(PartError {
                part: Part::Field(name.to_string()),
                offset: None,
                message: format!("{rec_desc} has no field `{leaf}`"),
            });
        }

        match (errors.is_empty(), key) {
            (true, Some(key)) => Ok(Program {
                consts: c.consts,
                when,
                key,
                idempotency: idempotency.flatten(),
                fields,
                target: src.target.clone(),
            }),
            _ => Err(errors),
        }
    }

    /// The target record type.
    pub fn target(&self) -> &Arc<RecordType> {
        &self.target
    }

    /// Maps one source record (a `Datum::Record` of the source type).
    pub fn run(&self, input: &Datum) -> Result<Outcome, MapError> {
        self.run_with(input, &self.consts)
    }

    /// The program's constants with `table` in place of the table of its
    /// name (a test case's own jurisdiction), for [`Program::run_with`].
    pub fn consts_with(&self, table: Arc<Table>) -> Consts {
        Consts {
            strs: self.consts.strs.clone(),
            tables: self
                .consts
                .tables
                .iter()
                .map(|t| match t.name == table.name {
                    true => table.clone(),
                    false => t.clone(),
                })
                .collect(),
        }
    }

    /// [`Program::run`] with other constants (made by
    /// [`Program::consts_with`]).
    pub fn run_with(&self, input: &Datum, k: &Consts) -> Result<Outcome, MapError> {
        let Datum::Record(rec) = input else {
            return Err(MapError {
                part: "record".into(),
                message: "the input is not a record".into(),
            });
        };

        if let Some(w) = &self.when {
            match w(rec, k) {
                Ok(Val::Bool(true)) => {}
                Ok(_) => return Ok(Outcome::Filtered),
                Err(e) => {
                    return Err(MapError {
                        part: "when".into(),
                        message: e.to_string(),
                    })
                }
            }
        }
        let out = eval_fields(&self.fields, rec, k)?;
        let key = match (self.key)(rec, k) {
            Ok(Val::Str(s)) if !s.is_empty() => s.into_compact(),
            Ok(_) => {
                return Err(MapError {
                    part: "key".into(),
                    message: "the ordering key is empty".into(),
                })
            }
            Err(e) => {
                return Err(MapError {
                    part: "key".into(),
                    message: e.to_string(),
                })
            }
        };
        let idempotency = match &self.idempotency {
            None => None,
            Some(f) => match f(rec, k) {
                Ok(Val::Str(s)) if !s.is_empty() => Some(s.into_compact()),
                Ok(_) => {
                    return Err(MapError {
                        part: "idempotency_key".into(),
                        message: "the idempotency key is empty".into(),
                    })
                }
                Err(e) => {
                    return Err(MapError {
                        part: "idempotency_key".into(),
                        message: e.to_string(),
                    })
                }
            },
        };
        Ok(Outcome::Mapped {
            key,
            record: out,
            idempotency,
        })
    }
}

fn take(c: &mut Compiler, part: Part, errors: &mut Vec<PartError>) {
    for e in c.errors.drain(..) {
        errors.push(PartError {
            part: part.clone(),
            offset: Some(e.offset),
            message: e.message,
        });
    }
}

/// Compiles the fields of a target record (recursively, for dotted paths
/// such as `context.bank`), in schema order.
fn build_fields(
    c: &mut Compiler,
    rec: &RecordType,
    prefix: &str,
    exprs: &BTreeMap<&str, &str>,
    used: &mut std::collections::BTreeSet<String>,
    errors: &mut Vec<PartError>,
) -> Vec<FieldProg> {
    let mut out = Vec::with_capacity(rec.fields.len());
    for f in &rec.fields {
        let path = format!("{prefix}{}", f.name);
        let sub = format!("{path}.");
        let how = if let Some(expr) = exprs.get(path.as_str()) {
            used.insert(path.clone());
            let t = c.compile(expr);
            let r = t.and_then(|t| assign(c, t, &f.ty, &path));
            take(c, Part::Field(path.clone()), errors);
            r.map(How::Expr)
        } else if exprs.keys().any(|k| k.starts_with(&sub)) {
            match f.ty.required() {
                Type::Record(r) => Some(How::Nested(build_fields(c, r, &sub, exprs, used, errors))),
                other => {
                    errors.push(PartError {
                        part: Part::Field(path.clone()),
                        offset: None,
                        message: format!(
                            "`{path}` is a {other}, not a record: it has no sub-fields"
                        ),
                    });
                    None
                }
            }
        } else {
            match (&f.default, &f.ty) {
                (Some(d), _) => Some(How::Default(d.clone())),
                (None, Type::Optional(_)) => Some(How::Default(Datum::Null)),
                _ => {
                    errors.push(PartError {
                        part: Part::Field(path.clone()),
                        offset: None,
                        message: format!(
                            "target field `{path}` ({}) is required and has no default: give it an expression under [fields]",
                            f.ty
                        ),
                    });
                    None
                }
            }
        };
        if let Some(how) = how {
            out.push(FieldProg {
                name: path,
                ty: f.ty.clone(),
                format: f.format,
                how,
            });
        }
    }
    out
}

fn int_key(f: Eval) -> Eval {
    Box::new(move |r, k| match f(r, k)? {
        Val::Int(i) => Ok(Val::Str(value::Text::from(i.to_string()))),
        _ => Err(EvalError::internal()),
    })
}

fn eval_fields(fields: &[FieldProg], rec: &[Datum], k: &Consts) -> Result<Datum, MapError> {
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        let d = match &f.how {
            How::Default(d) => d.clone(),
            How::Nested(sub) => eval_fields(sub, rec, k)?,
            How::Expr(e) => {
                let fail = |m: String| MapError {
                    part: f.name.clone(),
                    message: m,
                };
                let v = e(rec, k).map_err(|e| fail(e.to_string()))?;
                let d = to_datum(v, &f.ty).map_err(fail)?;
                if let (Some(fmt), Datum::Str(s)) = (f.format, &d) {
                    fmt.check(s).map_err(fail)?;
                }
                d
            }
        };
        out.push(d);
    }
    Ok(Datum::Record(out))
}

/// Checks at compile time that an expression's type fits a target field;
/// returns the closure, with a presence check where an optional value feeds
/// a required field.
fn assign(c: &mut Compiler, t: Typed, target: &Type, field: &str) -> Option<Eval> {
    if !assignable(&t.ty, target) {
        return c.err_call(
            0,
            format!(
                "`{field}` is {target} in the target schema, but the expression gives {}",
                t.ty
            ),
        );
    }
    if let (Type::Enum(en), Some(compile::Const::Str(s))) = (target.required(), &t.konst) {
        if !en.symbols.iter().any(|x| x == s) {
            return c.err_call(
                0,
                format!(
                    "{s:?} is not a value of {}: it has {}",
                    target.required(),
                    en.symbols.join(", ")
                ),
            );
        }
    }
    if let (Type::Int { long: false }, Some(compile::Const::Int(i))) = (target.required(), &t.konst)
    {
        if i32::try_from(*i).is_err() {
            return c.err_call(
                0,
                format!("{i} does not fit the 32-bit int field `{field}`"),
            );
        }
    }
    Some(if !target.is_optional() {
        t.present()
    } else {
        t.eval
    })
}

fn assignable(from: &Type, to: &Type) -> bool {
    match (from, to) {
        (Type::Null, Type::Optional(_)) => true,
        (Type::Null, _) => false,
        (Type::Optional(f), Type::Optional(t)) => assignable(f, t),
        (Type::Optional(f), t) => assignable(f, t),
        (f, Type::Optional(t)) => assignable(f, t),
        (Type::Array(f), Type::Array(t)) => assignable(f, t) || matches!(**f, Type::Null),
        (Type::Map(f), Type::Map(t)) => assignable(f, t),
        (Type::Record(f), Type::Record(t)) => f.name == t.name || f == t,
        (f, t) => compile::same_kind(f, t),
    }
}

/// Converts a value to a datum of the target type, checking what the
/// compiler could not (enum symbols, 32-bit range).
fn to_datum(v: Val<'_>, ty: &Type) -> Result<Datum, String> {
    Ok(match (ty, v) {
        (Type::Optional(_), Val::Null) => Datum::Null,
        (Type::Optional(t), v) => return to_datum(v, t),
        (_, Val::Null) => return Err("required value is missing".into()),
        (Type::Int { long: false }, Val::Int(i)) => {
            i32::try_from(i).map_err(|_| format!("{i} does not fit a 32-bit int"))?;
            Datum::Int(i)
        }
        (Type::Enum(e), Val::Str(s)) => {
            if !e.symbols.iter().any(|x| *x == *s) {
                return Err(format!(
                    "{s:?} is not a value of {}: it has {}",
                    ty,
                    e.symbols.join(", ")
                ));
            }
            Datum::Str(s.into_compact())
        }
        (Type::Array(t), Val::List(xs)) => Datum::Array(
            xs.into_iter()
                .map(|x| to_datum(x, t))
                .collect::<Result<_, _>>()?,
        ),
        (_, v) => v.into_datum(),
    })
}

#[cfg(test)]
mod tests;
