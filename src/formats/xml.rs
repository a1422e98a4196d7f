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

/// An XML document that could not be read. Shown masked: the parser's
/// message quotes what it found, which may hold an ID number or a card.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", crate::domain::mask::text(message))]
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

/// A JSON value with its object fields in document order (the order the
/// schema gave them), for writing XML.
enum Node {
    Null,
    Scalar(String),
    List(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Scalar(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some(n) = a.next_element()? {
                    out.push(n);
                }
                Ok(Node::List(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Node>()? {
                    out.push((k, v));
                }
                Ok(Node::Object(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Writes a JSON record as an XML document: `<root xmlns="namespace">`,
/// one element per field in the record's order, nested records as nested
/// elements, arrays as repeated elements, and absent optional values
/// omitted. The reader above reads it back to the same record.
pub fn json_to_document(
    json: &[u8],
    root: &str,
    namespace: Option<&str>,
) -> Result<Vec<u8>, XmlError> {
    let node: Node = serde_json::from_slice(json).map_err(|e| XmlError {
        message: format!("the record is not JSON: {e}"),
    })?;
    let mut out = Vec::with_capacity(json.len() * 2 + 64);
    out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    out.push(b'<');
    out.extend_from_slice(root.as_bytes());
    if let Some(ns) = namespace {
        out.extend_from_slice(b" xmlns=\"");
        out.extend_from_slice(quick_xml::escape::escape(ns).as_bytes());
        out.push(b'"');
    }
    match &node {
        Node::Object(fields) => {
            out.push(b'>');
            for (k, v) in fields {
                write_element(&mut out, k, v);
            }
        }
        _ => {
            return Err(XmlError {
                message: "the record is not a JSON object".into(),
            })
        }
    }
    out.extend_from_slice(b"</");
    out.extend_from_slice(root.as_bytes());
    out.push(b'>');
    Ok(out)
}

fn write_element(out: &mut Vec<u8>, name: &str, v: &Node) {
    match v {
        Node::Null => {}
        Node::List(items) => {
            for it in items {
                write_element(out, name, it);
            }
        }
        Node::Scalar(s) => {
            out.push(b'<');
            out.extend_from_slice(name.as_bytes());
            out.push(b'>');
            out.extend_from_slice(quick_xml::escape::escape(s.as_str()).as_bytes());
            out.extend_from_slice(b"</");
            out.extend_from_slice(name.as_bytes());
            out.push(b'>');
        }
        Node::Object(fields) => {
            out.push(b'<');
            out.extend_from_slice(name.as_bytes());
            out.push(b'>');
            for (k, v) in fields {
                write_element(out, k, v);
            }
            out.extend_from_slice(b"</");
            out.extend_from_slice(name.as_bytes());
            out.push(b'>');
        }
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

    #[test]
    fn records_written_as_xml_read_back_the_same() {
        let mut reg = Registry::default();
        reg.add(
            r#"{"type":"record","name":"Load","fields":[{"name":"name","type":"string"},{"name":"amount_fen","type":"long"},
               {"name":"note","type":["null","string"],"default":null},
               {"name":"bank","type":{"type":"record","name":"Bank","fields":[{"name":"account","type":"string"}]}},
               {"name":"tags","type":{"type":"array","items":"string"},"default":[]}]}"#,
            "l.avsc".into(),
        )
        .unwrap();
        let ty = Type::Record(reg.get("Load").unwrap().record.clone());
        let json = r#"{"name":"欧阳 <娜娜> & 子","amount_fen":12345,"note":null,"bank":{"account":"6222"},"tags":["一","二"]}"#;
        let doc = json_to_document(json.as_bytes(), "CardLoad", Some("urn:sscard:v2")).unwrap();
        let text = String::from_utf8(doc).unwrap();
        assert!(
            text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><CardLoad xmlns=\"urn:sscard:v2\"><name>欧阳 &lt;娜娜&gt; &amp; 子</name><amount_fen>12345</amount_fen><bank><account>6222</account></bank><tags>一</tags><tags>二</tags></CardLoad>"),
            "{text}"
        );
        let back = document_to_json(&text, &ty).unwrap();
        // The absent optional `note` stays absent, which the schema decoder
        // reads as null.
        let mut want: serde_json::Value = serde_json::from_str(json).unwrap();
        want.as_object_mut().unwrap().remove("note");
        assert_eq!(back, want);
        assert!(json_to_document(b"[1]", "R", None).is_err());
        assert!(json_to_document(b"{", "R", None)
            .unwrap_err()
            .message
            .contains("not JSON"));
    }
}
