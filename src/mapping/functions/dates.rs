//! Functions on dates: parsing and formatting (common formats prepared
//! once, without chrono's general machinery), periods, arithmetic, ages.

use super::*;

pub(super) fn f_date(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
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

pub(super) fn f_parse_date(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
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

pub(super) fn f_format_date(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
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

pub(super) fn f_period(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let d = args.next(c, Kind::Date, 0)?;
    const PERIOD: [Piece; 3] = [Piece::Year, Piece::Lit('-'), Piece::Month];
    Some(str_typed(date1(d, |d| {
        Ok(Val::Str(Text::Owned(format_simple(d, &PERIOD))))
    })))
}

pub(super) fn f_add_days(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    date_typed(date_int(
        args.next(c, Kind::Date, 0)?,
        args.next(c, Kind::Int, 1)?,
        |d, n| d.checked_add_signed(chrono::TimeDelta::try_days(n)?),
    ))
}

pub(super) fn f_add_months(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
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

pub(super) fn f_first_of_month(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    date_typed(date1(args.next(c, Kind::Date, 0)?, |d| {
        Ok(date_val(d.with_day(1).unwrap_or(d)))
    }))
}

pub(super) fn f_year(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let f: fn(NaiveDate) -> i64 = match args.name {
        "year" => |d| i64::from(d.year()),
        "month" => |d| i64::from(d.month()),
        _ => |d| i64::from(d.day()),
    };
    int_typed(date1(args.next(c, Kind::Date, 0)?, move |d| {
        Ok(Val::Int(f(d)))
    }))
}

pub(super) fn f_age_at(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
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

/// A piece of a date format made only of `%Y`, `%m`, `%d` and plain characters.
pub(super) enum Piece {
    Year,
    Month,
    Day,
    Lit(char),
}

/// The common date formats, prepared for a formatter that skips chrono's
/// general machinery; `None` for anything else.
pub(super) fn simple_date_format(fmt: &str) -> Option<Vec<Piece>> {
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

pub(super) fn format_simple(d: NaiveDate, pieces: &[Piece]) -> compact_str::CompactString {
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

pub(super) fn check_format(
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
