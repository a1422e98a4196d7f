//! The functions mapping expressions can call: strings, integers, dates,
//! code tables and the domain rules of docs/domain.md. Each is type-checked and
//! prepared at compile time; literal arguments such as regular expressions
//! and date formats are parsed once, here.
//!
//! Method syntax is the same call: `s.trim()` is `trim(s)`.
//!
//! This file holds the registry ([`FUNCTIONS`]) and the call; the
//! functions themselves are in `text.rs`, `dates.rs`, `tables.rs` and
//! `domain.rs`.

use crate::domain::{mask, CertificateNo, ResidentId};
use crate::mapping::compile::{bool_typed, str_typed, Compiler, Const, Eval, Kind, Typed, R};
use crate::mapping::value::{as_date, as_int, as_str, EvalError, Text, Val};
use crate::schema::{days_from_date, Type};
use chrono::{Datelike, Months, NaiveDate};

mod dates;
mod domain;
mod tables;
mod text;

use dates::*;
use domain::*;
use tables::*;
use text::*;

/// One function of the mapping language: its name (and the names it is
/// also called by), how many arguments it takes, its signature as the docs
/// and error messages show it, and its compiler, registered together.
pub struct Function {
    /// Its name.
    pub name: &'static str,
    /// Other names it answers to (CEL's own spellings).
    pub aliases: &'static [&'static str],
    /// How many arguments it takes.
    pub arity: std::ops::RangeInclusive<usize>,
    /// `name(argument types) -> result`, with a word on what it does.
    pub signature: &'static str,
    /// Type-checks the arguments and prepares the evaluation.
    compile: fn(&mut Compiler, &mut Args) -> Option<Typed>,
}

/// Every function, in the order `tongban functions` lists them.
pub static FUNCTIONS: &[Function] = &[
    Function {
        name: "trim",
        aliases: &[],
        arity: 1..=1,
        signature: "trim(string) -> string",
        compile: f_trim,
    },
    Function {
        name: "upper",
        aliases: &["upperAscii"],
        arity: 1..=1,
        signature: "upper(string) -> string (also upperAscii)",
        compile: f_upper,
    },
    Function {
        name: "lower",
        aliases: &["lowerAscii"],
        arity: 1..=1,
        signature: "lower(string) -> string (also lowerAscii)",
        compile: f_lower,
    },
    Function {
        name: "size",
        aliases: &[],
        arity: 1..=1,
        signature: "size(string | list | map) -> int (characters, items)",
        compile: f_size,
    },
    Function {
        name: "startsWith",
        aliases: &[],
        arity: 2..=2,
        signature: "startsWith(string, string) -> bool",
        compile: f_startswith,
    },
    Function {
        name: "endsWith",
        aliases: &[],
        arity: 2..=2,
        signature: "endsWith(string, string) -> bool",
        compile: f_startswith,
    },
    Function {
        name: "contains",
        aliases: &[],
        arity: 2..=2,
        signature: "contains(string, string) -> bool",
        compile: f_startswith,
    },
    Function {
        name: "matches",
        aliases: &[],
        arity: 2..=2,
        signature: "matches(string, 'regex') -> bool",
        compile: f_matches,
    },
    Function {
        name: "substring",
        aliases: &[],
        arity: 2..=3,
        signature: "substring(string, start[, end]) -> string (character positions)",
        compile: f_substring,
    },
    Function {
        name: "replace",
        aliases: &[],
        arity: 3..=3,
        signature: "replace(string, from, to) -> string",
        compile: f_replace,
    },
    Function {
        name: "split",
        aliases: &[],
        arity: 2..=2,
        signature: "split(string, separator) -> list(string)",
        compile: f_split,
    },
    Function {
        name: "pad_left",
        aliases: &[],
        arity: 3..=3,
        signature: "pad_left(string, width, 'c') -> string",
        compile: f_pad_left,
    },
    Function {
        name: "pad_right",
        aliases: &[],
        arity: 3..=3,
        signature: "pad_right(string, width, 'c') -> string",
        compile: f_pad_left,
    },
    Function {
        name: "concat",
        aliases: &[],
        arity: 1..=usize::MAX,
        signature: "concat(string, ...) -> string",
        compile: f_concat,
    },
    Function {
        name: "string",
        aliases: &[],
        arity: 1..=1,
        signature: "string(any scalar) -> string",
        compile: f_string,
    },
    Function {
        name: "int",
        aliases: &[],
        arity: 1..=1,
        signature: "int(string | int) -> int",
        compile: f_int,
    },
    Function {
        name: "date",
        aliases: &[],
        arity: 1..=1,
        signature:
            "date(string 'YYYY-MM-DD' | timestamp) -> date (timestamps in China time, UTC+8)",
        compile: f_date,
    },
    Function {
        name: "parse_date",
        aliases: &[],
        arity: 2..=2,
        signature: "parse_date(string, 'format') -> date",
        compile: f_parse_date,
    },
    Function {
        name: "format_date",
        aliases: &[],
        arity: 2..=2,
        signature: "format_date(date, 'format') -> string (strftime: %Y%m%d)",
        compile: f_format_date,
    },
    Function {
        name: "period",
        aliases: &[],
        arity: 1..=1,
        signature: "period(date) -> string 'YYYY-MM'",
        compile: f_period,
    },
    Function {
        name: "add_days",
        aliases: &[],
        arity: 2..=2,
        signature: "add_days(date, int) -> date",
        compile: f_add_days,
    },
    Function {
        name: "add_months",
        aliases: &[],
        arity: 2..=2,
        signature: "add_months(date, int) -> date (end of month clamps)",
        compile: f_add_months,
    },
    Function {
        name: "add_years",
        aliases: &[],
        arity: 2..=2,
        signature: "add_years(date, int) -> date",
        compile: f_add_months,
    },
    Function {
        name: "first_of_month",
        aliases: &[],
        arity: 1..=1,
        signature: "first_of_month(date) -> date",
        compile: f_first_of_month,
    },
    Function {
        name: "age_at",
        aliases: &[],
        arity: 2..=2,
        signature: "age_at(birth date, date) -> int (whole years)",
        compile: f_age_at,
    },
    Function {
        name: "year",
        aliases: &[],
        arity: 1..=1,
        signature: "year(date) -> int",
        compile: f_year,
    },
    Function {
        name: "month",
        aliases: &[],
        arity: 1..=1,
        signature: "month(date) -> int",
        compile: f_year,
    },
    Function {
        name: "day",
        aliases: &[],
        arity: 1..=1,
        signature: "day(date) -> int",
        compile: f_year,
    },
    Function {
        name: "lookup",
        aliases: &[],
        arity: 2..=3,
        signature: "lookup('table[.column]', key[, default]) -> string",
        compile: f_lookup,
    },
    Function {
        name: "serves",
        aliases: &[],
        arity: 1..=1,
        signature:
            "serves(region code) -> bool (its province is in mappings/tables/jurisdiction.csv)",
        compile: f_serves,
    },
    Function {
        name: "coalesce",
        aliases: &[],
        arity: 2..=2,
        signature: "coalesce(optional T, T) -> T",
        compile: f_coalesce,
    },
    Function {
        name: "ensure",
        aliases: &[],
        arity: 3..=3,
        signature:
            "ensure(T, bool, 'reason') -> T (the value, or the record fails with the reason)",
        compile: f_ensure,
    },
    Function {
        name: "yuan",
        aliases: &[],
        arity: 1..=1,
        signature: "yuan(int fen) -> string '123.45'",
        compile: f_yuan,
    },
    Function {
        name: "id_valid",
        aliases: &[],
        arity: 1..=1,
        signature: "id_valid(string) -> bool",
        compile: f_id_valid,
    },
    Function {
        name: "id_birth_date",
        aliases: &[],
        arity: 1..=1,
        signature: "id_birth_date(id) -> date",
        compile: f_id_birth_date,
    },
    Function {
        name: "id_sex",
        aliases: &[],
        arity: 1..=1,
        signature: "id_sex(id) -> string 'M' | 'F'",
        compile: f_id_sex,
    },
    Function {
        name: "id_region",
        aliases: &[],
        arity: 1..=1,
        signature: "id_region(id) -> string (6-digit division code)",
        compile: f_id_region,
    },
    Function {
        name: "id_upgrade",
        aliases: &[],
        arity: 1..=1,
        signature: "id_upgrade(id) -> string (15 → 18 digits, x → X)",
        compile: f_id_upgrade,
    },
    Function {
        name: "cert_valid",
        aliases: &[],
        arity: 1..=1,
        signature: "cert_valid(string) -> bool",
        compile: f_cert_valid,
    },
    Function {
        name: "cert_category",
        aliases: &[],
        arity: 1..=1,
        signature: "cert_category(certificate no) -> int 1–7",
        compile: f_cert_category,
    },
    Function {
        name: "cert_level",
        aliases: &[],
        arity: 1..=1,
        signature: "cert_level(certificate no) -> int 1–4",
        compile: f_cert_level,
    },
    Function {
        name: "cert_reissue",
        aliases: &[],
        arity: 1..=1,
        signature: "cert_reissue(certificate no) -> int (0, or n for Bn)",
        compile: f_cert_reissue,
    },
    Function {
        name: "cert_holder_id",
        aliases: &[],
        arity: 1..=1,
        signature: "cert_holder_id(certificate no) -> string",
        compile: f_cert_holder_id,
    },
    Function {
        name: "luhn_valid",
        aliases: &[],
        arity: 1..=1,
        signature: "luhn_valid(string) -> bool",
        compile: f_luhn_valid,
    },
    Function {
        name: "mask_id",
        aliases: &[],
        arity: 1..=1,
        signature: "mask_id(string) -> string",
        compile: f_mask_id,
    },
    Function {
        name: "mask_card",
        aliases: &[],
        arity: 1..=1,
        signature: "mask_card(string) -> string",
        compile: f_mask_card,
    },
    Function {
        name: "mask_name",
        aliases: &[],
        arity: 1..=1,
        signature: "mask_name(string) -> string",
        compile: f_mask_name,
    },
];

/// The function called `name` (or one of its aliases).
pub fn function(name: &str) -> Option<&'static Function> {
    FUNCTIONS
        .iter()
        .find(|f| f.name == name || f.aliases.contains(&name))
}

/// A call being compiled: its arguments, taken from the front in order.
pub(super) struct Args<'i> {
    /// The name as written (an alias stays itself: `upperAscii`).
    name: &'i str,
    /// The arguments' expression ids, for errors.
    ids: &'i [u64],
    /// The arguments not taken yet, last first.
    rest: Vec<Typed>,
    /// How many arguments the call has.
    n: usize,
}

impl Args<'_> {
    /// The next argument, checked to be of kind `k` (argument `i`, from 0).
    fn next(&mut self, c: &mut Compiler, k: Kind, i: usize) -> Option<Eval> {
        let t = self.rest.pop()?;
        c.want(
            t,
            k,
            self.ids[i],
            &format!("argument {} of `{}`", i + 1, self.name),
        )
    }

    /// The next argument as it is.
    fn pop(&mut self) -> Option<Typed> {
        self.rest.pop()
    }
}

fn typed(ty: Type, eval: Eval) -> Option<Typed> {
    Some(Typed {
        ty,
        eval,
        konst: None,
        label: None,
    })
}

fn int_typed(eval: Eval) -> Option<Typed> {
    typed(Type::Int { long: true }, eval)
}

fn date_typed(eval: Eval) -> Option<Typed> {
    typed(Type::Date, eval)
}

fn str1<F>(a: Eval, f: F) -> Eval
where
    F: for<'a> Fn(Text<'a>) -> R<'a> + Send + Sync + 'static,
{
    Box::new(move |r, k| f(as_str(a(r, k)?)?))
}

fn str2<F>(a: Eval, b: Eval, f: F) -> Eval
where
    F: for<'a> Fn(Text<'a>, Text<'a>) -> R<'a> + Send + Sync + 'static,
{
    Box::new(move |r, k| f(as_str(a(r, k)?)?, as_str(b(r, k)?)?))
}

fn date1<F>(a: Eval, f: F) -> Eval
where
    F: Fn(NaiveDate) -> Result<Val<'static>, EvalError> + Send + Sync + 'static,
{
    Box::new(move |r, k| f(as_date(a(r, k)?)?))
}

fn date_int<F>(a: Eval, b: Eval, f: F) -> Eval
where
    F: Fn(NaiveDate, i64) -> Option<NaiveDate> + Send + Sync + 'static,
{
    Box::new(move |r, k| {
        let d = as_date(a(r, k)?)?;
        let n = as_int(b(r, k)?)?;
        f(d, n)
            .map(|d| Val::Date(days_from_date(d)))
            .ok_or(EvalError::msg("date out of range"))
    })
}

fn date_val(d: NaiveDate) -> Val<'static> {
    Val::Date(days_from_date(d))
}

fn owned(s: String) -> R<'static> {
    Ok(Val::Str(Text::from(s)))
}

/// Applies `f` to a text, keeping the borrow when `f` returns a sub-slice.
fn sub<'a>(s: Text<'a>, f: impl Fn(&str) -> &str) -> Text<'a> {
    s.map_slice(f)
}

fn parse_id(s: &str) -> Result<ResidentId, EvalError> {
    ResidentId::parse_cached(s)
        .map_err(|e| EvalError::new(format!("invalid ID number {}: {e}", mask::id_number(s))))
}

fn parse_cert(s: &str) -> Result<CertificateNo, EvalError> {
    CertificateNo::parse_cached(s).map_err(|e| {
        EvalError::new(format!(
            "invalid certificate number {}: {e}",
            mask::id_number(s)
        ))
    })
}

/// Compiles a call of a named function.
pub fn call(
    c: &mut Compiler,
    id: u64,
    name: &str,
    mut args: Vec<Typed>,
    ids: &[u64],
) -> Option<Typed> {
    let Some(f) = function(name) else {
        let near = FUNCTIONS
            .iter()
            .map(|f| (crate::mapping::compile::edit_distance(f.name, name), f.name))
            .min()
            .filter(|(d, _)| *d <= 2)
            .map(|(_, n)| format!(" (did you mean `{n}`?)"))
            .unwrap_or_default();
        return c.err_before(id, name.len(), format!("unknown function `{name}`{near}"));
    };
    let n = args.len();
    if !f.arity.contains(&n) {
        return c.err_call(
            id,
            format!("`{name}` takes other arguments: {}", f.signature),
        );
    }
    args.reverse();
    (f.compile)(
        c,
        &mut Args {
            name,
            ids,
            rest: args,
            n,
        },
    )
}

fn truncate(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

fn literal_str(c: &mut Compiler, t: Typed, id: u64, what: &str) -> Option<String> {
    match t.konst {
        Some(Const::Str(s)) => Some(s),
        _ => c.err_call(id, format!("{what} must be a string literal")),
    }
}
