//! Bank file layouts: the delimited or fixed-width text files that many
//! banks take instead of ISO 20022 — a header line, one detail line per
//! payment, a trailer line with the count and the total — in UTF-8 or GBK,
//! and the result file the bank answers with in the same style.
//!
//! A layout is a TOML file (the bank's interface specification, e.g.
//! `layouts/bank_fixed_gbk.toml`) named by the bank connector's operations
//! (`format = "layout"`, `layout = "layouts/…"`) and by the bank simulator
//! (`tongban sim bank --layout`):
//!
//! ```toml
//! style = "fixed"          # or "delimited" (with delimiter = "|")
//! encoding = "gbk"         # or "utf-8"
//! line_end = "crlf"        # or "lf"
//! payment_file = "{batch_id}.txt"
//! result_file = "{batch_id}.result.txt"
//!
//! [payments]
//! header = [{ value = "'H'" }, { value = "batch_id", width = 32 }, …]
//! detail = [{ value = "seq", width = 6 }, { value = "creditor_name", width = 30 }, …]
//! trailer = [{ value = "'T'" }, { value = "count", width = 8 }, { value = "total", width = 15 }]
//!
//! [results]
//! header = […]
//! detail = [{ value = "payment_id", width = 40 }, { value = "status", width = 4 }, …]
//! ```
//!
//! A field is a value name or a quoted literal (`'H'`); `width` counts bytes
//! in the file's encoding (a Chinese character is 2 bytes in GBK, 3 in
//! UTF-8). Numbers are right-aligned and padded with `0`, text is
//! left-aligned and padded with spaces, unless `align` and `pad` say
//! otherwise. A value that does not fit its width, holds the delimiter or a
//! line break, or has a character the encoding cannot represent is an
//! error naming the line and field: nothing is cut or replaced silently,
//! since a shortened name or account is a payment to the wrong person.

use crate::diag::{Diagnostic, SourceText};
use serde::Deserialize;
use std::collections::HashMap;
use toml::Spanned;

/// Why a layout file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// It cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a valid layout: every problem, each at its line.
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

/// Delimited or fixed-width.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// Fields separated by `delimiter`.
    Delimited,
    /// Every field `width` bytes.
    Fixed,
}

/// The text encoding of a file.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8.
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    /// GBK (GB 2312 extended), as Chinese banks' host systems use.
    #[serde(rename = "gbk")]
    Gbk,
}

/// Line ends.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LineEnd {
    /// `\r\n`.
    #[default]
    Crlf,
    /// `\n`.
    Lf,
}

/// How a field sits in its width.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Align {
    /// Padded on the right.
    Left,
    /// Padded on the left.
    Right,
}

/// One field of a line.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// A value name, or a literal in single quotes.
    pub value: Spanned<String>,
    /// Bytes (fixed: exact; delimited: at most).
    pub width: Option<usize>,
    /// Default: right for numbers, left for text.
    pub align: Option<Align>,
    /// One ASCII character; default `0` for numbers, space for text.
    pub pad: Option<String>,
}

/// Header, detail and trailer fields of one kind of file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lines {
    /// The first line (none if empty).
    #[serde(default)]
    pub header: Vec<Field>,
    /// One line per payment.
    pub detail: Vec<Field>,
    /// The last line (none if empty).
    #[serde(default)]
    pub trailer: Vec<Field>,
}

/// A bank's file layout.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// For people.
    pub description: Option<String>,
    /// Delimited or fixed.
    pub style: Style,
    /// Delimited: the separator (ASCII, e.g. `|` or `,`).
    pub delimiter: Option<String>,
    /// Text encoding.
    pub encoding: Encoding,
    /// Line ends.
    #[serde(default)]
    pub line_end: LineEnd,
    /// Name of a payment file, with `{batch_id}`.
    pub payment_file: String,
    /// Name of a result file, with `{batch_id}`.
    pub result_file: String,
    /// The payment file.
    pub payments: Lines,
    /// The result file.
    pub results: Lines,
}

/// Which file a set of lines describes, and where a value may appear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A payment file's header or trailer.
    PaymentGroup,
    /// A payment file's detail line.
    Payment,
    /// A result file's header or trailer.
    ResultGroup,
    /// A result file's detail line.
    Result,
}

impl Kind {
    /// The values a line of this kind can carry.
    pub fn values(self) -> &'static [&'static str] {
        match self {
            Kind::PaymentGroup => &[
                "batch_id",
                "period",
                "created",
                "date",
                "execution_date",
                "count",
                "total_fen",
                "total",
                "debtor_account",
                "debtor_name",
                "debtor_bank",
                "initiator",
            ],
            Kind::Payment => &[
                "seq",
                "payment_id",
                "creditor_account",
                "creditor_name",
                "bank_code",
                "amount_fen",
                "amount",
                "remittance",
            ],
            Kind::ResultGroup => &[
                "batch_id",
                "created",
                "date",
                "count",
                "total_fen",
                "total",
                "status",
                "reason_code",
            ],
            Kind::Result => &[
                "seq",
                "payment_id",
                "creditor_account",
                "amount_fen",
                "amount",
                "status",
                "reason_code",
            ],
        }
    }
}

fn numeric(name: &str) -> bool {
    matches!(
        name,
        "seq" | "count" | "total_fen" | "total" | "amount_fen" | "amount"
    )
}

fn literal(v: &str) -> Option<&str> {
    v.strip_prefix('\'')?.strip_suffix('\'')
}

impl Layout {
    /// Reads and checks a layout file; errors name the file, line and column.
    pub fn parse(src: &SourceText) -> Result<Layout, Vec<Diagnostic>> {
        let l: Layout = toml::from_str(&src.text).map_err(|e| {
            vec![src.error(
                e.span().map_or(0, |s| s.start),
                e.message().trim_end().replace('\n', " "),
            )]
        })?;
        let mut errs = Vec::new();
        if l.style == Style::Delimited {
            match l.delimiter.as_deref() {
                Some(d) if !d.is_empty() && d.is_ascii() && !d.contains(['\r', '\n']) => {}
                _ => errs.push(src.error(
                    0,
                    "a delimited layout needs delimiter: one or more ASCII characters, not a line break",
                )),
            }
        }
        for (what, pattern) in [
            ("payment_file", &l.payment_file),
            ("result_file", &l.result_file),
        ] {
            if !pattern.contains("{batch_id}") || pattern.contains(['/', '\\']) {
                errs.push(src.error(
                    0,
                    format!("{what} {pattern:?} must be a file name with {{batch_id}} in it"),
                ));
            }
        }
        if l.payment_file == l.result_file {
            errs.push(src.error(0, "payment_file and result_file must differ"));
        }
        for (section, lines, group, detail) in [
            ("payments", &l.payments, Kind::PaymentGroup, Kind::Payment),
            ("results", &l.results, Kind::ResultGroup, Kind::Result),
        ] {
            if lines.detail.is_empty() {
                errs.push(src.error(0, format!("[{section}] needs detail fields")));
            }
            let id = "payment_id";
            if !lines.detail.iter().any(|f| f.value.get_ref() == id) {
                errs.push(src.error(
                    0,
                    format!("[{section}] detail must carry {id}: it is how results are matched"),
                ));
            }
            for (part, fields, kind) in [
                ("header", &lines.header, group),
                ("detail", &lines.detail, detail),
                ("trailer", &lines.trailer, group),
            ] {
                for f in fields {
                    let v = f.value.get_ref();
                    let at = f.value.span().start;
                    let lit = literal(v);
                    if lit.is_none() && !kind.values().contains(&v.as_str()) {
                        errs.push(src.error(
                            at,
                            format!(
                                "[{section}] {part}: no value {v:?} (have: {}, or a 'literal')",
                                kind.values().join(", ")
                            ),
                        ));
                    }
                    if l.style == Style::Fixed && f.width.is_none() {
                        errs.push(src.error(
                            at,
                            format!("[{section}] {part}: {v} needs a width in a fixed layout"),
                        ));
                    }
                    if f.width == Some(0) {
                        errs.push(src.error(at, format!("[{section}] {part}: {v}: width 0")));
                    }
                    if let Some(p) = &f.pad {
                        if p.len() != 1 || !p.is_ascii() {
                            errs.push(src.error(
                                at,
                                format!("[{section}] {part}: {v}: pad must be one ASCII character"),
                            ));
                        }
                    }
                    if let (Some(lit), Some(w)) = (lit, f.width) {
                        if lit.len() > w {
                            errs.push(src.error(
                                at,
                                format!("[{section}] {part}: literal {v} is wider than {w}"),
                            ));
                        }
                    }
                }
            }
        }
        if errs.is_empty() {
            Ok(l)
        } else {
            Err(errs)
        }
    }

    /// Reads a layout file.
    pub fn load(path: &std::path::Path) -> Result<Layout, LayoutError> {
        let text = std::fs::read_to_string(path).map_err(|source| LayoutError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Layout::parse(&SourceText::new(path, text)).map_err(LayoutError::Invalid)
    }

    /// The file name for a batch.
    pub fn payment_file_name(&self, batch_id: &str) -> String {
        self.payment_file.replace("{batch_id}", batch_id)
    }

    /// The result file name for a batch.
    pub fn result_file_name(&self, batch_id: &str) -> String {
        self.result_file.replace("{batch_id}", batch_id)
    }

    /// Whether `name` looks like a payment file (`payment_file` with any
    /// batch id).
    pub fn is_payment_file(&self, name: &str) -> bool {
        matches_pattern(&self.payment_file, name)
    }

    /// Whether `name` looks like a result file.
    pub fn is_result_file(&self, name: &str) -> bool {
        matches_pattern(&self.result_file, name)
    }

    fn eol(&self) -> &'static [u8] {
        match self.line_end {
            LineEnd::Crlf => b"\r\n",
            LineEnd::Lf => b"\n",
        }
    }

    fn encode<'a>(&self, s: &'a str) -> Result<std::borrow::Cow<'a, [u8]>, String> {
        match self.encoding {
            Encoding::Utf8 => Ok(std::borrow::Cow::Borrowed(s.as_bytes())),
            Encoding::Gbk => {
                let (bytes, _, unmappable) = encoding_rs::GBK.encode(s);
                if unmappable {
                    let bad = s
                        .chars()
                        .find(|c| {
                            let mut b = [0; 4];
                            encoding_rs::GBK.encode(c.encode_utf8(&mut b)).2
                        })
                        .unwrap_or('?');
                    return Err(format!("the character {bad:?} has no GBK code"));
                }
                Ok(bytes)
            }
        }
    }

    fn decode<'a>(&self, b: &'a [u8]) -> Result<std::borrow::Cow<'a, str>, String> {
        match self.encoding {
            Encoding::Utf8 => std::str::from_utf8(b)
                .map(std::borrow::Cow::Borrowed)
                .map_err(|e| format!("not UTF-8 (byte {})", e.valid_up_to() + 1)),
            Encoding::Gbk => encoding_rs::GBK
                .decode_without_bom_handling_and_without_replacement(b)
                .ok_or_else(|| "not GBK text".to_string()),
        }
    }

    /// Appends one line: each field's value from `get` (a value name to its
    /// text), encoded, checked and padded. `line` is the line number for
    /// errors.
    pub fn write_line(
        &self,
        fields: &[Field],
        line: usize,
        get: &dyn Fn(&str) -> Option<String>,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let delim = self.delimiter.as_deref().unwrap_or("");
        for (i, f) in fields.iter().enumerate() {
            let name = f.value.get_ref().as_str();
            let text = match literal(name) {
                Some(l) => l.to_string(),
                None => get(name).ok_or_else(|| format!("line {line}, field {name}: no value"))?,
            };
            let err = |m: String| format!("line {line}, field {name}: {m}");
            if text.contains(['\r', '\n']) {
                return Err(err("holds a line break".into()));
            }
            if self.style == Style::Delimited && !delim.is_empty() && text.contains(delim) {
                return Err(err(format!("holds the delimiter {delim:?}")));
            }
            let bytes = self.encode(&text).map_err(err)?;
            if i > 0 && self.style == Style::Delimited {
                out.extend_from_slice(delim.as_bytes());
            }
            match f.width {
                Some(w) if bytes.len() > w => {
                    return Err(err(format!(
                        "{} bytes do not fit its width {w}",
                        bytes.len()
                    )))
                }
                Some(w) if self.style == Style::Fixed => {
                    let pad = self.pad(f, name);
                    let fill = w - bytes.len();
                    if self.align(f, name) == Align::Right {
                        out.extend(std::iter::repeat_n(pad, fill));
                        out.extend_from_slice(&bytes);
                    } else {
                        out.extend_from_slice(&bytes);
                        out.extend(std::iter::repeat_n(pad, fill));
                    }
                }
                _ => out.extend_from_slice(&bytes),
            }
        }
        out.extend_from_slice(self.eol());
        Ok(())
    }

    fn align(&self, f: &Field, name: &str) -> Align {
        f.align.unwrap_or(if numeric(name) {
            Align::Right
        } else {
            Align::Left
        })
    }

    fn pad(&self, f: &Field, name: &str) -> u8 {
        match &f.pad {
            Some(p) => p.as_bytes()[0],
            None if numeric(name) => b'0',
            None => b' ',
        }
    }

    /// Reads one line into its values; literals are checked.
    pub fn read_line(
        &self,
        fields: &[Field],
        line_no: usize,
        line: &[u8],
    ) -> Result<HashMap<String, String>, String> {
        // What was found is quoted in the reason: masked.
        self.read_line_as_is(fields, line_no, line)
            .map_err(|e| crate::domain::mask::text(&e))
    }

    fn read_line_as_is(
        &self,
        fields: &[Field],
        line_no: usize,
        line: &[u8],
    ) -> Result<HashMap<String, String>, String> {
        let mut out = HashMap::with_capacity(fields.len());
        let mut put = |f: &Field, raw: &[u8]| -> Result<(), String> {
            let name = f.value.get_ref().as_str();
            let text = self
                .decode(raw)
                .map_err(|e| format!("line {line_no}, field {name}: {e}"))?;
            let text = if self.style == Style::Fixed {
                let pad = self.pad(f, name) as char;
                let t = match self.align(f, name) {
                    Align::Right => text.trim_start_matches(pad),
                    Align::Left => text.trim_end_matches(pad),
                };
                if t.is_empty() && pad == '0' {
                    "0".to_string()
                } else {
                    t.to_string()
                }
            } else {
                text.into_owned()
            };
            match literal(name) {
                Some(l) if l != text => {
                    Err(format!("line {line_no}, field {name}: found {text:?}"))
                }
                Some(_) => Ok(()),
                None => {
                    out.insert(name.to_string(), text);
                    Ok(())
                }
            }
        };
        match self.style {
            Style::Fixed => {
                let want: usize = fields.iter().map(|f| f.width.unwrap_or(0)).sum();
                if line.len() != want {
                    return Err(format!(
                        "line {line_no}: {} bytes, the layout has {want}",
                        line.len()
                    ));
                }
                let mut at = 0;
                for f in fields {
                    let w = f.width.unwrap_or(0);
                    put(f, &line[at..at + w])?;
                    at += w;
                }
            }
            Style::Delimited => {
                let delim = self.delimiter.as_deref().unwrap_or("|").as_bytes();
                let parts = split(line, delim);
                if parts.len() != fields.len() {
                    return Err(format!(
                        "line {line_no}: {} fields, the layout has {}",
                        parts.len(),
                        fields.len()
                    ));
                }
                for (f, p) in fields.iter().zip(parts) {
                    put(f, p)?;
                }
            }
        }
        Ok(out)
    }

    /// Reads a whole file: header values, detail values (with their line
    /// numbers), trailer values.
    #[allow(clippy::type_complexity)]
    pub fn read_file(
        &self,
        lines: &Lines,
        bytes: &[u8],
    ) -> Result<
        (
            HashMap<String, String>,
            Vec<(usize, HashMap<String, String>)>,
            HashMap<String, String>,
        ),
        String,
    > {
        let mut all: Vec<(usize, &[u8])> = bytes
            .split(|&b| b == b'\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
            .collect();
        while all.last().is_some_and(|(_, l)| l.is_empty()) {
            all.pop();
        }
        let need = usize::from(!lines.header.is_empty()) + usize::from(!lines.trailer.is_empty());
        if all.len() < need {
            return Err(format!(
                "{} lines; a header and a trailer are needed",
                all.len()
            ));
        }
        let header = if lines.header.is_empty() {
            HashMap::new()
        } else {
            let (n, l) = all.remove(0);
            self.read_line(&lines.header, n, l)?
        };
        let trailer = if lines.trailer.is_empty() {
            HashMap::new()
        } else {
            let (n, l) = all.pop().expect("counted");
            self.read_line(&lines.trailer, n, l)?
        };
        let mut details = Vec::with_capacity(all.len());
        for (n, l) in all {
            details.push((n, self.read_line(&lines.detail, n, l)?));
        }
        Ok((header, details, trailer))
    }
}

fn split<'a>(line: &'a [u8], delim: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = memchr::memmem::find(rest, delim) {
        out.push(&rest[..i]);
        rest = &rest[i + delim.len()..];
    }
    out.push(rest);
    out
}

fn matches_pattern(pattern: &str, name: &str) -> bool {
    let (pre, post) = pattern.split_once("{batch_id}").unwrap_or((pattern, ""));
    name.len() > pre.len() + post.len()
        && name.starts_with(pre)
        && name.ends_with(post)
        && !name.starts_with('.')
}

/// The count and total a file declares in its header or trailer (the
/// trailer wins where both do): `count`, and `total_fen` or `total`.
pub fn declared(
    header: &HashMap<String, String>,
    trailer: &HashMap<String, String>,
) -> (Option<i64>, Option<i64>) {
    let get = |k: &str| trailer.get(k).or_else(|| header.get(k));
    let count = get("count").and_then(|c| c.parse().ok());
    let total = get("total_fen")
        .and_then(|t| t.parse().ok())
        .or_else(|| get("total").and_then(|t| crate::formats::pain::fen(t)));
    (count, total)
}

/// A detail's amount in fen: `amount_fen`, or `amount` in yuan.
pub fn amount_of(d: &HashMap<String, String>) -> Option<i64> {
    d.get("amount_fen")
        .and_then(|a| a.parse().ok())
        .or_else(|| d.get("amount").and_then(|a| crate::formats::pain::fen(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXED_GBK: &str = r#"
style = "fixed"
encoding = "gbk"
payment_file = "{batch_id}.txt"
result_file = "{batch_id}.result.txt"
[payments]
header = [{ value = "'H'", width = 1 }, { value = "batch_id", width = 20 }, { value = "count", width = 6 }, { value = "total", width = 12 }]
detail = [{ value = "'D'", width = 1 }, { value = "seq", width = 6 }, { value = "payment_id", width = 24 }, { value = "creditor_name", width = 10 }, { value = "amount", width = 10 }]
trailer = [{ value = "'T'", width = 1 }, { value = "count", width = 6 }, { value = "total_fen", width = 12 }]
[results]
detail = [{ value = "payment_id", width = 24 }, { value = "status", width = 4 }, { value = "reason_code", width = 4 }]
"#;

    fn layout(text: &str) -> Layout {
        Layout::parse(&SourceText::new("l.toml", text.to_string())).unwrap()
    }

    #[test]
    fn fixed_gbk_counts_bytes_and_reads_back() {
        let l = layout(FIXED_GBK);
        let mut out = Vec::new();
        let vals = |k: &str| {
            Some(
                match k {
                    "batch_id" => "B1",
                    "count" => "1",
                    "total" => "530.00",
                    "total_fen" => "53000",
                    "seq" => "1",
                    "payment_id" => "LIVING-1-2026-11",
                    "creditor_name" => "张三丰",
                    "amount" => "530.00",
                    _ => return None,
                }
                .to_string(),
            )
        };
        l.write_line(&l.payments.header, 1, &vals, &mut out)
            .unwrap();
        l.write_line(&l.payments.detail, 2, &vals, &mut out)
            .unwrap();
        l.write_line(&l.payments.trailer, 3, &vals, &mut out)
            .unwrap();
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        // 张三丰 is 6 bytes in GBK, padded to 10.
        assert_eq!(lines[1].len(), 1 + 6 + 24 + 10 + 10 + 1);
        assert!(lines[1].starts_with(b"D000001LIVING-1-2026-11"));
        assert!(lines[1].ends_with(b"0000530.00\r"));
        let (h, d, t) = l.read_file(&l.payments, &out).unwrap();
        assert_eq!(h["batch_id"], "B1");
        assert_eq!(d[0].1["creditor_name"], "张三丰");
        assert_eq!(amount_of(&d[0].1), Some(53000));
        assert_eq!(declared(&h, &t), (Some(1), Some(53000)));
    }

    #[test]
    fn values_that_do_not_fit_are_errors_not_cut() {
        let l = layout(FIXED_GBK);
        let long = |k: &str| (k == "creditor_name").then(|| "欧阳诸葛长名".to_string());
        let e = l
            .write_line(&l.payments.detail[3..4], 7, &long, &mut Vec::new())
            .unwrap_err();
        assert!(e.contains("line 7, field creditor_name: 12 bytes"), "{e}");
        let emoji = |_: &str| Some("😀".to_string());
        let e = l
            .write_line(&l.payments.detail[3..4], 8, &emoji, &mut Vec::new())
            .unwrap_err();
        assert!(e.contains("no GBK code"), "{e}");
    }

    #[test]
    fn delimited_refuses_the_delimiter_in_a_value_and_checks_field_counts() {
        let l = layout(
            r#"
style = "delimited"
delimiter = "|"
encoding = "utf-8"
line_end = "lf"
payment_file = "{batch_id}.csv"
result_file = "{batch_id}.ret"
[payments]
detail = [{ value = "payment_id" }, { value = "creditor_name" }]
[results]
detail = [{ value = "payment_id" }, { value = "status" }]
"#,
        );
        let bad = |k: &str| Some(if k == "creditor_name" { "a|b" } else { "x" }.to_string());
        assert!(l
            .write_line(&l.payments.detail, 1, &bad, &mut Vec::new())
            .unwrap_err()
            .contains("delimiter"));
        let e = l.read_file(&l.results, b"P1|ACSC|extra\n").unwrap_err();
        assert!(e.contains("line 1: 3 fields"), "{e}");
        assert!(l.is_payment_file("B-2026-11-1.csv"));
        assert!(!l.is_payment_file(".B.csv"));
    }

    #[test]
    fn a_bad_layout_is_explained_with_its_line() {
        let text = FIXED_GBK.replace("\"creditor_name\"", "\"creditor_nam\"");
        let e = Layout::parse(&SourceText::new("l.toml", text)).unwrap_err();
        let s = e[0].to_string();
        assert!(
            s.contains("l.toml:8:") && s.contains("no value \"creditor_nam\""),
            "{s}"
        );
    }

    #[test]
    fn the_shipped_layouts_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("layouts");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            Layout::load(&e.unwrap().path()).unwrap();
            n += 1;
        }
        assert!(n >= 2);
    }
}
