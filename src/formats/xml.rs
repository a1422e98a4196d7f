//! XML records: one document per record, elements named as the schema's
//! fields (namespace prefixes ignored), repeated elements for arrays, an
//! empty element or `xsi:nil="true"` for an absent optional value.
//!
//! The reader turns a document into the JSON shape the schema decoder reads,
//! guided by the record type, so XML and JSON records share one decoder.

use crate::schema::Type;
use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::{Map, Value};

/// One element of a parsed document.
#[derive(Debug, Default)]
struct Element {
    name: String,
    text: String,
    nil: bool,
    children: Vec<Element>,
}

/// An XML document that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct XmlError {
    /// What is wrong.
    pub message: String,
}

/// Splits an input of several XML documents at their `<?xml` declarations
/// (an input without declarations is one document). Returns each
/// document's text and its 1-based starting line.
pub fn split_documents(input: &str) -> Vec<(usize, &str)> {
    let mut starts: Vec<usize> = input.match_indices("<?xml").map(|(i, _)| i).collect();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let mut out = Vec::new();
    for (n, &s) in starts.iter().enumerate() {
        let e = starts.get(n + 1).copied().unwrap_or(input.len());
        let doc = &input[s..e];
        if doc.trim().is_empty() {
            continue;
        }
        let lead = doc.len() - doc.trim_start().len();
        let line = input[..s + lead].matches('\n').count() + 1;
        out.push((line, doc));
    }
    out
}

/// Reads one document as a record of type `ty`, in the JSON shape.
pub fn document_to_json(doc: &str, ty: &Type) -> Result<Value, XmlError> {
    let root = parse(doc)?;
    Ok(convert(&root, ty))
}

fn parse(doc: &str) -> Result<Element, XmlError> {
    let mut r = Reader::from_str(doc);
    r.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let err = |r: &Reader<&[u8]>, m: String| XmlError {
        message: format!(
            "malformed XML at line {}: {m}",
            doc[..(r.buffer_position() as usize).min(doc.len())]
                .matches('\n')
                .count()
                + 1
        ),
    };
    loop {
        let ev = r.read_event().map_err(|e| err(&r, e.to_string()))?;
        match ev {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(err(
                    &r,
                    "more than one root element (separate records with <?xml declarations)".into(),
                ));
            }
            Event::Start(e) => {
                stack.push(open(&e));
            }
            Event::Empty(e) => {
                let el = open(&e);
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| err(&r, "unexpected end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let s = t.decode().map_err(|e| err(&r, e.to_string()))?;
                    top.text.push_str(
                        &quick_xml::escape::unescape(&s).map_err(|e| err(&r, e.to_string()))?,
                    );
                } else if !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(err(&r, "text outside the root element".into()));
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(g) => {
                if let Some(top) = stack.last_mut() {
                    let name = String::from_utf8_lossy(&g).to_string();
                    let ch = match name.as_str() {
                        "lt" => "<".to_string(),
                        "gt" => ">".to_string(),
                        "amp" => "&".to_string(),
                        "apos" => "'".to_string(),
                        "quot" => "\"".to_string(),
                        n => match g.resolve_char_ref() {
                            Ok(Some(c)) => c.to_string(),
                            _ => return Err(err(&r, format!("unknown entity &{n};"))),
                        },
                    };
                    top.text.push_str(&ch);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError {
            message: format!(
                "malformed XML: element <{}> is not closed",
                stack.last().map(|e| e.name.as_str()).unwrap_or("")
            ),
        });
    }
    root.ok_or_else(|| XmlError {
        message: "no root element".into(),
    })
}

fn open(e: &quick_xml::events::BytesStart<'_>) -> Element {
    let name = String::from_utf8_lossy(e.local_name().as_ref()).to_string();
    let nil = e.attributes().flatten().any(|a| {
        a.key.local_name().as_ref() == b"nil" && matches!(a.value.as_ref(), b"true" | b"1")
    });
    Element {
        name,
        nil,
        ..Default::default()
    }
}

fn convert(el: &Element, ty: &Type) -> Value {
    if el.nil || (ty.is_optional() && el.children.is_empty() && el.text.trim().is_empty()) {
        return Value::Null;
    }
    match ty.required() {
        Type::Record(r) => {
            let mut m = Map::new();
            for child in &el.children {
                let Some(f) = r.fields.iter().find(|f| f.name == child.name) else {
                    continue;
                };
                match f.ty.required() {
                    Type::Array(item) => {
                        let v = convert(child, item);
                        match m
                            .entry(f.name.clone())
                            .or_insert_with(|| Value::Array(vec![]))
                        {
                            Value::Array(a) => a.push(v),
                            other => *other = Value::Array(vec![v]),
                        }
                    }
                    _ => {
                        m.insert(f.name.clone(), convert(child, &f.ty));
                    }
                }
            }
            Value::Object(m)
        }
        Type::Array(item) => Value::Array(el.children.iter().map(|c| convert(c, item)).collect()),
        Type::Int { .. } => {
            let t = el.text.trim();
            t.parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(t.to_string()))
        }
        Type::Bool => match el.text.trim() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            other => Value::String(other.to_string()),
        },
        Type::Str => Value::String(el.text.clone()),
        _ => Value::String(el.text.trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Registry;

    #[test]
    fn documents_with_namespaces_and_chinese_text() {
        let mut reg = Registry::default();
        reg.add(
            r#"{"type":"record","name":"R","fields":[{"name":"name","type":"string"},{"name":"n","type":"int"},
               {"name":"ok","type":"boolean"},{"name":"note","type":["null","string"],"default":null},
               {"name":"tags","type":{"type":"array","items":"string"},"default":[]}]}"#,
            "r.avsc".into(),
        )
        .unwrap();
        let ty = Type::Record(reg.get("R").unwrap().record.clone());
        let input = "<?xml version=\"1.0\"?>\n<c:R xmlns:c=\"urn:x\"><c:name>张 &amp; 三</c:name><c:n>7</c:n><c:ok>1</c:ok><c:note/><c:tags>a</c:tags><c:tags>b</c:tags></c:R>\n<?xml version=\"1.0\"?>\n<R><name>李四</name><n>x</n></R>\n";
        let docs = split_documents(input);
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[0].0, docs[1].0), (1, 3));
        let v = document_to_json(docs[0].1, &ty).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name":"张 & 三","n":7,"ok":true,"note":null,"tags":["a","b"]})
        );
        let v = document_to_json(docs[1].1, &ty).unwrap();
        assert_eq!(v["n"], "x");
        assert!(document_to_json("<R><name>x</R>", &ty).is_err());
    }
}
