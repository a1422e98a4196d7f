//! The functions mapping expressions can call: strings, integers, dates,
//! code tables and the domain rules of docs/domain.md. Each is type-checked and
//! prepared at compile time; literal arguments such as regular expressions
//! and date formats are parsed once, here.
//!
//! Method syntax is the same call: `s.trim()` is `trim(s)`.

use super::compile::{bool_typed, str_typed, Compiler, Const, Eval, Kind, Typed, R};
use super::value::{as_date, as_int, as_str, EvalError, Text, Val};
use crate::domain::{mask, CertificateNo, ResidentId};
use crate::schema::{days_from_date, Type};
use chrono::{Datelike, Months, NaiveDate};

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
        name: "coalesce",
        aliases: &[],
        arity: 2..=2,
        signature: "coalesce(optional T, T) -> T",
        compile: f_coalesce,
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
            .map(|f| (super::compile::edit_distance(f.name, name), f.name))
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

fn f_trim(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Str(sub(s, str::trim)))
    })))
}

fn f_upper(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        owned(s.to_uppercase())
    })))
}

fn f_lower(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        owned(s.to_lowercase())
    })))
}

fn f_size(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let t = args.pop()?;
    match t.ty.required() {
        Type::Str | Type::Enum(_) => {
            let f = c.want(t, Kind::Str, args.ids[0], "the argument of `size`")?;
            int_typed(str1(f, |s| Ok(Val::Int(s.chars().count() as i64))))
        }
        Type::Array(_) | Type::Map(_) => {
            let f = t.present();
            int_typed(Box::new(move |r, k| {
                Ok(Val::Int(match f(r, k)? {
                    Val::Arr(xs) => xs.len(),
                    Val::List(xs) => xs.len(),
                    Val::Map(m) => m.len(),
                    _ => return Err(EvalError::internal()),
                } as i64))
            }))
        }
        other => c.err_call(
            args.ids[0],
            format!("`size` takes a string, list or map, found {other}"),
        ),
    }
}

fn f_startswith(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let (a, b) = (args.next(c, Kind::Str, 0)?, args.next(c, Kind::Str, 1)?);
    let f: fn(&str, &str) -> bool = match args.name {
        "startsWith" => |s, p| s.starts_with(p),
        "endsWith" => |s, p| s.ends_with(p),
        _ => |s, p| s.contains(p),
    };
    Some(bool_typed(str2(a, b, move |s, p| Ok(Val::Bool(f(&s, &p))))))
}

fn f_matches(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let a = args.next(c, Kind::Str, 0)?;
    let pat = literal_str(c, args.pop()?, args.ids[1], "the pattern of `matches`")?;
    let re = match regex::Regex::new(&pat) {
        Ok(re) => re,
        Err(e) => return c.err_call(args.ids[1], format!("invalid regular expression: {e}")),
    };
    Some(bool_typed(str1(a, move |s| Ok(Val::Bool(re.is_match(&s))))))
}

fn f_substring(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let s = args.next(c, Kind::Str, 0)?;
    let start = args.next(c, Kind::Int, 1)?;
    let end = if args.n == 3 {
        Some(args.next(c, Kind::Int, 2)?)
    } else {
        None
    };
    Some(str_typed(Box::new(move |r, k| {
        let s = as_str(s(r, k)?)?;
        let st = as_int(start(r, k)?)?;
        let count = s.chars().count() as i64;
        let en = match &end {
            Some(e) => as_int(e(r, k)?)?,
            None => count,
        };
        if st < 0 || en < st || en > count {
            return Err(EvalError::new(format!(
                "substring({st}, {en}) is out of range for a string of {count} characters"
            )));
        }
        let b = |i: i64| {
            s.char_indices()
                .nth(i as usize)
                .map(|(b, _)| b)
                .unwrap_or(s.len())
        };
        let (bs, be) = (b(st), b(en));
        Ok(Val::Str(sub(s, |x| &x[bs..be])))
    })))
}

fn f_split(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let (s, sep) = (args.next(c, Kind::Str, 0)?, args.next(c, Kind::Str, 1)?);
    typed(
        Type::Array(Box::new(Type::Str)),
        str2(s, sep, |s, sep| {
            Ok(Val::List(match s {
                Text::Borrowed(b) => b
                    .split(&*sep)
                    .map(|x| Val::Str(Text::Borrowed(x)))
                    .collect(),
                Text::Owned(o) => o
                    .split(&*sep)
                    .map(|x| Val::Str(Text::Owned(x.into())))
                    .collect(),
            }))
        }),
    )
}

fn f_replace(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let (s, a, b) = (
        args.next(c, Kind::Str, 0)?,
        args.next(c, Kind::Str, 1)?,
        args.next(c, Kind::Str, 2)?,
    );
    Some(str_typed(Box::new(move |r, k| {
        let (s, a, b) = (as_str(s(r, k)?)?, as_str(a(r, k)?)?, as_str(b(r, k)?)?);
        owned(s.replace(&*a, &b))
    })))
}

fn f_pad_left(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let s = args.next(c, Kind::Str, 0)?;
    let w = args.next(c, Kind::Int, 1)?;
    let fill = literal_str(c, args.pop()?, args.ids[2], "the fill character")?;
    let mut chars = fill.chars();
    let (Some(ch), None) = (chars.next(), chars.next()) else {
        return c.err_call(args.ids[2], "the fill character must be a single character");
    };
    let left = args.name == "pad_left";
    Some(str_typed(Box::new(move |r, k| {
        let s = as_str(s(r, k)?)?;
        let w = as_int(w(r, k)?)?.max(0) as usize;
        let have = s.chars().count();
        if have >= w {
            return Ok(Val::Str(s));
        }
        let pad: String = std::iter::repeat_n(ch, w - have).collect();
        owned(if left { pad + &s } else { s.to_string() + &pad })
    })))
}

fn f_concat(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let fs: Vec<Eval> = (0..args.n)
        .map(|i| args.next(c, Kind::Str, i))
        .collect::<Option<_>>()?;
    Some(str_typed(Box::new(move |r, k| {
        let mut out = String::new();
        for f in &fs {
            out.push_str(&as_str(f(r, k)?)?);
        }
        owned(out)
    })))
}

fn f_string(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let t = args.pop()?;
    let Some(kind) = Kind::of(t.ty.required()) else {
        return c.err_call(
            args.ids[0],
            format!("`string` takes a scalar, found {}", t.ty),
        );
    };
    let f = c.want(t, kind, args.ids[0], "the argument of `string`")?;
    Some(str_typed(Box::new(move |r, k| {
        Ok(match f(r, k)? {
            Val::Str(s) => Val::Str(s),
            Val::Int(i) => Val::Str(Text::Owned(itoa::Buffer::new().format(i).into())),
            Val::Bool(b) => Val::Str(Text::Borrowed(if b { "true" } else { "false" })),
            Val::Date(d) => Val::Str(Text::from(
                crate::schema::date_from_days(d)
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_default(),
            )),
            Val::Ts(t) => Val::Str(Text::from(
                chrono::DateTime::from_timestamp_millis(t)
                    .unwrap_or_default()
                    .to_rfc3339(),
            )),
            _ => return Err(EvalError::internal()),
        })
    })))
}

fn f_int(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let t = args.pop()?;
    match t.ty.required() {
        Type::Int { .. } => Some(t),
        Type::Str | Type::Enum(_) => {
            let f = c.want(t, Kind::Str, args.ids[0], "the argument of `int`")?;
            int_typed(str1(f, |s| {
                s.trim().parse::<i64>().map(Val::Int).map_err(|_| {
                    EvalError::new(format!("{:?} is not an integer", truncate(&s, 24)))
                })
            }))
        }
        other => c.err_call(
            args.ids[0],
            format!("`int` takes a string or an int, found {other}"),
        ),
    }
}

fn f_date(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let t = args.pop()?;
    match t.ty.required() {
        Type::Date => Some(t),
        Type::Timestamp => {
            let f = c.want(t, Kind::Ts, args.ids[0], "the argument of `date`")?;
            let china = crate::domain::china_tz();
            date_typed(Box::new(move |r, k| match f(r, k)? {
                Val::Ts(ms) => chrono::DateTime::from_timestamp_millis(ms)
                    .map(|t| date_val(t.with_timezone(&china).date_naive()))
                    .ok_or(EvalError::msg("timestamp out of range")),
                _ => Err(EvalError::internal()),
            }))
        }
        Type::Str => {
            if let Some(Const::Str(s)) = &t.konst {
                if crate::schema::json_parse_date(s).is_none() {
                    return c.err_call(args.ids[0], format!("{s:?} is not a date YYYY-MM-DD"));
                }
            }
            let f = c.want(t, Kind::Str, args.ids[0], "the argument of `date`")?;
            date_typed(str1(f, |s| {
                crate::schema::json_parse_date(&s)
                    .map(Val::Date)
                    .ok_or_else(|| {
                        EvalError::new(format!("{:?} is not a date YYYY-MM-DD", truncate(&s, 24)))
                    })
            }))
        }
        other => c.err_call(
            args.ids[0],
            format!("`date` takes a string or a timestamp, found {other}"),
        ),
    }
}

fn f_parse_date(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let s = args.next(c, Kind::Str, 0)?;
    let fmt = literal_str(c, args.pop()?, args.ids[1], "the format of `parse_date`")?;
    check_format(c, &fmt, args.ids[1])?;
    date_typed(str1(s, move |s| {
        NaiveDate::parse_from_str(&s, &fmt)
            .map(date_val)
            .map_err(|_| {
                EvalError::new(format!(
                    "{:?} does not match the date format {fmt:?}",
                    truncate(&s, 24)
                ))
            })
    }))
}

fn f_format_date(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let d = args.next(c, Kind::Date, 0)?;
    let fmt = literal_str(c, args.pop()?, args.ids[1], "the format of `format_date`")?;
    let items = check_format(c, &fmt, args.ids[1])?;
    if let Some(pieces) = simple_date_format(&fmt) {
        return Some(str_typed(date1(d, move |d| {
            Ok(Val::Str(Text::Owned(format_simple(d, &pieces))))
        })));
    }
    Some(str_typed(date1(d, move |d| {
        owned(d.format_with_items(items.iter()).to_string())
    })))
}

fn f_period(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let d = args.next(c, Kind::Date, 0)?;
    const PERIOD: [Piece; 3] = [Piece::Year, Piece::Lit('-'), Piece::Month];
    Some(str_typed(date1(d, |d| {
        Ok(Val::Str(Text::Owned(format_simple(d, &PERIOD))))
    })))
}

fn f_add_days(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    date_typed(date_int(
        args.next(c, Kind::Date, 0)?,
        args.next(c, Kind::Int, 1)?,
        |d, n| d.checked_add_signed(chrono::TimeDelta::try_days(n)?),
    ))
}

fn f_add_months(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let mul = if args.name == "add_years" { 12 } else { 1 };
    date_typed(date_int(
        args.next(c, Kind::Date, 0)?,
        args.next(c, Kind::Int, 1)?,
        move |d, n| {
            let m = n.checked_mul(mul)?;
            let months = Months::new(u32::try_from(m.unsigned_abs()).ok()?);
            if m >= 0 {
                d.checked_add_months(months)
            } else {
                d.checked_sub_months(months)
            }
        },
    ))
}

fn f_first_of_month(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    date_typed(date1(args.next(c, Kind::Date, 0)?, |d| {
        Ok(date_val(d.with_day(1).unwrap_or(d)))
    }))
}

fn f_year(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let f: fn(NaiveDate) -> i64 = match args.name {
        "year" => |d| i64::from(d.year()),
        "month" => |d| i64::from(d.month()),
        _ => |d| i64::from(d.day()),
    };
    int_typed(date1(args.next(c, Kind::Date, 0)?, move |d| {
        Ok(Val::Int(f(d)))
    }))
}

fn f_age_at(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let (b, at) = (args.next(c, Kind::Date, 0)?, args.next(c, Kind::Date, 1)?);
    int_typed(Box::new(move |r, k| {
        let (b, at) = (as_date(b(r, k)?)?, as_date(at(r, k)?)?);
        let mut age = at.year() - b.year();
        if (at.month(), at.day()) < (b.month(), b.day()) {
            age -= 1;
        }
        Ok(Val::Int(i64::from(age)))
    }))
}

fn f_lookup(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    lookup(c, args)
}

fn f_coalesce(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let a = args.pop()?;
    let b = args.pop()?;
    if !super::compile::same_kind(&a.ty, &b.ty) {
        return c.err_call(
            args.ids[1],
            format!(
                "the default of `coalesce` must have the type of its first argument ({}), found {}",
                a.ty.required(),
                b.ty
            ),
        );
    }
    let ty = b.ty.clone();
    let (fa, fb) = (a.eval, b.eval);
    typed(
        ty,
        Box::new(move |r, k| match fa(r, k)? {
            Val::Null => fb(r, k),
            v => Ok(v),
        }),
    )
}

fn f_yuan(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let f = args.next(c, Kind::Int, 0)?;
    Some(str_typed(Box::new(move |r, k| {
        let fen = as_int(f(r, k)?)?;
        let sign = if fen < 0 { "-" } else { "" };
        let a = fen.unsigned_abs();
        owned(format!("{sign}{}.{:02}", a / 100, a % 100))
    })))
}

fn f_id_valid(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(bool_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Bool(ResidentId::parse_cached(&s).is_ok()))
    })))
}

fn f_id_birth_date(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    date_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(date_val(parse_id(&s)?.birth_date()))
    }))
}

fn f_id_sex(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Str(Text::Borrowed(if parse_id(&s)?.is_male() {
            "M"
        } else {
            "F"
        })))
    })))
}

fn f_id_region(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        parse_id(&s)?;
        Ok(Val::Str(sub(s, |x| &x[..6])))
    })))
}

fn f_id_upgrade(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        ResidentId::parse_or_upgrade(&s)
            .map(|id| Val::Str(Text::Owned(id.as_str().into())))
            .map_err(|e| EvalError::new(format!("invalid ID number {}: {e}", mask::id_number(&s))))
    })))
}

fn f_cert_valid(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(bool_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Bool(CertificateNo::parse_cached(&s).is_ok()))
    })))
}

fn f_cert_category(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    int_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Int(i64::from(parse_cert(&s)?.category())))
    }))
}

fn f_cert_level(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    int_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Int(i64::from(parse_cert(&s)?.level())))
    }))
}

fn f_cert_reissue(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    int_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Int(i64::from(parse_cert(&s)?.reissue())))
    }))
}

fn f_cert_holder_id(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        parse_cert(&s)?;
        Ok(Val::Str(sub(s, |x| &x[..18])))
    })))
}

fn f_luhn_valid(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(bool_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Bool(crate::domain::luhn::is_valid(&s)))
    })))
}

fn f_mask_id(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        owned(mask::id_number(&s))
    })))
}

fn f_mask_card(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        owned(mask::bank_card(&s))
    })))
}

fn f_mask_name(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        owned(mask::name(&s))
    })))
}

/// A piece of a date format made only of `%Y`, `%m`, `%d` and plain characters.
enum Piece {
    Year,
    Month,
    Day,
    Lit(char),
}

/// The common date formats, prepared for a formatter that skips chrono's
/// general machinery; `None` for anything else.
fn simple_date_format(fmt: &str) -> Option<Vec<Piece>> {
    let mut out = Vec::new();
    if fmt.len() > 40 {
        return None; // years of up to 6 characters, the rest as written: fits 64 bytes
    }
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '%' => match chars.next()? {
                'Y' => Piece::Year,
                'm' => Piece::Month,
                'd' => Piece::Day,
                _ => return None,
            },
            c => Piece::Lit(c),
        });
    }
    Some(out)
}

fn format_simple(d: NaiveDate, pieces: &[Piece]) -> compact_str::CompactString {
    // Built in a stack buffer and copied once: pushing character by
    // character into the string costs several times more.
    let mut buf = [0u8; 64];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        let end = (n + bytes.len()).min(buf.len());
        buf[n..end].copy_from_slice(&bytes[..end - n]);
        n = end;
    };
    let two = |x: u32| [b'0' + (x / 10 % 10) as u8, b'0' + (x % 10) as u8];
    for p in pieces {
        match p {
            Piece::Year => {
                let y = d.year();
                if (0..10000).contains(&y) {
                    put(&two(y as u32 / 100));
                    put(&two(y as u32 % 100));
                } else {
                    put(format!("{y:+}").as_bytes());
                }
            }
            Piece::Month => put(&two(d.month())),
            Piece::Day => put(&two(d.day())),
            Piece::Lit(c) => put(c.encode_utf8(&mut [0u8; 4]).as_bytes()),
        }
    }
    // Only ASCII digits and signs and whole UTF-8 characters were written,
    // and `simple_date_format` admits only formats that fit the buffer.
    compact_str::CompactString::from(std::str::from_utf8(&buf[..n]).unwrap_or_default())
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

fn check_format(
    c: &mut Compiler,
    fmt: &str,
    id: u64,
) -> Option<Vec<chrono::format::Item<'static>>> {
    match chrono::format::StrftimeItems::new(fmt).parse_to_owned() {
        Ok(items) => Some(items),
        Err(_) => c.err_call(
            id,
            format!("invalid date format {fmt:?} (use strftime codes such as %Y%m%d)"),
        ),
    }
}

fn lookup(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let spec = literal_str(c, args.pop()?, args.ids[0], "the table name of `lookup`")?;
    let (table, column) = match spec.split_once('.') {
        Some((t, col)) => (t.to_string(), Some(col.to_string())),
        None => (spec.clone(), None),
    };
    let Some((slot, t)) = c.table_slot(&table) else {
        let have = c.table_names().join(", ");
        return c.err_call(
            args.ids[0],
            format!("no table {table:?} in mappings/tables/ (have: {have})"),
        );
    };
    let col = match &column {
        None => 0,
        Some(name) => match t.column(name) {
            Some(i) => i,
            None => {
                return c.err_call(
                    args.ids[0],
                    format!(
                        "table {table:?} has no column {name:?} (has: {})",
                        t.columns[1..].join(", ")
                    ),
                )
            }
        },
    };
    let key = args.pop()?;
    let kind = match key.ty.required() {
        Type::Int { .. } => Kind::Int,
        _ => Kind::Str,
    };
    let fk = c.want(key, kind, args.ids[1], "the key of `lookup`")?;
    let default = if args.n == 3 {
        Some(c.want(
            args.pop()?,
            Kind::Str,
            args.ids[2],
            "the default of `lookup`",
        )?)
    } else {
        None
    };
    Some(str_typed(Box::new(move |r, k| {
        let key = fk(r, k)?;
        let mut buf = itoa::Buffer::new();
        let ks: &str = match &key {
            Val::Str(s) => s,
            Val::Int(i) => buf.format(*i),
            _ => return Err(EvalError::internal()),
        };
        match k.tables[slot].get(ks, col) {
            Some(v) => Ok(Val::Str(Text::Borrowed(v))),
            None => match &default {
                Some(d) => d(r, k),
                None => Err(EvalError::new(format!(
                    "key {:?} is not in table {:?}",
                    truncate(ks, 24),
                    k.tables[slot].name
                ))),
            },
        }
    })))
}
