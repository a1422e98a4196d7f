//! Code tables (`lookup`), defaults (`coalesce`) and money (`yuan`).

use super::*;

pub(super) fn f_lookup(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    lookup(c, args)
}

pub(super) fn f_coalesce(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let a = args.pop()?;
    let b = args.pop()?;
    if !crate::mapping::compile::same_kind(&a.ty, &b.ty) {
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

/// `ensure(value, condition, 'reason')`: the value where the condition
/// holds; otherwise the record fails with the reason (and is quarantined
/// with it), at the field or part where it is used.
pub(super) fn f_ensure(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let value = args.pop()?;
    let cond = args.next(c, Kind::Bool, 1)?;
    let reason = args.pop()?;
    let reason: std::sync::Arc<str> =
        literal_str(c, reason, args.ids[2], "the reason of `ensure`")?.into();
    let (ty, fv) = (value.ty, value.eval);
    typed(
        ty,
        Box::new(move |r, k| match cond(r, k)? {
            Val::Bool(true) => fv(r, k),
            _ => Err(EvalError::new(reason.to_string())),
        }),
    )
}

pub(super) fn f_yuan(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let f = args.next(c, Kind::Int, 0)?;
    Some(str_typed(Box::new(move |r, k| {
        let fen = as_int(f(r, k)?)?;
        let sign = if fen < 0 { "-" } else { "" };
        let a = fen.unsigned_abs();
        owned(format!("{sign}{}.{:02}", a / 100, a % 100))
    })))
}

pub(super) fn lookup(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
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

/// `serves(region_code)`: whether this hub serves the county's province
/// (the code's first two digits are a key of `mappings/tables/
/// jurisdiction.csv`). A provincial hub lists its own province there; the
/// shipped table lists them all.
pub(super) fn f_serves(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    let id = args.ids[0];
    let code = args.next(c, Kind::Str, 0)?;
    let Some((slot, _)) = c.table_slot("jurisdiction") else {
        return c.err_call(
            id,
            "`serves` reads mappings/tables/jurisdiction.csv (the provinces this hub serves, by the first two digits of their region codes), which is missing",
        );
    };
    Some(bool_typed(Box::new(move |r, k| {
        let Val::Str(s) = code(r, k)? else {
            return Err(EvalError::internal());
        };
        let province = s.get(..2).unwrap_or("");
        Ok(Val::Bool(k.tables[slot].has(province)))
    })))
}
