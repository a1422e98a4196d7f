//! Loading and validating the whole configuration of a hub: `tongban.toml`,
//! `schemas/*.avsc`, `mappings/tables/*.csv`, `connectors/*.toml` and
//! `mappings/*.toml`.
//!
//! Everything is checked before anything runs: unknown keys, references
//! between files, and every expression against the schemas. All problems of
//! a run are collected into [`Diagnostics`] with file, line and column.
//!
//! Layer 4: uses the schemas, the mapping compiler, the formats (bank
//! layouts), diagnostics and the store's URL check; it imports no
//! connector, hub or CLI code.

pub mod connector;
pub mod feed;
pub mod hub;
pub mod secret;

pub use crate::diag::{Diagnostic, Diagnostics, Severity, SourceText};
pub use connector::{BodyFormat, ConnectorKind, ConnectorSpec, Direction};
pub use feed::{Expect, Mapping, OpRef, Rejection, Stage, TestCase, TestResult};
pub use hub::HubConfig;
pub use secret::Secret;

use crate::mapping::{MappingSource, Part, Program, Table};
use crate::schema::{self, Registry, Type};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One connector.
pub struct Connector {
    /// Name (file stem).
    pub name: String,
    /// Its file.
    pub file: PathBuf,
    /// Its settings.
    pub spec: ConnectorSpec,
    /// The bank file layouts its operations name, by operation.
    pub layouts: BTreeMap<String, Arc<crate::formats::layout::Layout>>,
}

/// A whole, validated configuration.
pub struct Config {
    /// The configuration directory.
    pub dir: PathBuf,
    /// `tongban.toml`.
    pub hub: HubConfig,
    /// Record schemas.
    pub schemas: Registry,
    /// Connectors by name.
    pub connectors: BTreeMap<String, Connector>,
    /// Code tables by name.
    pub tables: BTreeMap<String, Arc<Table>>,
    /// Feeds by name.
    pub mappings: BTreeMap<String, Mapping>,
}

impl Config {
    /// Loads and checks everything under `dir`. Returns the configuration
    /// when there is no error, and every diagnostic (errors and warnings).
    pub fn load(dir: &Path) -> (Option<Config>, Diagnostics) {
        let mut l = Loader {
            dir: dir.to_path_buf(),
            diags: Diagnostics::default(),
            broken: Vec::new(),
        };
        let hub = l.hub();
        let schemas = l.schemas();
        let tables = l.tables();
        let connectors = l.connectors(&schemas);
        let mappings = l.mappings(&schemas, &connectors, &tables);
        let mut diags = l.diags;
        diags.sort();
        if diags.errors() > 0 {
            return (None, diags);
        }
        let cfg = Config {
            dir: dir.to_path_buf(),
            hub: hub.unwrap_or_default(),
            schemas,
            connectors,
            tables,
            mappings,
        };
        (Some(cfg), diags)
    }

    /// Looks up an operation.
    pub fn operation(&self, r: &OpRef) -> Option<&connector::Operation> {
        self.connectors
            .get(&r.connector)?
            .spec
            .operations
            .get(&r.operation)
            .map(|o| o.get_ref())
    }
}

struct Loader {
    dir: PathBuf,
    diags: Diagnostics,
    /// Connectors whose files have errors: references to them are not
    /// reported as missing.
    broken: Vec<String>,
}

impl Loader {
    /// The path as shown to people: relative to the config directory.
    fn shown(&self, p: &Path) -> PathBuf {
        p.strip_prefix(&self.dir)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| p.to_path_buf())
    }

    fn read(&mut self, p: &Path) -> Option<SourceText> {
        match std::fs::read(p) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Some(SourceText::new(self.shown(p), text)),
                Err(e) => {
                    let shown = self.shown(p);
                    self.diags.push(crate::diag::file_error(
                        &shown,
                        format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
                    ));
                    None
                }
            },
            Err(e) => {
                let shown = self.shown(p);
                self.diags
                    .push(crate::diag::file_error(&shown, format!("cannot read: {e}")));
                None
            }
        }
    }

    /// Files with an extension in a directory, sorted; a missing directory is empty.
    fn list(&self, sub: &str, ext: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(self.dir.join(sub))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == ext))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    fn parse_toml<T: serde::de::DeserializeOwned>(&mut self, src: &SourceText) -> Option<T> {
        match toml::from_str::<T>(&src.text) {
            Ok(v) => Some(v),
            Err(e) => {
                let off = e.span().map(|s| s.start).unwrap_or(0);
                self.diags
                    .push(src.error(off, e.message().trim_end().replace('\n', " ")));
                None
            }
        }
    }

    fn hub(&mut self) -> Option<HubConfig> {
        let p = self.dir.join("tongban.toml");
        if !p.exists() {
            let shown = self.shown(&p);
            self.diags.push(crate::diag::file_error(
                &shown,
                format!(
                    "missing: {} is not a tongban configuration directory (no tongban.toml)",
                    self.dir.display()
                ),
            ));
            return None;
        }
        let src = self.read(&p)?;
        let hub: HubConfig = self.parse_toml(&src)?;
        for m in hub.validate() {
            self.diags.push(src.error(0, m));
        }
        Some(hub)
    }

    fn schemas(&mut self) -> Registry {
        let mut reg = Registry::default();
        let files = self.list("schemas", "avsc");
        if files.is_empty() {
            let shown = self.shown(&self.dir.join("schemas"));
            self.diags
                .push(crate::diag::file_error(&shown, "no schemas (*.avsc) found"));
        }
        for p in files {
            let Some(src) = self.read(&p) else { continue };
            // JSON syntax errors with a position, before apache-avro sees the text.
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&src.text) {
                let off = offset_of_line_col(&src.text, e.line(), e.column());
                self.diags
                    .push(src.error(off, format!("invalid JSON: {e}")));
                continue;
            }
            match reg.add(&src.text, src.path.clone()) {
                Ok(s) => {
                    let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                    if stem != s.record.short_name() {
                        self.diags.push(src.error(
                            0,
                            format!(
                                "the file is named {stem}.avsc but defines {}; name it {}.avsc",
                                s.record.name,
                                s.record.short_name()
                            ),
                        ));
                    }
                }
                Err(e) => self.diags.push(src.error(0, e.to_string())),
            }
        }
        reg
    }

    fn tables(&mut self) -> BTreeMap<String, Arc<Table>> {
        let mut out = BTreeMap::new();
        for p in self.list("mappings/tables", "csv") {
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            match Table::load(&name, &p) {
                Ok((t, problems)) => {
                    out.insert(name, Arc::new(t));
                    for e in problems {
                        let shown = self.shown(&p);
                        self.diags.push(Diagnostic {
                            severity: Severity::Error,
                            file: shown,
                            line: e.line,
                            column: 1,
                            message: e.message,
                        });
                    }
                }
                Err(e) => {
                    let shown = self.shown(&p);
                    self.diags.push(Diagnostic {
                        severity: Severity::Error,
                        file: shown,
                        line: e.line,
                        column: usize::from(e.line > 0),
                        message: e.message,
                    });
                }
            }
        }
        out
    }

    fn connectors(&mut self, schemas: &Registry) -> BTreeMap<String, Connector> {
        let mut out = BTreeMap::new();
        for p in self.list("connectors", "toml") {
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            let Some(src) = self.read(&p) else {
                self.broken.push(name);
                continue;
            };
            let Some(spec) = self.parse_toml::<ConnectorSpec>(&src) else {
                self.broken.push(name);
                continue;
            };
            for (off, m) in spec.validate() {
                self.diags.push(src.error(off.unwrap_or(0), m));
            }
            for (name, op) in &spec.operations {
                let s = &op.get_ref().schema;
                if let (Some(schema), Some(idf)) =
                    (schemas.get(s.get_ref()), &op.get_ref().id_field)
                {
                    let ok = schema.record.field_index(idf.get_ref()).is_some_and(|i| {
                        matches!(schema.record.fields[i].ty, crate::schema::Type::Str)
                    });
                    if !ok {
                        self.diags.push(src.error(
                            idf.span().start,
                            format!(
                                "operation {name}: id_field {:?} must be a required string field of {}",
                                idf.get_ref(),
                                schema.record.short_name()
                            ),
                        ));
                    }
                }
                if schemas.get(s.get_ref()).is_none() {
                    self.diags.push(src.error(
                        s.span().start,
                        format!(
                            "operation {name}: no schema {:?} in schemas/ (have: {})",
                            s.get_ref(),
                            names(schemas)
                        ),
                    ));
                }
            }
            self.secret_warnings(&src, &spec);
            let mut layouts = BTreeMap::new();
            for (op_name, op) in &spec.operations {
                let Some(l) = &op.get_ref().layout else {
                    continue;
                };
                let path = self.dir.join(l.get_ref());
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let lsrc = SourceText::new(self.shown(&path), text);
                        match crate::formats::layout::Layout::parse(&lsrc) {
                            Ok(layout) => {
                                layouts.insert(op_name.clone(), Arc::new(layout));
                            }
                            Err(ds) => {
                                for d in ds {
                                    self.diags.push(d);
                                }
                            }
                        }
                    }
                    Err(e) => self.diags.push(src.error(
                        l.span().start,
                        format!("operation {op_name}: layout {:?}: {e}", l.get_ref()),
                    )),
                }
            }
            out.insert(
                name.clone(),
                Connector {
                    name,
                    file: src.path.clone(),
                    spec,
                    layouts,
                },
            );
        }
        out
    }

    fn secret_warnings(&mut self, src: &SourceText, spec: &ConnectorSpec) {
        use connector::Auth;
        if let Some(kh) = &spec.known_hosts {
            let path = self.dir.join(kh);
            if !path.is_file() {
                let at = src.text.find("known_hosts").unwrap_or(0);
                self.diags.push(src.at(
                    Severity::Warning,
                    at,
                    format!("the known_hosts file {} is not there: every connection to the server will be refused until it holds the server's key", path.display()),
                ));
            }
        }
        if let Some(url) = &spec.url {
            if let Err(e) = url.resolve() {
                // The line of `url =` (a secret reference has no span).
                let at = src
                    .text
                    .match_indices("url")
                    .find(|(i, _)| *i == 0 || src.text.as_bytes()[i - 1] == b'\n')
                    .map_or(0, |(i, _)| i);
                self.diags.push(src.at(
                    Severity::Warning,
                    at,
                    format!("the database url {url} cannot be read here: {e}; `tongban run` will need it"),
                ));
            }
        }
        let Some(auth) = &spec.auth else { return };
        let secret = match auth.get_ref() {
            Auth::Bearer(b) => &b.token,
            Auth::Basic(b) | Auth::Password(b) => &b.password,
            Auth::Hmac(h) => &h.secret,
            Auth::Key(k) => &k.private_key,
        };
        if let Err(e) = secret.resolve() {
            self.diags.push(src.at(
                Severity::Warning,
                auth.span().start,
                format!("secret {secret} cannot be read here: {e}; `tongban run` will need it"),
            ));
        }
    }

    fn mappings(
        &mut self,
        schemas: &Registry,
        connectors: &BTreeMap<String, Connector>,
        tables: &BTreeMap<String, Arc<Table>>,
    ) -> BTreeMap<String, Mapping> {
        let mut out = BTreeMap::new();
        for p in self.list("mappings", "toml") {
            let Some(src) = self.read(&p) else { continue };
            let Some(file) = self.parse_toml::<feed::FeedFile>(&src) else {
                continue;
            };
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            if let Some(m) = self.mapping(&src, name.clone(), file, schemas, connectors, tables) {
                out.insert(name, m);
            }
        }
        out
    }

    fn resolve_op<'c>(
        &mut self,
        src: &SourceText,
        r: &toml::Spanned<String>,
        want: Direction,
        connectors: &'c BTreeMap<String, Connector>,
    ) -> Option<(OpRef, &'c connector::Operation)> {
        let at = src.string_offset(r.span(), 0);
        let Some((c, o)) = r.get_ref().split_once('.') else {
            self.diags.push(src.error(
                at,
                format!("{:?} must name connector.operation", r.get_ref()),
            ));
            return None;
        };
        let Some(conn) = connectors.get(c) else {
            if self.broken.iter().any(|b| b == c) {
                self.diags.push(src.error(at, format!("connector {c:?} has errors (above); this feed is checked once they are fixed")));
                return None;
            }
            let have = connectors.keys().cloned().collect::<Vec<_>>().join(", ");
            self.diags.push(src.error(
                at,
                format!("no connector {c:?} in connectors/ (have: {have})"),
            ));
            return None;
        };
        let Some(op) = conn.spec.operations.get(o) else {
            let have = conn
                .spec
                .operations
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            self.diags.push(src.error(
                src.string_offset(r.span(), c.len() + 1),
                format!("connector {c} has no operation {o:?} (has: {have})"),
            ));
            return None;
        };
        if op.get_ref().direction != want {
            let (w, is) = match want {
                Direction::Source => ("from", "a sink"),
                Direction::Sink => ("to", "a source"),
            };
            self.diags.push(src.error(
                at,
                format!("{c}.{o} is {is} operation and cannot be used as `{w}`"),
            ));
            return None;
        }
        Some((
            OpRef {
                connector: c.to_string(),
                operation: o.to_string(),
            },
            op.get_ref(),
        ))
    }

    fn mapping(
        &mut self,
        src: &SourceText,
        name: String,
        f: feed::FeedFile,
        schemas: &Registry,
        connectors: &BTreeMap<String, Connector>,
        tables: &BTreeMap<String, Arc<Table>>,
    ) -> Option<Mapping> {
        let from = self.resolve_op(src, &f.from, Direction::Source, connectors);
        let to = self.resolve_op(src, &f.to, Direction::Sink, connectors);
        let ((from, from_op), (to, to_op)) = (from?, to?);
        // Operation schemas were checked with the connectors.
        let source = schemas.get(from_op.schema.get_ref())?.clone();
        let target = schemas.get(to_op.schema.get_ref())?.clone();
        let root_name = f
            .root
            .as_ref()
            .map(|r| r.get_ref().clone())
            .unwrap_or_else(|| "record".into());
        if let Some(r) = &f.root {
            let ok = root_name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && root_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                self.diags.push(src.error(
                    r.span().start,
                    format!("`as` must be an identifier such as event, found {root_name:?}"),
                ));
                return None;
            }
        }
        let msrc = MappingSource {
            root_name: &root_name,
            source: source.record.clone(),
            target: target.record.clone(),
            when: f.when.as_ref().map(|w| w.get_ref().as_str()),
            key: f.key.get_ref(),
            idempotency: f.idempotency_key.as_ref().map(|w| w.get_ref().as_str()),
            fields: f
                .fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.get_ref().as_str()))
                .collect(),
        };
        let program = match Program::compile(&msrc, tables) {
            Ok(p) => Some(p),
            Err(errs) => {
                for e in errs {
                    let span = match &e.part {
                        Part::When => f.when.as_ref().map(|w| w.span()),
                        Part::Key => Some(f.key.span()),
                        Part::Idempotency => f.idempotency_key.as_ref().map(|w| w.span()),
                        Part::Field(n) => f.fields.get(n).map(|v| v.span()),
                    }
                    .unwrap_or(0..0);
                    let off = src.string_offset(span.clone(), e.offset.unwrap_or(0));
                    let what = match &e.part {
                        Part::Field(n) => format!("field `{n}`"),
                        p => format!("`{p}`"),
                    };
                    let at = if span.is_empty() { 0 } else { off };
                    self.diags
                        .push(src.error(at, format!("{what}: {}", e.message)));
                }
                None
            }
        };
        let target_ty = Type::Record(target.record.clone());
        let mut tests = Vec::new();
        for t in &f.tests {
            let (line, _) = src.line_col(t.span().start);
            let t = t.get_ref();
            let n = usize::from(t.expect.is_some())
                + usize::from(t.reject.is_some())
                + usize::from(t.filtered);
            let bad_province = t.serves.iter().flatten().any(|p| {
                p.len() != 2
                    || !p
                        .parse::<u8>()
                        .is_ok_and(|n| crate::domain::id::PROVINCES.contains(&n))
            });
            let problem = if n != 1 {
                Some("needs exactly one of expect, reject or filtered = true")
            } else if bad_province {
                Some("serves lists provinces by the two digits of GB/T 2260 (\"14\", \"37\")")
            } else if t.idempotency_key.is_some() && t.expect.is_none() {
                Some("idempotency_key goes with expect (the record it is for)")
            } else {
                None
            };
            if let Some(problem) = problem {
                let at = f
                    .tests
                    .iter()
                    .find(|x| x.get_ref().name == t.name)
                    .map_or(0, |x| x.span().start);
                self.diags
                    .push(src.error(at, format!("test {:?} {problem}", t.name)));
                continue;
            }
            let expect = if let Some(e) = &t.expect {
                match schema::decode_json_value(&feed::toml_to_json(e), &target_ty, true) {
                    Ok(d) => Expect::Output(d),
                    Err(err) => {
                        self.diags.push(Diagnostic {
                            severity: Severity::Error,
                            file: src.path.clone(),
                            line,
                            column: 1,
                            message: format!(
                                "test {:?}: `expect` does not fit {}: {err}",
                                t.name,
                                target.record.short_name()
                            ),
                        });
                        continue;
                    }
                }
            } else if let Some(part) = &t.reject {
                Expect::Reject {
                    part: part.clone(),
                    error: t.error.clone(),
                }
            } else {
                Expect::Filtered
            };
            tests.push(TestCase {
                name: t.name.clone(),
                line,
                input: feed::toml_to_json(&t.input),
                expect,
                idempotency_key: t.idempotency_key.clone(),
                serves: t.serves.clone(),
            });
        }
        let target_ty = Type::Record(target.record.clone());
        Some(Mapping {
            source_ty: Type::Record(source.record.clone()),
            name,
            file: src.path.clone(),
            description: f.description,
            from,
            to,
            source,
            target,
            source_format: from_op.format,
            program: program?,
            tests,
            target_ty,
        })
    }
}

fn names(r: &Registry) -> String {
    r.names()
        .map(|n| n.rsplit('.').next().unwrap_or(n))
        .collect::<Vec<_>>()
        .join(", ")
}

fn offset_of_line_col(text: &str, line: usize, col: usize) -> usize {
    let mut off = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return off
                + l.char_indices()
                    .nth(col.saturating_sub(1))
                    .map(|(b, _)| b)
                    .unwrap_or(l.len());
        }
        off += l.len();
    }
    text.len()
}
