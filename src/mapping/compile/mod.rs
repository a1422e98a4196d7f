//! The CEL compiler: type-checks an expression against the source record's
//! schema and turns it into a tree of native closures.
//!
//! Field paths resolve to indices here, once; literals, regular expressions,
//! date formats and table lookups are prepared here, once. At run time a
//! closure does only the work the expression describes, with no name lookups,
//! no type tests beyond one `match`, and no allocation where the result can
//! borrow from the record or the program's constants.

mod operators;

use super::functions;
use super::table::Table;
use super::value::{as_bool, as_int, contains, val_cmp, val_eq, EvalError, Text, Val};
use crate::schema::{Datum, RecordType, Type};
use cel::common::ast::{Expr, IdedExpr, LiteralValue, SelectExpr, SourceInfo};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Constants a program's closures borrow from at run time.
#[derive(Default)]
pub struct Consts {
    /// String literals and table values are borrowed from here.
    pub strs: Vec<String>,
    /// Tables used by `lookup`.
    pub tables: Vec<Arc<Table>>,
}

/// The result of evaluating an expression.
pub type R<'a> = Result<Val<'a>, EvalError>;

/// A compiled expression: a closure over the input record's fields and the
/// program's constants.
pub type Eval = Box<dyn for<'a> Fn(&'a [Datum], &'a Consts) -> R<'a> + Send + Sync>;

/// A compile-time constant (a literal, or a list of literals).
#[derive(Clone, Debug)]
pub enum Const {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer literal.
    Int(i64),
    /// A string literal.
    Str(String),
    /// A list literal of constants.
    List(Vec<Const>),
}

/// A type-checked, compiled expression.
pub struct Typed {
    /// Its static type.
    pub ty: Type,
    /// The closure that evaluates it.
    pub eval: Eval,
    /// Its value, when it is a literal.
    pub konst: Option<Const>,
    /// The field path it reads (`event.holder_id`), for messages.
    pub label: Option<String>,
}

impl Typed {
    /// Its closure; for an optional value, with a check that fails the
    /// record, naming the field, when the value is missing.
    pub fn present(self) -> Eval {
        if self.ty.is_optional() {
            require_present(self.eval, self.label)
        } else {
            self.eval
        }
    }
}

/// A problem found while compiling, at a byte offset of the expression.
#[derive(Debug, Clone)]
pub struct ExprError {
    /// Byte offset into the expression text.
    pub offset: usize,
    /// What is wrong and what to do.
    pub message: String,
}

/// Kinds of scalar value a function parameter can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string (or enum symbol).
    Str,
    /// An integer.
    Int,
    /// A boolean.
    Bool,
    /// A date.
    Date,
    /// A timestamp.
    Ts,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Str => "string",
            Kind::Int => "int",
            Kind::Bool => "bool",
            Kind::Date => "date",
            Kind::Ts => "timestamp",
        }
    }
    /// The type of values of this kind.
    pub fn ty(self) -> Type {
        match self {
            Kind::Str => Type::Str,
            Kind::Int => Type::Int { long: true },
            Kind::Bool => Type::Bool,
            Kind::Date => Type::Date,
            Kind::Ts => Type::Timestamp,
        }
    }
    /// The kind of values of a scalar type.
    pub fn of(t: &Type) -> Option<Kind> {
        Some(match t {
            Type::Str | Type::Enum(_) => Kind::Str,
            Type::Int { .. } => Kind::Int,
            Type::Bool => Kind::Bool,
            Type::Date => Kind::Date,
            Type::Timestamp => Kind::Ts,
            _ => return None,
        })
    }
}

/// Compiles the expressions of one mapping; collects every error.
pub struct Compiler<'c> {
    root_name: String,
    root: Arc<RecordType>,
    tables: &'c BTreeMap<String, Arc<Table>>,
    table_slots: HashMap<String, usize>,
    /// Constants collected so far.
    pub consts: Consts,
    /// Errors of the current expression.
    pub errors: Vec<ExprError>,
    info: SourceInfo,
}

impl<'c> Compiler<'c> {
    /// A compiler for expressions over a record of type `root`, named `root_name`.
    pub fn new(
        root_name: &str,
        root: Arc<RecordType>,
        tables: &'c BTreeMap<String, Arc<Table>>,
    ) -> Self {
        Compiler {
            root_name: root_name.to_string(),
            root,
            tables,
            table_slots: HashMap::new(),
            consts: Consts::default(),
            errors: Vec::new(),
            info: SourceInfo::default(),
        }
    }

    /// Parses and compiles one expression. On failure the errors are in
    /// `self.errors` (taken by the caller).
    pub fn compile(&mut self, src: &str) -> Option<Typed> {
        match cel::parser::Parser::new().parse_with_source_info(src) {
            Ok((e, info)) => {
                self.info = info;
                self.expr(&e)
            }
            Err(errs) => {
                for e in errs.errors {
                    let offset = line_col_to_offset(src, e.pos.0, e.pos.1);
                    self.errors.push(ExprError {
                        offset,
                        message: clean_parse_message(&e.msg),
                    });
                }
                None
            }
        }
    }

    fn off(&self, id: u64) -> usize {
        self.info
            .offset_for(id)
            .map(|(s, _)| s as usize)
            .unwrap_or(0)
    }

    fn err<T>(&mut self, id: u64, message: impl Into<String>) -> Option<T> {
        let offset = self.off(id);
        self.errors.push(ExprError {
            offset,
            message: message.into(),
        });
        None
    }

    /// Reports an error at the node `id` (for function compilers).
    pub fn err_call<T>(&mut self, id: u64, message: impl Into<String>) -> Option<T> {
        self.err(id, message)
    }

    /// Reports an error `back` bytes before the node `id` (a call's node
    /// sits at its parenthesis; this points at the function's name).
    pub fn err_before<T>(&mut self, id: u64, back: usize, message: impl Into<String>) -> Option<T> {
        let offset = self.off(id).saturating_sub(back);
        self.err_at(offset, message)
    }

    fn err_at<T>(&mut self, offset: usize, message: impl Into<String>) -> Option<T> {
        self.errors.push(ExprError {
            offset,
            message: message.into(),
        });
        None
    }

    fn expr(&mut self, e: &IdedExpr) -> Option<Typed> {
        match &e.expr {
            Expr::Literal(l) => self.literal(e.id, l),
            Expr::Ident(name) => {
                if *name == self.root_name {
                    Some(Typed {
                        ty: Type::Record(self.root.clone()),
                        eval: Box::new(|r, _| Ok(Val::Rec(r))),
                        konst: None,
                        label: Some(name.clone()),
                    })
                } else {
                    let hint = format!("the source record is called `{}`", self.root_name);
                    self.err(e.id, format!("unknown name `{name}`: {hint}"))
                }
            }
            Expr::Select(s) => self.select(e, s),
            Expr::Call(c) => self.call(e, &c.func_name, c.target.as_deref(), &c.args),
            Expr::List(l) => self.list(e, &l.elements),
            Expr::Map(_) | Expr::Struct(_) => {
                self.err(e.id, "map and message literals are not supported in mappings")
            }
            Expr::Comprehension(_) => self.err(
                e.id,
                "the macros all(), exists(), exists_one(), map() and filter() are not supported in mappings; use `x in list` or size()",
            ),
            Expr::Unspecified => self.err(e.id, "incomplete expression"),
        }
    }

    fn literal(&mut self, id: u64, l: &LiteralValue) -> Option<Typed> {
        let k = match l {
            LiteralValue::Boolean(b) => Const::Bool(*b.inner()),
            LiteralValue::Int(i) => Const::Int(*i.inner()),
            LiteralValue::UInt(u) => match i64::try_from(*u.inner()) {
                Ok(i) => Const::Int(i),
                Err(_) => return self.err(id, "integer literal out of range"),
            },
            LiteralValue::String(s) => Const::Str(s.inner().to_string()),
            LiteralValue::Null => Const::Null,
            LiteralValue::Double(_) => {
                return self.err(
                    id,
                    "floating-point numbers are not allowed: amounts of money are integer fen (write 41000, not 410.00)",
                )
            }
            LiteralValue::Bytes(_) => return self.err(id, "byte literals are not supported in mappings"),
        };
        Some(self.constant(k))
    }

    /// A typed expression that yields a constant.
    pub fn constant(&mut self, k: Const) -> Typed {
        let (ty, eval): (Type, Eval) = match &k {
            Const::Null => (Type::Null, Box::new(|_, _| Ok(Val::Null))),
            Const::Bool(b) => {
                let b = *b;
                (Type::Bool, Box::new(move |_, _| Ok(Val::Bool(b))))
            }
            Const::Int(i) => {
                let i = *i;
                (
                    Type::Int { long: true },
                    Box::new(move |_, _| Ok(Val::Int(i))),
                )
            }
            Const::Str(s) => {
                let slot = self.intern(s.clone());
                (
                    Type::Str,
                    Box::new(move |_, k| Ok(Val::Str(Text::Borrowed(&k.strs[slot])))),
                )
            }
            Const::List(items) => {
                let elem = items.first().map(const_type).unwrap_or(Type::Str);
                let items: Vec<Const> = items.clone();
                let slots: Vec<Option<usize>> = items
                    .iter()
                    .map(|c| match c {
                        Const::Str(s) => Some(self.intern(s.clone())),
                        _ => None,
                    })
                    .collect();
                (
                    Type::Array(Box::new(elem)),
                    Box::new(move |_, k| {
                        Ok(Val::List(
                            items
                                .iter()
                                .zip(&slots)
                                .map(|(c, slot)| match (c, slot) {
                                    (_, Some(s)) => Val::Str(Text::Borrowed(k.strs[*s].as_str())),
                                    (Const::Int(i), _) => Val::Int(*i),
                                    (Const::Bool(b), _) => Val::Bool(*b),
                                    _ => Val::Null,
                                })
                                .collect(),
                        ))
                    }),
                )
            }
        };
        Typed {
            ty,
            eval,
            konst: Some(k),
            label: None,
        }
    }

    /// Stores a string constant; closures borrow it by slot.
    pub fn intern(&mut self, s: String) -> usize {
        self.consts.strs.push(s);
        self.consts.strs.len() - 1
    }

    /// Registers a table for `lookup`; returns its slot.
    pub fn table_slot(&mut self, name: &str) -> Option<(usize, Arc<Table>)> {
        let t = self.tables.get(name)?.clone();
        let slot = *self.table_slots.entry(name.to_string()).or_insert_with(|| {
            self.consts.tables.push(t.clone());
            self.consts.tables.len() - 1
        });
        Some((slot, t))
    }

    /// Names of the tables available.
    pub fn table_names(&self) -> Vec<&str> {
        self.tables.keys().map(String::as_str).collect()
    }

    fn list(&mut self, e: &IdedExpr, elems: &[IdedExpr]) -> Option<Typed> {
        let mut items = Vec::with_capacity(elems.len());
        let mut ok = true;
        for x in elems {
            match self.expr(x) {
                Some(t) => items.push((x.id, t)),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let elem = items
            .first()
            .map(|(_, t)| t.ty.clone())
            .unwrap_or(Type::Str);
        for (id, t) in &items {
            if !same_kind(&t.ty, &elem) {
                return self.err(
                    *id,
                    format!(
                        "list elements must all have one type: found {} and {}",
                        elem, t.ty
                    ),
                );
            }
        }
        if items.iter().all(|(_, t)| t.konst.is_some()) {
            let ks = items
                .into_iter()
                .map(|(_, t)| t.konst.unwrap_or(Const::Null))
                .collect();
            return Some(self.constant(Const::List(ks)));
        }
        let evals: Vec<Eval> = items.into_iter().map(|(_, t)| t.eval).collect();
        let _ = e;
        Some(Typed {
            ty: Type::Array(Box::new(elem)),
            eval: Box::new(move |r, k| {
                let mut out = Vec::with_capacity(evals.len());
                for f in &evals {
                    out.push(f(r, k)?);
                }
                Ok(Val::List(out))
            }),
            konst: None,
            label: None,
        })
    }

    /// Collects `root.a.b.c` into field names, if the chain starts at the root.
    fn root_path<'e>(&self, e: &'e IdedExpr, out: &mut Vec<(u64, &'e str)>) -> bool {
        match &e.expr {
            Expr::Ident(n) => *n == self.root_name,
            Expr::Select(s) if !s.test && self.root_path(&s.operand, out) => {
                out.push((e.id, s.field.as_str()));
                true
            }
            _ => false,
        }
    }

    fn select(&mut self, e: &IdedExpr, s: &SelectExpr) -> Option<Typed> {
        let mut path = Vec::new();
        if !s.test && self.root_path(e, &mut path) {
            return self.field_path(&path);
        }
        let operand = self.expr(&s.operand)?;
        let at = self.off(e.id) + 1;
        let (field_ty, index) = match operand.ty.required() {
            Type::Record(r) => match r.field_index(&s.field) {
                Some(i) => (r.fields[i].ty.clone(), Some(i)),
                None => return self.err_at(at, no_such_field(r, &s.field)),
            },
            Type::Map(t) => (Type::Optional(Box::new(t.as_ref().clone())), None),
            other => return self.err_at(at, format!("`.{}`: a {other} has no fields", s.field)),
        };
        let label = operand.label.as_ref().map(|l| format!("{l}.{}", s.field));
        let inner = operand.eval;
        let name = s.field.clone();
        if s.test {
            // has(x.f): is the field present (not null)?
            let eval: Eval = Box::new(move |r, k| {
                Ok(Val::Bool(match inner(r, k)? {
                    Val::Rec(fs) => !matches!(fs[index.unwrap_or(0)], Datum::Null),
                    Val::Map(m) => m.iter().any(|(key, _)| *key == name),
                    _ => false,
                }))
            });
            return Some(Typed {
                ty: Type::Bool,
                eval,
                konst: None,
                label: None,
            });
        }
        let optional = operand.ty.is_optional();
        let ty = if optional && !field_ty.is_optional() {
            Type::Optional(Box::new(field_ty))
        } else {
            field_ty
        };
        let eval: Eval = Box::new(move |r, k| match inner(r, k)? {
            Val::Rec(fs) => Ok(Val::from_datum(&fs[index.unwrap_or(0)])),
            Val::Map(m) => Ok(m
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, v)| Val::from_datum(v))
                .unwrap_or(Val::Null)),
            Val::Null => Ok(Val::Null),
            _ => Err(EvalError::internal()),
        });
        Some(Typed {
            ty,
            eval,
            konst: None,
            label,
        })
    }

    /// Resolves a field path from the root to indices, once.
    fn field_path(&mut self, path: &[(u64, &str)]) -> Option<Typed> {
        let mut rec = self.root.clone();
        let mut idx = Vec::with_capacity(path.len());
        let mut optional = false;
        let mut ty = Type::Null;
        let mut label = self.root_name.clone();
        for (n, (id, name)) in path.iter().enumerate() {
            let at = self.off(*id) + 1;
            let Some(i) = rec.field_index(name) else {
                return self.err_at(at, format!("{label}: {}", no_such_field(&rec, name)));
            };
            idx.push(i);
            label.push('.');
            label.push_str(name);
            ty = rec.fields[i].ty.clone();
            if n + 1 < path.len() {
                optional |= ty.is_optional();
                match ty.required() {
                    Type::Record(r) => rec = r.clone(),
                    other => {
                        let next = path[n + 1].1;
                        return self.err_at(
                            self.off(path[n + 1].0) + 1,
                            format!("`{label}` is a {other}: it has no field `{next}`"),
                        );
                    }
                }
            }
        }
        if optional && !ty.is_optional() {
            ty = Type::Optional(Box::new(ty));
        }
        let eval: Eval = match idx.as_slice() {
            [a] => {
                let a = *a;
                Box::new(move |r, _| Ok(Val::from_datum(&r[a])))
            }
            [a, b] => {
                let (a, b) = (*a, *b);
                Box::new(move |r, _| match &r[a] {
                    Datum::Record(f) => Ok(Val::from_datum(&f[b])),
                    _ => Ok(Val::Null),
                })
            }
            _ => {
                let (last, init) = idx.split_last().map(|(l, i)| (*l, i.to_vec()))?;
                Box::new(move |r, _| {
                    let mut cur = r;
                    for &i in &init {
                        match &cur[i] {
                            Datum::Record(f) => cur = f,
                            _ => return Ok(Val::Null),
                        }
                    }
                    Ok(Val::from_datum(&cur[last]))
                })
            }
        };
        Some(Typed {
            ty,
            eval,
            konst: None,
            label: Some(label),
        })
    }

    /// Checks that `t` is of kind `k` and returns its closure; an optional
    /// value gets a check that names the missing field.
    pub fn want(&mut self, t: Typed, k: Kind, id: u64, what: &str) -> Option<Eval> {
        match Kind::of(t.ty.required()) {
            Some(found) if found == k => {}
            _ => {
                return self.err(id, format!("{what} must be a {}, found {}", k.name(), t.ty));
            }
        }
        Some(t.present())
    }

    fn call(
        &mut self,
        e: &IdedExpr,
        name: &str,
        target: Option<&IdedExpr>,
        args: &[IdedExpr],
    ) -> Option<Typed> {
        use cel::common::ast::operators as op;
        match name {
            op::LOGICAL_AND | op::LOGICAL_OR => {
                return self.logic(e, name == op::LOGICAL_AND, &args[0], &args[1])
            }
            op::CONDITIONAL => return self.conditional(e, &args[0], &args[1], &args[2]),
            _ => {}
        }
        let mut all: Vec<&IdedExpr> = Vec::with_capacity(args.len() + 1);
        all.extend(target);
        all.extend(args.iter());
        let mut typed = Vec::with_capacity(all.len());
        let mut ok = true;
        for a in &all {
            match self.expr(a) {
                Some(t) => typed.push(t),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let ids: Vec<u64> = all.iter().map(|a| a.id).collect();
        match name {
            op::EQUALS | op::NOT_EQUALS => self.equality(e, name == op::EQUALS, typed, &ids),
            op::LESS | op::LESS_EQUALS | op::GREATER | op::GREATER_EQUALS => {
                self.ordering(e, name, typed, &ids)
            }
            op::ADD | op::SUBSTRACT | op::MULTIPLY | op::DIVIDE | op::MODULO => {
                self.arith(e, name, typed, &ids)
            }
            op::NEGATE => {
                let a = self.want(typed.pop()?, Kind::Int, ids[0], "the operand of `-`")?;
                Some(Typed {
                    ty: Type::Int { long: true },
                    eval: Box::new(move |r, k| {
                        as_int(a(r, k)?)?
                            .checked_neg()
                            .map(Val::Int)
                            .ok_or(EvalError::msg("integer overflow"))
                    }),
                    konst: None,
                    label: None,
                })
            }
            op::LOGICAL_NOT => {
                let a = self.want(typed.pop()?, Kind::Bool, ids[0], "the operand of `!`")?;
                Some(bool_typed(Box::new(move |r, k| {
                    Ok(Val::Bool(!as_bool(a(r, k)?)?))
                })))
            }
            op::IN => {
                let elem_ids: Vec<u64> = match &args[1].expr {
                    Expr::List(l) => l.elements.iter().map(|x| x.id).collect(),
                    _ => Vec::new(),
                };
                self.membership(e, typed, &ids, &elem_ids)
            }
            op::INDEX => self.index(e, typed, &ids),
            _ => functions::call(self, e.id, name, typed, &ids),
        }
    }
}

/// Wraps an optional value's closure so that a missing value is an error
/// that names the field.
pub fn require_present(f: Eval, label: Option<String>) -> Eval {
    let msg: Cow<'static, str> = match label {
        Some(l) => Cow::Owned(format!("`{l}` is missing")),
        None => Cow::Borrowed("a required value is missing"),
    };
    Box::new(move |r, k| match f(r, k)? {
        Val::Null => Err(EvalError(msg.clone())),
        v => Ok(v),
    })
}

/// A boolean-typed expression.
pub fn bool_typed(eval: Eval) -> Typed {
    Typed {
        ty: Type::Bool,
        eval,
        konst: None,
        label: None,
    }
}

/// A string-typed expression.
pub fn str_typed(eval: Eval) -> Typed {
    Typed {
        ty: Type::Str,
        eval,
        konst: None,
        label: None,
    }
}

fn const_type(c: &Const) -> Type {
    match c {
        Const::Null => Type::Null,
        Const::Bool(_) => Type::Bool,
        Const::Int(_) => Type::Int { long: true },
        Const::Str(_) => Type::Str,
        Const::List(xs) => Type::Array(Box::new(xs.first().map(const_type).unwrap_or(Type::Str))),
    }
}

/// Same kind of value, ignoring int width and optionality; enums and strings match.
pub fn same_kind(a: &Type, b: &Type) -> bool {
    match (a.required(), b.required()) {
        (Type::Int { .. }, Type::Int { .. }) => true,
        (Type::Str | Type::Enum(_), Type::Str | Type::Enum(_)) => true,
        (Type::Record(x), Type::Record(y)) => x.name == y.name || x == y,
        (Type::Array(x), Type::Array(y)) | (Type::Map(x), Type::Map(y)) => same_kind(x, y),
        (x, y) => std::mem::discriminant(x) == std::mem::discriminant(y),
    }
}

/// The common type of two branches: `null` and `T` give optional `T`.
fn unify(a: &Type, b: &Type) -> Option<Type> {
    match (a, b) {
        (Type::Null, Type::Null) => Some(Type::Null),
        (Type::Null, t) | (t, Type::Null) => Some(if t.is_optional() {
            t.clone()
        } else {
            Type::Optional(Box::new(t.clone()))
        }),
        (x, y) if same_kind(x, y) => {
            let base = if matches!(x.required(), Type::Enum(_)) && matches!(y.required(), Type::Str)
            {
                y.required()
            } else {
                x.required()
            };
            Some(if x.is_optional() || y.is_optional() {
                Type::Optional(Box::new(base.clone()))
            } else {
                base.clone()
            })
        }
        _ => None,
    }
}

fn no_such_field(r: &RecordType, name: &str) -> String {
    let best = r
        .fields
        .iter()
        .map(|f| (edit_distance(&f.name, name), &f.name))
        .min()
        .filter(|(d, _)| *d <= 2 + name.len() / 4);
    match best {
        Some((_, f)) => format!(
            "record {} has no field `{name}` (did you mean `{f}`?)",
            r.short_name()
        ),
        None => format!(
            "record {} has no field `{name}`; it has: {}",
            r.short_name(),
            r.field_names()
        ),
    }
}

/// Levenshtein distance, for "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn line_col_to_offset(src: &str, line: isize, col: isize) -> usize {
    let mut off = 0;
    for (i, l) in src.split_inclusive('\n').enumerate() {
        if i as isize + 1 == line {
            let col = (col.max(1) - 1) as usize;
            return off + l.char_indices().nth(col).map(|(b, _)| b).unwrap_or(l.len());
        }
        off += l.len();
    }
    src.len()
}

fn clean_parse_message(m: &str) -> String {
    // ANTLR lists every token it could have accepted; the first clause says enough.
    let m = m.strip_prefix("Syntax error: ").unwrap_or(m);
    match m.find(" expecting {") {
        Some(i) => format!("syntax error: {}", &m[..i]),
        None => format!("syntax error: {m}"),
    }
}

#[allow(unused)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Eval>();
}
