//! The domain rules of docs/domain.md §1, §2, §4 and §7: ID numbers,
//! certificate numbers, bank cards and masking.

use super::*;

pub(super) fn f_id_valid(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(bool_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Bool(ResidentId::parse_cached(&s).is_ok()))
    })))
}

pub(super) fn f_id_birth_date(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    date_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(date_val(parse_id(&s)?.birth_date()))
    }))
}

pub(super) fn f_id_sex(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Str(Text::Borrowed(if parse_id(&s)?.is_male() {
            "M"
        } else {
            "F"
        })))
    })))
}

pub(super) fn f_id_region(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        parse_id(&s)?;
        Ok(Val::Str(sub(s, |x| &x[..6])))
    })))
}

pub(super) fn f_id_upgrade(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        ResidentId::parse_or_upgrade(&s)
            .map(|id| Val::Str(Text::Owned(id.as_str().into())))
            .map_err(|e| EvalError::new(format!("invalid ID number {}: {e}", mask::id_number(&s))))
    })))
}

pub(super) fn f_cert_valid(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(bool_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Bool(CertificateNo::parse_cached(&s).is_ok()))
    })))
}

pub(super) fn f_cert_category(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    int_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Int(i64::from(parse_cert(&s)?.category())))
    }))
}

pub(super) fn f_cert_level(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    int_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Int(i64::from(parse_cert(&s)?.level())))
    }))
}

pub(super) fn f_cert_reissue(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    int_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Int(i64::from(parse_cert(&s)?.reissue())))
    }))
}

pub(super) fn f_cert_holder_id(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        parse_cert(&s)?;
        Ok(Val::Str(sub(s, |x| &x[..18])))
    })))
}

pub(super) fn f_luhn_valid(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(bool_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        Ok(Val::Bool(crate::domain::luhn::is_valid(&s)))
    })))
}

pub(super) fn f_mask_id(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        owned(mask::id_number(&s))
    })))
}

pub(super) fn f_mask_card(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        owned(mask::bank_card(&s))
    })))
}

pub(super) fn f_mask_name(c: &mut Compiler, args: &mut Args) -> Option<Typed> {
    Some(str_typed(str1(args.next(c, Kind::Str, 0)?, |s| {
        owned(mask::name(&s))
    })))
}
