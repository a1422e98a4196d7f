//! The operators of the mapping language, type-checked and compiled:
//! `&&` `||`, `? :`, `==` `!=` (enums against their symbols), `<` `<=` `>`
//! `>=`, arithmetic on integers with overflow checked, `in`, and indexing.

use super::*;

impl Compiler<'_> {
    pub(super) fn logic(
        &mut self,
        e: &IdedExpr,
        and: bool,
        a: &IdedExpr,
        b: &IdedExpr,
    ) -> Option<Typed> {
        let (ta, tb) = (self.expr(a), self.expr(b));
        let op = if and { "&&" } else { "||" };
        let fa = self.want(ta?, Kind::Bool, a.id, &format!("the left side of `{op}`"));
        let fb = self.want(tb?, Kind::Bool, b.id, &format!("the right side of `{op}`"));
        let (fa, fb) = (fa?, fb?);
        let _ = e;
        Some(bool_typed(if and {
            Box::new(move |r, k| Ok(Val::Bool(as_bool(fa(r, k)?)? && as_bool(fb(r, k)?)?)))
        } else {
            Box::new(move |r, k| Ok(Val::Bool(as_bool(fa(r, k)?)? || as_bool(fb(r, k)?)?)))
        }))
    }

    pub(super) fn conditional(
        &mut self,
        e: &IdedExpr,
        c: &IdedExpr,
        a: &IdedExpr,
        b: &IdedExpr,
    ) -> Option<Typed> {
        let (tc, ta, tb) = (self.expr(c), self.expr(a), self.expr(b));
        let fc = self.want(tc?, Kind::Bool, c.id, "the condition of `? :`")?;
        let (ta, tb) = (ta?, tb?);
        let Some(ty) = unify(&ta.ty, &tb.ty) else {
            return self.err(
                e.id,
                format!(
                    "the two branches of `? :` have different types: {} and {}",
                    ta.ty, tb.ty
                ),
            );
        };
        let (fa, fb) = (ta.eval, tb.eval);
        Some(Typed {
            ty,
            eval: Box::new(move |r, k| {
                if as_bool(fc(r, k)?)? {
                    fa(r, k)
                } else {
                    fb(r, k)
                }
            }),
            konst: None,
            label: None,
        })
    }

    /// Reports a string literal compared with an enum that is not one of its symbols.
    pub(super) fn check_symbol(
        &mut self,
        enum_ty: &Type,
        other: &Typed,
        id: u64,
        elem_ids: &[u64],
    ) -> bool {
        if let (Type::Enum(en), Some(Const::Str(s))) = (enum_ty.required(), &other.konst) {
            if !en.symbols.iter().any(|x| x == s) {
                self.err::<()>(
                    id,
                    format!(
                        "{s:?} is not a value of {}: it has {}",
                        enum_ty.required(),
                        en.symbols.join(", ")
                    ),
                );
                return false;
            }
        }
        if let (Type::Enum(en), Some(Const::List(items))) = (enum_ty.required(), &other.konst) {
            for (i, item) in items.iter().enumerate() {
                if let Const::Str(s) = item {
                    if !en.symbols.iter().any(|x| x == s) {
                        self.err::<()>(
                            elem_ids.get(i).copied().unwrap_or(id),
                            format!(
                                "{s:?} is not a value of {}: it has {}",
                                enum_ty.required(),
                                en.symbols.join(", ")
                            ),
                        );
                        return false;
                    }
                }
            }
        }
        true
    }

    pub(super) fn equality(
        &mut self,
        e: &IdedExpr,
        eq: bool,
        mut t: Vec<Typed>,
        ids: &[u64],
    ) -> Option<Typed> {
        let b = t.pop()?;
        let a = t.pop()?;
        let comparable = matches!(a.ty, Type::Null)
            || matches!(b.ty, Type::Null)
            || (same_kind(a.ty.required(), b.ty.required()) && Kind::of(a.ty.required()).is_some());
        if !comparable {
            return self.err(e.id, format!("cannot compare {} with {}", a.ty, b.ty));
        }
        if matches!(a.ty, Type::Null) && !b.ty.is_optional()
            || matches!(b.ty, Type::Null) && !a.ty.is_optional()
        {
            let which = if matches!(a.ty, Type::Null) { &b } else { &a };
            if !matches!(which.ty, Type::Null) {
                return self.err(
                    e.id,
                    format!(
                        "comparing a required {} with null is always false",
                        which.ty
                    ),
                );
            }
        }
        if !(self.check_symbol(&a.ty, &b, ids[1], &[]) && self.check_symbol(&b.ty, &a, ids[0], &[]))
        {
            return None;
        }
        let (fa, fb) = (a.eval, b.eval);
        Some(bool_typed(Box::new(move |r, k| {
            let (x, y) = (fa(r, k)?, fb(r, k)?);
            Ok(Val::Bool(val_eq(&x, &y) == eq))
        })))
    }

    pub(super) fn ordering(
        &mut self,
        e: &IdedExpr,
        name: &str,
        mut t: Vec<Typed>,
        ids: &[u64],
    ) -> Option<Typed> {
        use std::cmp::Ordering::*;
        let b = t.pop()?;
        let a = t.pop()?;
        let k = Kind::of(a.ty.required());
        if !matches!(k, Some(Kind::Int | Kind::Str | Kind::Date | Kind::Ts))
            || Kind::of(b.ty.required()) != k
            || matches!(a.ty.required(), Type::Enum(_))
        {
            return self.err(
                e.id,
                format!(
                    "cannot order {} and {}: use int, string, date or timestamp",
                    a.ty, b.ty
                ),
            );
        }
        let k = k?;
        let fa = self.want(a, k, ids[0], "the left side")?;
        let fb = self.want(b, k, ids[1], "the right side")?;
        let accept: fn(std::cmp::Ordering) -> bool = match name {
            "_<_" => |o| o == Less,
            "_<=_" => |o| o != Greater,
            "_>_" => |o| o == Greater,
            _ => |o| o != Less,
        };
        Some(bool_typed(Box::new(move |r, k| {
            let (x, y) = (fa(r, k)?, fb(r, k)?);
            Ok(Val::Bool(val_cmp(&x, &y).map(accept).unwrap_or(false)))
        })))
    }

    pub(super) fn arith(
        &mut self,
        e: &IdedExpr,
        name: &str,
        mut t: Vec<Typed>,
        ids: &[u64],
    ) -> Option<Typed> {
        let b = t.pop()?;
        let a = t.pop()?;
        if name == "_+_" && Kind::of(a.ty.required()) == Some(Kind::Str) {
            let fa = self.want(a, Kind::Str, ids[0], "the left side of `+`")?;
            let fb = self.want(
                b,
                Kind::Str,
                ids[1],
                "the right side of `+` (concatenating strings)",
            )?;
            return Some(str_typed(Box::new(move |r, k| {
                let (x, y) = (fa(r, k)?, fb(r, k)?);
                let (Val::Str(x), Val::Str(y)) = (x, y) else {
                    return Err(EvalError::internal());
                };
                let mut s = String::with_capacity(x.len() + y.len());
                s.push_str(&x);
                s.push_str(&y);
                Ok(Val::Str(Text::from(s)))
            })));
        }
        let sym = &name[1..name.len() - 1];
        let fa = self.want(a, Kind::Int, ids[0], &format!("the left side of `{sym}`"))?;
        let fb = self.want(b, Kind::Int, ids[1], &format!("the right side of `{sym}`"))?;
        let f: fn(i64, i64) -> Result<i64, EvalError> = match name {
            "_+_" => |x, y| x.checked_add(y).ok_or(EvalError::msg("integer overflow")),
            "_-_" => |x, y| x.checked_sub(y).ok_or(EvalError::msg("integer overflow")),
            "_*_" => |x, y| x.checked_mul(y).ok_or(EvalError::msg("integer overflow")),
            "_/_" => |x, y| x.checked_div(y).ok_or(EvalError::msg("division by zero")),
            _ => |x, y| x.checked_rem(y).ok_or(EvalError::msg("division by zero")),
        };
        let _ = e;
        Some(Typed {
            ty: Type::Int { long: true },
            eval: Box::new(move |r, k| Ok(Val::Int(f(as_int(fa(r, k)?)?, as_int(fb(r, k)?)?)?))),
            konst: None,
            label: None,
        })
    }

    pub(super) fn membership(
        &mut self,
        e: &IdedExpr,
        mut t: Vec<Typed>,
        ids: &[u64],
        elem_ids: &[u64],
    ) -> Option<Typed> {
        let list = t.pop()?;
        let x = t.pop()?;
        let elem = match list.ty.required() {
            Type::Array(el) => el.as_ref().clone(),
            Type::Map(_) => Type::Str,
            other => {
                return self.err(
                    ids[1],
                    format!("the right side of `in` must be a list, found {other}"),
                )
            }
        };
        let Some(k) = Kind::of(x.ty.required()) else {
            return self.err(ids[0], format!("`in` tests scalar values, found {}", x.ty));
        };
        if Kind::of(elem.required()) != Some(k) {
            return self.err(
                e.id,
                format!("cannot look for a {} in a list of {}", x.ty, elem),
            );
        }
        if !self.check_symbol(&x.ty, &list, ids[1], elem_ids) {
            return None;
        }
        let fx = self.want(x, k, ids[0], "the left side of `in`")?;
        // A list of string literals becomes a fixed set, tested without allocation.
        if let Some(Const::List(items)) = &list.konst {
            let strs: Vec<String> = items
                .iter()
                .filter_map(|c| {
                    if let Const::Str(s) = c {
                        Some(s.clone())
                    } else {
                        None
                    }
                })
                .collect();
            if strs.len() == items.len() {
                return Some(bool_typed(Box::new(move |r, k| {
                    Ok(Val::Bool(match fx(r, k)? {
                        Val::Str(s) => strs.iter().any(|x| *x == *s),
                        _ => false,
                    }))
                })));
            }
        }
        let fl = list.present();
        Some(bool_typed(Box::new(move |r, k| {
            let needle = fx(r, k)?;
            Ok(Val::Bool(contains(&fl(r, k)?, &needle)))
        })))
    }

    pub(super) fn index(&mut self, e: &IdedExpr, mut t: Vec<Typed>, ids: &[u64]) -> Option<Typed> {
        let i = t.pop()?;
        let c = t.pop()?;
        match c.ty.required().clone() {
            Type::Array(el) => {
                let fi = self.want(i, Kind::Int, ids[1], "a list index")?;
                let fc = c.present();
                Some(Typed {
                    ty: *el,
                    eval: Box::new(move |r, k| {
                        let n = as_int(fi(r, k)?)?;
                        let item = match fc(r, k)? {
                            Val::Arr(xs) => usize::try_from(n)
                                .ok()
                                .and_then(|n| xs.get(n))
                                .map(Val::from_datum),
                            Val::List(xs) => {
                                usize::try_from(n).ok().and_then(|n| xs.get(n)).cloned()
                            }
                            _ => return Err(EvalError::internal()),
                        };
                        item.ok_or_else(|| {
                            EvalError::new(format!("list index {n} is out of range"))
                        })
                    }),
                    konst: None,
                    label: None,
                })
            }
            Type::Map(el) => {
                let fi = self.want(i, Kind::Str, ids[1], "a map key")?;
                let fc = c.present();
                Some(Typed {
                    ty: *el,
                    eval: Box::new(move |r, k| {
                        let key = crate::mapping::value::as_str(fi(r, k)?)?;
                        match fc(r, k)? {
                            Val::Map(m) => m
                                .iter()
                                .find(|(x, _)| *x == *key)
                                .map(|(_, v)| Val::from_datum(v))
                                .ok_or_else(|| EvalError::new(format!("map has no key {key:?}"))),
                            _ => Err(EvalError::internal()),
                        }
                    }),
                    konst: None,
                    label: None,
                })
            }
            other => self.err(e.id, format!("cannot index a {other}")),
        }
    }
}
