//! Functions on strings and scalars: trim, case, size, tests, substrings,
//! split, replace, padding, concatenation, conversions.

use super::*;

pub(super) fn f_trim(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Str(sub(s, str::trim)))
    })))
}

pub(super) fn f_upper(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        owned(s.to_uppercase())
    })))
}

pub(super) fn f_lower(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        owned(s.to_lowercase())
    })))
}

pub(super) fn f_size(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
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

pub(super) fn f_startswith(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let (a, b) = (args.next(c, Kind::Str, 0)?, args.next(c, Kind::Str, 1)?);
    let f: fn(&str, &str) -> bool = match args.name {
        "startsWith" => |s, p| s.starts_with(p),
        "endsWith" => |s, p| s.ends_with(p),
        _ => |s, p| s.contains(p),
    };
    Some(bool_typed(str2(a, b, move |s, p| Ok(Val::Bool(f(&s, &p))))))
}

pub(super) fn f_matches(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let a = args.next(c, Kind::Str, 0)?;
    let pat = literal_str(c, args.pop()?, args.ids[1], "the pattern of `matches`")?;
    let re = match regex::Regex::new(&pat) {
        Ok(re) => re,
        Err(e) => return c.err_call(args.ids[1], format!("invalid regular expression: {e}")),
    };
    Some(bool_typed(str1(a, move |s| Ok(Val::Bool(re.is_match(&s))))))
}

pub(super) fn f_substring(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
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

pub(super) fn f_split(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
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

pub(super) fn f_replace(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
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

pub(super) fn f_pad_left(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
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

pub(super) fn f_concat(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
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

pub(super) fn f_string(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
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

pub(super) fn f_int(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
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
