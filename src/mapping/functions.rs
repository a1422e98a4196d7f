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

/// Every function, with its signature, for `tongban` docs and error hints.
pub const SIGNATURES: &[(&str, &str)] = &[
    ("trim", "trim(string) -> string"),
    ("upper", "upper(string) -> string (also upperAscii)"),
    ("lower", "lower(string) -> string (also lowerAscii)"),
    (
        "size",
        "size(string | list | map) -> int (characters, items)",
    ),
    ("startsWith", "startsWith(string, string) -> bool"),
    ("endsWith", "endsWith(string, string) -> bool"),
    ("contains", "contains(string, string) -> bool"),
    ("matches", "matches(string, 'regex') -> bool"),
    (
        "substring",
        "substring(string, start[, end]) -> string (character positions)",
    ),
    ("replace", "replace(string, from, to) -> string"),
    ("split", "split(string, separator) -> list(string)"),
    ("pad_left", "pad_left(string, width, 'c') -> string"),
    ("pad_right", "pad_right(string, width, 'c') -> string"),
    ("concat", "concat(string, ...) -> string"),
    ("string", "string(any scalar) -> string"),
    ("int", "int(string | int) -> int"),
    (
        "date",
        "date(string 'YYYY-MM-DD' | timestamp) -> date (timestamps in China time, UTC+8)",
    ),
    ("parse_date", "parse_date(string, 'format') -> date"),
    (
        "format_date",
        "format_date(date, 'format') -> string (strftime: %Y%m%d)",
    ),
    ("period", "period(date) -> string 'YYYY-MM'"),
    ("add_days", "add_days(date, int) -> date"),
    (
        "add_months",
        "add_months(date, int) -> date (end of month clamps)",
    ),
    ("add_years", "add_years(date, int) -> date"),
    ("first_of_month", "first_of_month(date) -> date"),
    ("age_at", "age_at(birth date, date) -> int (whole years)"),
    ("year", "year(date) -> int"),
    ("month", "month(date) -> int"),
    ("day", "day(date) -> int"),
    (
        "lookup",
        "lookup('table[.column]', key[, default]) -> string",
    ),
    ("coalesce", "coalesce(optional T, T) -> T"),
    ("yuan", "yuan(int fen) -> string '123.45'"),
    ("id_valid", "id_valid(string) -> bool"),
    ("id_birth_date", "id_birth_date(id) -> date"),
    ("id_sex", "id_sex(id) -> string 'M' | 'F'"),
    (
        "id_region",
        "id_region(id) -> string (6-digit division code)",
    ),
    (
        "id_upgrade",
        "id_upgrade(id) -> string (15 → 18 digits, x → X)",
    ),
    ("cert_valid", "cert_valid(string) -> bool"),
    ("cert_category", "cert_category(certificate no) -> int 1–7"),
    ("cert_level", "cert_level(certificate no) -> int 1–4"),
    (
        "cert_reissue",
        "cert_reissue(certificate no) -> int (0, or n for Bn)",
    ),
    ("cert_holder_id", "cert_holder_id(certificate no) -> string"),
    ("luhn_valid", "luhn_valid(string) -> bool"),
    ("mask_id", "mask_id(string) -> string"),
    ("mask_card", "mask_card(string) -> string"),
    ("mask_name", "mask_name(string) -> string"),
];

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
    let Some(&(_, sig)) = SIGNATURES.iter().find(|(n, _)| {
        *n == name
            || (name == "upperAscii" && *n == "upper")
            || (name == "lowerAscii" && *n == "lower")
    }) else {
        let near = SIGNATURES
            .iter()
            .map(|(n, _)| (super::compile::edit_distance(n, name), *n))
            .min()
            .filter(|(d, _)| *d <= 2)
            .map(|(_, n)| format!(" (did you mean `{n}`?)"))
            .unwrap_or_default();
        return c.err_before(id, name.len(), format!("unknown function `{name}`{near}"));
    };
    let n = args.len();
    let arity_ok = match name {
        "concat" => n >= 1,
        "substring" | "lookup" => n == 2 || n == 3,
        "startsWith" | "endsWith" | "contains" | "matches" | "split" | "parse_date"
        | "format_date" | "add_days" | "add_months" | "add_years" | "age_at" | "coalesce" => n == 2,
        "replace" | "pad_left" | "pad_right" => n == 3,
        _ => n == 1,
    };
    if !arity_ok {
        return c.err_call(id, format!("`{name}` takes other arguments: {sig}"));
    }
    // Arguments are taken from the front in order.
    args.reverse();
    let mut next = |c: &mut Compiler, k: Kind, i: usize| -> Option<Eval> {
        let t = args.pop()?;
        c.want(t, k, ids[i], &format!("argument {} of `{name}`", i + 1))
    };
    match name {
        "trim" => Some(str_typed(str1(next(c, Kind::Str, 0)?, |s| {
            Ok(Val::Str(sub(s, str::trim)))
        }))),
        "upper" | "upperAscii" => Some(str_typed(str1(next(c, Kind::Str, 0)?, |s| {
            owned(s.to_uppercase())
        }))),
        "lower" | "lowerAscii" => Some(str_typed(str1(next(c, Kind::Str, 0)?, |s| {
            owned(s.to_lowercase())
        }))),
        "size" => {
            let t = args.pop()?;
            match t.ty.required() {
                Type::Str | Type::Enum(_) => {
                    let f = c.want(t, Kind::Str, ids[0], "the argument of `size`")?;
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
                    ids[0],
                    format!("`size` takes a string, list or map, found {other}"),
                ),
            }
        }
        "startsWith" | "endsWith" | "contains" => {
            let (a, b) = (next(c, Kind::Str, 0)?, next(c, Kind::Str, 1)?);
            let f: fn(&str, &str) -> bool = match name {
                "startsWith" => |s, p| s.starts_with(p),
                "endsWith" => |s, p| s.ends_with(p),
                _ => |s, p| s.contains(p),
            };
            Some(bool_typed(str2(a, b, move |s, p| Ok(Val::Bool(f(&s, &p))))))
        }
        "matches" => {
            let a = next(c, Kind::Str, 0)?;
            let pat = literal_str(c, args.pop()?, ids[1], "the pattern of `matches`")?;
            let re = match regex::Regex::new(&pat) {
                Ok(re) => re,
                Err(e) => return c.err_call(ids[1], format!("invalid regular expression: {e}")),
            };
            Some(bool_typed(str1(a, move |s| Ok(Val::Bool(re.is_match(&s))))))
        }
        "substring" => {
            let s = next(c, Kind::Str, 0)?;
            let start = next(c, Kind::Int, 1)?;
            let end = if n == 3 {
                Some(next(c, Kind::Int, 2)?)
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
        "split" => {
            let (s, sep) = (next(c, Kind::Str, 0)?, next(c, Kind::Str, 1)?);
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
        "replace" => {
            let (s, a, b) = (
                next(c, Kind::Str, 0)?,
                next(c, Kind::Str, 1)?,
                next(c, Kind::Str, 2)?,
            );
            Some(str_typed(Box::new(move |r, k| {
                let (s, a, b) = (as_str(s(r, k)?)?, as_str(a(r, k)?)?, as_str(b(r, k)?)?);
                owned(s.replace(&*a, &b))
            })))
        }
        "pad_left" | "pad_right" => {
            let s = next(c, Kind::Str, 0)?;
            let w = next(c, Kind::Int, 1)?;
            let fill = literal_str(c, args.pop()?, ids[2], "the fill character")?;
            let mut chars = fill.chars();
            let (Some(ch), None) = (chars.next(), chars.next()) else {
                return c.err_call(ids[2], "the fill character must be a single character");
            };
            let left = name == "pad_left";
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
        "concat" => {
            let fs: Vec<Eval> = (0..n)
                .map(|i| next(c, Kind::Str, i))
                .collect::<Option<_>>()?;
            Some(str_typed(Box::new(move |r, k| {
                let mut out = String::new();
                for f in &fs {
                    out.push_str(&as_str(f(r, k)?)?);
                }
                owned(out)
            })))
        }
        "string" => {
            let t = args.pop()?;
            let Some(kind) = Kind::of(t.ty.required()) else {
                return c.err_call(ids[0], format!("`string` takes a scalar, found {}", t.ty));
            };
            let f = c.want(t, kind, ids[0], "the argument of `string`")?;
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
        "int" => {
            let t = args.pop()?;
            match t.ty.required() {
                Type::Int { .. } => Some(t),
                Type::Str | Type::Enum(_) => {
                    let f = c.want(t, Kind::Str, ids[0], "the argument of `int`")?;
                    int_typed(str1(f, |s| {
                        s.trim().parse::<i64>().map(Val::Int).map_err(|_| {
                            EvalError::new(format!("{:?} is not an integer", truncate(&s, 24)))
                        })
                    }))
                }
                other => c.err_call(
                    ids[0],
                    format!("`int` takes a string or an int, found {other}"),
                ),
            }
        }
        "date" => {
            let t = args.pop()?;
            match t.ty.required() {
                Type::Date => Some(t),
                Type::Timestamp => {
                    let f = c.want(t, Kind::Ts, ids[0], "the argument of `date`")?;
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
                            return c.err_call(ids[0], format!("{s:?} is not a date YYYY-MM-DD"));
                        }
                    }
                    let f = c.want(t, Kind::Str, ids[0], "the argument of `date`")?;
                    date_typed(str1(f, |s| {
                        crate::schema::json_parse_date(&s)
                            .map(Val::Date)
                            .ok_or_else(|| {
                                EvalError::new(format!(
                                    "{:?} is not a date YYYY-MM-DD",
                                    truncate(&s, 24)
                                ))
                            })
                    }))
                }
                other => c.err_call(
                    ids[0],
                    format!("`date` takes a string or a timestamp, found {other}"),
                ),
            }
        }
        "parse_date" => {
            let s = next(c, Kind::Str, 0)?;
            let fmt = literal_str(c, args.pop()?, ids[1], "the format of `parse_date`")?;
            check_format(c, &fmt, ids[1])?;
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
        "format_date" => {
            let d = next(c, Kind::Date, 0)?;
            let fmt = literal_str(c, args.pop()?, ids[1], "the format of `format_date`")?;
            let items = check_format(c, &fmt, ids[1])?;
            if let Some(pieces) = simple_date_format(&fmt) {
                return Some(str_typed(date1(d, move |d| {
                    Ok(Val::Str(Text::Owned(format_simple(d, &pieces))))
                })));
            }
            Some(str_typed(date1(d, move |d| {
                owned(d.format_with_items(items.iter()).to_string())
            })))
        }
        "period" => {
            let d = next(c, Kind::Date, 0)?;
            const PERIOD: [Piece; 3] = [Piece::Year, Piece::Lit('-'), Piece::Month];
            Some(str_typed(date1(d, |d| {
                Ok(Val::Str(Text::Owned(format_simple(d, &PERIOD))))
            })))
        }
        "add_days" => date_typed(date_int(
            next(c, Kind::Date, 0)?,
            next(c, Kind::Int, 1)?,
            |d, n| d.checked_add_signed(chrono::TimeDelta::try_days(n)?),
        )),
        "add_months" | "add_years" => {
            let mul = if name == "add_years" { 12 } else { 1 };
            date_typed(date_int(
                next(c, Kind::Date, 0)?,
                next(c, Kind::Int, 1)?,
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
        "first_of_month" => date_typed(date1(next(c, Kind::Date, 0)?, |d| {
            Ok(date_val(d.with_day(1).unwrap_or(d)))
        })),
        "year" | "month" | "day" => {
            let f: fn(NaiveDate) -> i64 = match name {
                "year" => |d| i64::from(d.year()),
                "month" => |d| i64::from(d.month()),
                _ => |d| i64::from(d.day()),
            };
            int_typed(date1(next(c, Kind::Date, 0)?, move |d| Ok(Val::Int(f(d)))))
        }
        "age_at" => {
            let (b, at) = (next(c, Kind::Date, 0)?, next(c, Kind::Date, 1)?);
            int_typed(Box::new(move |r, k| {
                let (b, at) = (as_date(b(r, k)?)?, as_date(at(r, k)?)?);
                let mut age = at.year() - b.year();
                if (at.month(), at.day()) < (b.month(), b.day()) {
                    age -= 1;
                }
                Ok(Val::Int(i64::from(age)))
            }))
        }
        "lookup" => lookup(c, args, ids, n),
        "coalesce" => {
            let a = args.pop()?;
            let b = args.pop()?;
            if !super::compile::same_kind(&a.ty, &b.ty) {
                return c.err_call(ids[1], format!("the default of `coalesce` must have the type of its first argument ({}), found {}", a.ty.required(), b.ty));
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
        "yuan" => {
            let f = next(c, Kind::Int, 0)?;
            Some(str_typed(Box::new(move |r, k| {
                let fen = as_int(f(r, k)?)?;
                let sign = if fen < 0 { "-" } else { "" };
                let a = fen.unsigned_abs();
                owned(format!("{sign}{}.{:02}", a / 100, a % 100))
            })))
        }
        "id_valid" => Some(bool_typed(str1(next(c, Kind::Str, 0)?, |s| {
            Ok(Val::Bool(ResidentId::parse_cached(&s).is_ok()))
        }))),
        "id_birth_date" => date_typed(str1(next(c, Kind::Str, 0)?, |s| {
            Ok(date_val(parse_id(&s)?.birth_date()))
        })),
        "id_sex" => Some(str_typed(str1(next(c, Kind::Str, 0)?, |s| {
            Ok(Val::Str(Text::Borrowed(if parse_id(&s)?.is_male() {
                "M"
            } else {
                "F"
            })))
        }))),
        "id_region" => Some(str_typed(str1(next(c, Kind::Str, 0)?, |s| {
            parse_id(&s)?;
            Ok(Val::Str(sub(s, |x| &x[..6])))
        }))),
        "id_upgrade" => Some(str_typed(str1(next(c, Kind::Str, 0)?, |s| {
            ResidentId::parse_or_upgrade(&s)
                .map(|id| Val::Str(Text::Owned(id.as_str().into())))
                .map_err(|e| {
                    EvalError::new(format!("invalid ID number {}: {e}", mask::id_number(&s)))
                })
        }))),
        "cert_valid" => Some(bool_typed(str1(next(c, Kind::Str, 0)?, |s| {
            Ok(Val::Bool(CertificateNo::parse_cached(&s).is_ok()))
        }))),
        "cert_category" => int_typed(str1(next(c, Kind::Str, 0)?, |s| {
            Ok(Val::Int(i64::from(parse_cert(&s)?.category())))
        })),
        "cert_level" => int_typed(str1(next(c, Kind::Str, 0)?, |s| {
            Ok(Val::Int(i64::from(parse_cert(&s)?.level())))
        })),
        "cert_reissue" => int_typed(str1(next(c, Kind::Str, 0)?, |s| {
            Ok(Val::Int(i64::from(parse_cert(&s)?.reissue())))
        })),
        "cert_holder_id" => Some(str_typed(str1(next(c, Kind::Str, 0)?, |s| {
            parse_cert(&s)?;
            Ok(Val::Str(sub(s, |x| &x[..18])))
        }))),
        "luhn_valid" => Some(bool_typed(str1(next(c, Kind::Str, 0)?, |s| {
            Ok(Val::Bool(crate::domain::luhn::is_valid(&s)))
        }))),
        "mask_id" => Some(str_typed(str1(next(c, Kind::Str, 0)?, |s| {
            owned(mask::id_number(&s))
        }))),
        "mask_card" => Some(str_typed(str1(next(c, Kind::Str, 0)?, |s| {
            owned(mask::bank_card(&s))
        }))),
        "mask_name" => Some(str_typed(str1(next(c, Kind::Str, 0)?, |s| {
            owned(mask::name(&s))
        }))),
        _ => c.err_call(
            id,
            format!("function `{name}` is listed but not compiled (please report)"),
        ),
    }
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

fn lookup(c: &mut Compiler, mut args: Vec<Typed>, ids: &[u64], n: usize) -> Option<Typed> {
    let spec = literal_str(c, args.pop()?, ids[0], "the table name of `lookup`")?;
    let (table, column) = match spec.split_once('.') {
        Some((t, col)) => (t.to_string(), Some(col.to_string())),
        None => (spec.clone(), None),
    };
    let Some((slot, t)) = c.table_slot(&table) else {
        let have = c.table_names().join(", ");
        return c.err_call(
            ids[0],
            format!("no table {table:?} in mappings/tables/ (have: {have})"),
        );
    };
    let col = match &column {
        None => 0,
        Some(name) => match t.column(name) {
            Some(i) => i,
            None => {
                return c.err_call(
                    ids[0],
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
    let fk = c.want(key, kind, ids[1], "the key of `lookup`")?;
    let default = if n == 3 {
        Some(c.want(args.pop()?, Kind::Str, ids[2], "the default of `lookup`")?)
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
