//! Unit tests of the compiler and the functions, on a small schema.

use super::compile::{Compiler, Const};
use super::table::Table;
use super::*;
use crate::schema::{decode_json_value, Registry, Type};
use serde_json::json;
use std::collections::BTreeMap;

const SCHEMA: &str = r#"{"type":"record","name":"E","namespace":"t","fields":[
  {"name":"kind","type":{"type":"enum","name":"K","symbols":["ISSUED","CANCELLED"]}},
  {"name":"id","type":"string"},
  {"name":"name","type":"string"},
  {"name":"cert","type":"string"},
  {"name":"on","type":{"type":"int","logicalType":"date"}},
  {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"fen","type":"long"},
  {"name":"tags","type":{"type":"array","items":"string"},"default":[]},
  {"name":"note","type":["null","string"],"default":null},
  {"name":"app","type":["null",{"type":"record","name":"A","fields":[
      {"name":"phone","type":["null","string"],"default":null},
      {"name":"bank","type":["null",{"type":"record","name":"B","fields":[{"name":"no","type":"string"}]}],"default":null}
  ]}],"default":null}
]}"#;

fn setup() -> (Arc<RecordType>, BTreeMap<String, Arc<Table>>) {
    let mut reg = Registry::default();
    let s = reg.add(SCHEMA, "e.avsc".into()).unwrap();
    let mut tables = BTreeMap::new();
    tables.insert(
        "cat".to_string(),
        Arc::new(
            Table::parse("cat", "code,name,en\n4,肢体,physical\n".as_bytes())
                .unwrap()
                .0,
        ),
    );
    // The provinces a hub serves.
    tables.insert(
        "jurisdiction".to_string(),
        Arc::new(
            Table::parse(
                "jurisdiction",
                "province,name\n14,山西省\n37,山东省\n".as_bytes(),
            )
            .unwrap()
            .0,
        ),
    );
    (s.record.clone(), tables)
}

fn record(rt: &Arc<RecordType>, v: serde_json::Value) -> Datum {
    decode_json_value(&v, &Type::Record(rt.clone()), true).unwrap()
}

fn base() -> serde_json::Value {
    json!({"kind":"ISSUED","id":"110105199003070017","name":" 张三 ","cert":"11010519900307001741",
           "on":"2026-01-31","at":"2026-11-02T23:30:00Z","fen":41000,"tags":["a","b"]})
}

/// Evaluates `src` on the record `v`; the value as JSON-ish text, or the error.
fn eval(src: &str, v: serde_json::Value) -> Result<String, String> {
    let (rt, tables) = setup();
    let mut c = Compiler::new("e", rt.clone(), &tables);
    let t = c.compile(src).ok_or_else(|| {
        format!(
            "compile: {}",
            c.errors
                .iter()
                .map(|e| format!("@{} {}", e.offset, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let consts = std::mem::take(&mut c.consts);
    let d = record(&rt, v);
    let Datum::Record(fs) = &d else {
        unreachable!()
    };
    let v = (t.eval)(fs, &consts).map_err(|e| format!("eval: {e}"))?;
    Ok(match v {
        Val::Null => "null".into(),
        Val::Bool(b) => b.to_string(),
        Val::Int(i) => i.to_string(),
        Val::Str(s) => format!("{:?}", &*s),
        Val::Date(d) => crate::schema::date_from_days(d).unwrap().to_string(),
        Val::Ts(t) => t.to_string(),
        other => format!("{other:?}"),
    })
}

fn ok(src: &str) -> String {
    eval(src, base()).unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn compile_err(src: &str) -> (usize, String) {
    let (rt, tables) = setup();
    let mut c = Compiler::new("e", rt, &tables);
    assert!(c.compile(src).is_none(), "{src} compiled");
    let e = c.errors.first().cloned().unwrap();
    (e.offset, e.message)
}

#[test]
fn strings() {
    assert_eq!(ok("e.name.trim()"), "\"张三\"");
    assert_eq!(ok("upper('abc') + lower('DEF')"), "\"ABCdef\"");
    assert_eq!(ok("size(e.name)"), "4");
    assert_eq!(ok("e.cert.substring(18, 20)"), "\"41\"");
    assert_eq!(ok("e.cert.substring(18)"), "\"41\"");
    assert_eq!(ok("e.name.trim().substring(1, 2)"), "\"三\"");
    assert_eq!(
        ok("pad_left('7', 3, '0') + pad_right('7', 3, '-')"),
        "\"0077--\""
    );
    assert_eq!(ok("replace('2026-11', '-', '')"), "\"202611\"");
    assert_eq!(ok("concat('a', e.id.substring(0, 6), 'b')"), "\"a110105b\"");
    assert_eq!(ok("e.id.matches('^[0-9]{17}[0-9X]$')"), "true");
    assert_eq!(
        ok("e.id.startsWith('1101') && e.id.endsWith('17') && e.id.contains('1990')"),
        "true"
    );
    assert_eq!(ok("split('CARE-1-2', '-')[1]"), "\"1\"");
    assert!(eval("e.cert.substring(5, 30)", base())
        .unwrap_err()
        .contains("out of range"));
}

#[test]
fn integers_are_checked_and_never_float() {
    assert_eq!(ok("e.fen * 3 / 2 - 1 + 7 % 4"), "61502");
    assert_eq!(ok("-e.fen"), "-41000");
    assert!(eval("e.fen / 0", base())
        .unwrap_err()
        .contains("division by zero"));
    assert!(eval("9223372036854775807 + e.fen", base())
        .unwrap_err()
        .contains("overflow"));
    assert!(compile_err("e.fen * 1.5").1.contains("floating-point"));
    assert_eq!(ok("yuan(e.fen)"), "\"410.00\"");
    assert_eq!(ok("yuan(-5)"), "\"-0.05\"");
    assert_eq!(ok("int('42') + 1"), "43");
    assert!(eval("int(e.name)", base())
        .unwrap_err()
        .contains("not an integer"));
    assert_eq!(ok("string(e.fen)"), "\"41000\"");
}

#[test]
fn logic_comparison_and_conditionals() {
    assert_eq!(ok("e.fen > 100 && e.fen <= 41000 || false"), "true");
    assert_eq!(ok("!(e.kind == 'CANCELLED') ? 'live' : 'gone'"), "\"live\"");
    assert_eq!(ok("e.kind in ['ISSUED', 'CANCELLED']"), "true");
    assert_eq!(ok("'b' in e.tags && !('z' in e.tags)"), "true");
    assert_eq!(ok("size(e.tags)"), "2");
    assert_eq!(ok("e.on < date('2026-02-01')"), "true");
    assert_eq!(ok("'abc' < 'abd'"), "true");
}

#[test]
fn enum_literals_are_checked_against_the_schema() {
    let (_, m) = compile_err("e.kind == 'ISUED'");
    assert!(
        m.contains("\"ISUED\" is not a value of enum K") && m.contains("ISSUED, CANCELLED"),
        "{m}"
    );
    let (_, m) = compile_err("e.kind in ['ISSUED', 'FROZEN']");
    assert!(m.contains("\"FROZEN\""), "{m}");
}

#[test]
fn dates() {
    assert_eq!(ok("add_months(e.on, 1)"), "2026-02-28");
    assert_eq!(ok("add_years(date('2024-02-29'), 1)"), "2025-02-28");
    assert_eq!(ok("add_days(e.on, 1)"), "2026-02-01");
    assert_eq!(ok("add_months(e.on, -2)"), "2025-11-30");
    assert_eq!(ok("first_of_month(e.on)"), "2026-01-01");
    assert_eq!(ok("format_date(e.on, '%Y%m%d')"), "\"20260131\"");
    assert_eq!(ok("period(e.on)"), "\"2026-01\"");
    assert_eq!(ok("parse_date('31/01/2026', '%d/%m/%Y') == e.on"), "true");
    assert_eq!(
        ok("date(e.at)"),
        "2026-11-03",
        "timestamps are read in China time"
    );
    assert_eq!(ok("age_at(date('1990-03-07'), date('2026-03-06'))"), "35");
    assert_eq!(ok("age_at(date('1990-03-07'), date('2026-03-07'))"), "36");
    assert_eq!(ok("year(e.on) * 100 + month(e.on) + day(e.on)"), "202632");
    assert!(compile_err("date('2026-02-30')").1.contains("not a date"));
    assert!(compile_err("format_date(e.on, '%Q')")
        .1
        .contains("invalid date format"));
}

#[test]
fn domain_functions() {
    assert_eq!(ok("id_valid(e.id)"), "true");
    assert_eq!(ok("id_valid('110105199003070011')"), "false");
    assert_eq!(ok("id_birth_date(e.id)"), "1990-03-07");
    assert_eq!(ok("id_sex(e.id) + id_sex('110105199003070025')"), "\"MF\"");
    assert_eq!(ok("id_region(e.id)"), "\"110105\"");
    assert_eq!(
        ok("id_upgrade('110105491231002')"),
        "\"11010519491231002X\""
    );
    assert_eq!(
        ok("id_upgrade('44011320141005001x')"),
        "\"44011320141005001X\""
    );
    assert_eq!(ok("cert_category(e.cert) * 10 + cert_level(e.cert)"), "41");
    assert_eq!(ok("cert_reissue('11010519900307001741B2')"), "2");
    assert_eq!(ok("cert_holder_id(e.cert) == e.id"), "true");
    assert_eq!(ok("cert_valid('11010519900307001780')"), "false");
    assert_eq!(
        ok("luhn_valid('6217000000000000004') && !luhn_valid('6217000000000000001')"),
        "true"
    );
    assert_eq!(ok("mask_id(e.id) + ' ' + mask_card('6217000000000000004') + ' ' + mask_name(e.name.trim())"),
        "\"110105********0017 621700*********0004 张*\"");
    let e = eval("cert_level('11010519900307001141')", base()).unwrap_err();
    assert!(
        e.contains("110105**********1141") && !e.contains("11010519900307001141"),
        "errors mask the number: {e}"
    );
}

#[test]
fn serves_reads_the_provinces_of_the_jurisdiction_table() {
    assert_eq!(ok("serves('140105')"), "true");
    assert_eq!(ok("serves('370302')"), "true");
    assert_eq!(ok("serves(e.id)"), "false", "110105: Beijing");
    assert_eq!(ok("serves('1')"), "false");
    let (rt, mut tables) = setup();
    tables.remove("jurisdiction");
    let mut c = Compiler::new("e", rt, &tables);
    assert!(c.compile("serves('140105')").is_none());
    assert!(
        c.errors[0]
            .message
            .contains("mappings/tables/jurisdiction.csv"),
        "{:?}",
        c.errors
    );
}

#[test]
fn lookups() {
    assert_eq!(ok("lookup('cat', cert_category(e.cert))"), "\"肢体\"");
    assert_eq!(ok("lookup('cat.en', '4')"), "\"physical\"");
    assert_eq!(ok("lookup('cat', '9', 'unknown')"), "\"unknown\"");
    assert!(eval("lookup('cat', '9')", base())
        .unwrap_err()
        .contains("key \"9\" is not in table \"cat\""));
    assert!(compile_err("lookup('dog', '1')")
        .1
        .contains("no table \"dog\""));
    assert!(compile_err("lookup('cat.fr', '1')")
        .1
        .contains("no column \"fr\""));
    assert!(compile_err("lookup(e.name, '1')")
        .1
        .contains("string literal"));
}

#[test]
fn optional_values() {
    assert_eq!(ok("has(e.note)"), "false");
    assert_eq!(ok("e.note == null"), "true");
    assert_eq!(ok("coalesce(e.note, 'none')"), "\"none\"");
    assert_eq!(ok("has(e.app) ? e.app.phone : null"), "null");
    // A missing optional value that feeds a function names the field.
    let e = eval("e.app.bank.no.trim()", base()).unwrap_err();
    assert_eq!(e, "eval: `e.app.bank.no` is missing");
    let mut v = base();
    v["app"] = json!({"bank": {"no": " 62 "}});
    assert_eq!(eval("e.app.bank.no.trim()", v.clone()).unwrap(), "\"62\"");
    assert_eq!(
        eval("has(e.app.bank) && !has(e.app.phone)", v).unwrap(),
        "true"
    );
    assert!(compile_err("e.fen == null").1.contains("always false"));
}

#[test]
fn compile_errors_point_at_the_problem() {
    let (off, m) = compile_err("e.nmae.trim()");
    assert_eq!(off, 2);
    assert!(m.contains("did you mean `name`"), "{m}");
    let (off, m) = compile_err("trim(e.name) + foo(1)");
    assert_eq!(off, 15, "{m}");
    assert!(m.contains("unknown function `foo`"));
    let (off, m) = compile_err("e.name +");
    assert!(m.starts_with("syntax error"), "{m}");
    assert_eq!(off, 8);
    assert!(compile_err("e.fen + 'x'").1.contains("must be a int"));
    assert!(compile_err("event.id")
        .1
        .contains("the source record is called `e`"));
    assert!(compile_err("e.tags.exists(t, t == 'a')")
        .1
        .contains("not supported"));
    assert!(compile_err("e.id.size(1)")
        .1
        .contains("takes other arguments"));
    assert!(compile_err("e.fen ? 1 : 2").1.contains("must be a bool"));
    assert!(compile_err("true ? 1 : 'x'").1.contains("different types"));
}

#[test]
fn constants_fold_lists_of_literals() {
    let (rt, tables) = setup();
    let mut c = Compiler::new("e", rt, &tables);
    let t = c.compile("['A', 'B']").unwrap();
    assert!(matches!(t.konst, Some(Const::List(ref xs)) if xs.len() == 2));
}

fn program(fields: &[(&str, &str)], when: Option<&str>) -> Result<Program, Vec<PartError>> {
    let (rt, tables) = setup();
    let mut reg = Registry::default();
    let target = reg
        .add(
            r#"{"type":"record","name":"T","namespace":"t","fields":[
            {"name":"id","type":"string","format":"resident-id"},
            {"name":"n","type":"int"},
            {"name":"k","type":{"type":"enum","name":"K2","symbols":["LOAD","UNLOAD"]}},
            {"name":"sub","type":{"type":"record","name":"S","fields":[{"name":"x","type":"string"},{"name":"y","type":"string","default":"d"}]}},
            {"name":"opt","type":["null","string"],"default":null}]}"#,
            "t.avsc".into(),
        )
        .unwrap();
    Program::compile(
        &MappingSource {
            root_name: "e",
            source: rt,
            target: target.record.clone(),
            when,
            key: "e.id",
            idempotency: None,
            fields: fields.to_vec(),
        },
        &tables,
    )
}

#[test]
fn programs_build_nested_records_and_check_formats_in_field_order() {
    let p = program(
        &[
            ("id", "e.id"),
            ("n", "e.fen"),
            ("k", "'LOAD'"),
            ("sub.x", "e.name.trim()"),
        ],
        Some("e.kind == 'ISSUED'"),
    )
    .unwrap();
    let (rt, _) = setup();
    match p.run(&record(&rt, base())).unwrap() {
        Outcome::Mapped { key, record, .. } => {
            assert_eq!(key, "110105199003070017");
            assert_eq!(
                record,
                Datum::Record(vec![
                    Datum::Str("110105199003070017".into()),
                    Datum::Int(41000),
                    Datum::Str("LOAD".into()),
                    Datum::Record(vec![Datum::Str("张三".into()), Datum::Str("d".into())]),
                    Datum::Null,
                ])
            );
        }
        o => panic!("{o:?}"),
    }
    let mut v = base();
    v["kind"] = json!("CANCELLED");
    assert_eq!(p.run(&record(&rt, v)).unwrap(), Outcome::Filtered);
    let mut v = base();
    v["id"] = json!("110105199003070011");
    let e = p.run(&record(&rt, v)).unwrap_err();
    assert_eq!(e.part, "id");
    assert!(e.message.contains("check character"));
    let mut v = base();
    v["fen"] = json!(5_000_000_000i64);
    assert_eq!(p.run(&record(&rt, v)).unwrap_err().part, "n");
    // Enum values not known at compile time are checked at run time.
    let p = program(
        &[
            ("id", "e.id"),
            ("n", "1"),
            ("k", "e.name.trim()"),
            ("sub.x", "'x'"),
        ],
        None,
    )
    .unwrap();
    let e = p.run(&record(&rt, base())).unwrap_err();
    assert_eq!(
        (
            e.part.as_str(),
            e.message.contains("is not a value of enum K2")
        ),
        ("k", true)
    );
}

#[test]
fn program_errors_cover_every_part() {
    let errs = match program(
        &[
            ("id", "e.id"),
            ("k", "'LAOD'"),
            ("sub.z", "'x'"),
            ("n", "e.name"),
        ],
        Some("e.fen"),
    ) {
        Err(e) => e,
        Ok(_) => panic!("compiled"),
    };
    let msgs: Vec<String> = errs
        .iter()
        .map(|e| format!("{}: {}", e.part, e.message))
        .collect();
    let all = msgs.join("\n");
    assert!(all.contains("when: `when` must be a bool"), "{all}");
    assert!(
        all.contains("k: \"LAOD\" is not a value of enum K2"),
        "{all}"
    );
    assert!(
        all.contains("sub.x: target field `sub.x` (string) is required"),
        "{all}"
    );
    assert!(all.contains("sub.z: `sub` has no field `z`"), "{all}");
    assert!(
        all.contains("n: `n` is int in the target schema, but the expression gives string"),
        "{all}"
    );
}
