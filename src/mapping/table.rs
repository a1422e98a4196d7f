//! Code tables (`mappings/tables/*.csv`) for `lookup(table, key)`.
//!
//! The first row names the columns; the first column is the key. `lookup('t', k)`
//! returns the second column, `lookup('t.col', k)` a named one.

use rustc_hash::FxHashMap;
use std::path::Path;

/// One code table.
#[derive(Debug)]
pub struct Table {
    /// Table name (the file stem).
    pub name: String,
    /// Column names, the key column first.
    pub columns: Vec<String>,
    rows: FxHashMap<String, Vec<String>>,
}

/// A problem in a table file, with its 1-based line.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TableError {
    /// 1-based line (0 when the whole file is at fault).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl Table {
    /// Reads a CSV table. A file that cannot be read as CSV is an error;
    /// duplicate keys are returned as problems beside the table (the first
    /// row of a key wins), so that one bad row does not hide the table.
    pub fn load(name: &str, path: &Path) -> Result<(Table, Vec<TableError>), TableError> {
        let text = std::fs::read(path).map_err(|e| TableError {
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(name, &text)
    }

    /// Parses CSV bytes; see [`Table::load`].
    pub fn parse(name: &str, text: &[u8]) -> Result<(Table, Vec<TableError>), TableError> {
        let mut rd = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(text);
        let headers = rd
            .headers()
            .map_err(|e| TableError {
                line: 1,
                message: format!("bad header: {e}"),
            })?
            .iter()
            .map(|h| h.trim().to_string())
            .collect::<Vec<_>>();
        if headers.len() < 2 {
            return Err(TableError {
                line: 1,
                message: "needs a key column and at least one value column".into(),
            });
        }
        let mut rows = FxHashMap::default();
        let mut problems = Vec::new();
        for rec in rd.records() {
            let rec = rec.map_err(|e| TableError {
                line: e.position().map(|p| p.line() as usize).unwrap_or(0),
                message: e.to_string(),
            })?;
            let line = rec.position().map(|p| p.line() as usize).unwrap_or(0);
            let mut cells = rec.iter().map(|c| c.trim().to_string());
            let key = cells.next().unwrap_or_default();
            if rows.contains_key(&key) {
                problems.push(TableError {
                    line,
                    message: format!("key {key:?} appears twice"),
                });
                continue;
            }
            rows.insert(key, cells.collect());
        }
        Ok((
            Table {
                name: name.to_string(),
                columns: headers,
                rows,
            },
            problems,
        ))
    }

    /// Index of a value column (0 = the first value column), by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().skip(1).position(|c| c == name)
    }

    /// The value in column `col` for `key`.
    #[inline]
    pub fn get(&self, key: &str, col: usize) -> Option<&str> {
        self.rows
            .get(key)
            .and_then(|r| r.get(col))
            .map(String::as_str)
    }

    /// Whether `key` is a row's key.
    #[inline]
    pub fn has(&self, key: &str) -> bool {
        self.rows.contains_key(key)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// `true` if the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_duplicates() {
        let (t, problems) = Table::parse(
            "c",
            "code,name,en\n1,视力,visual\n4,肢体,physical\n".as_bytes(),
        )
        .unwrap();
        assert!(problems.is_empty());
        assert_eq!(t.get("4", 0), Some("肢体"));
        assert_eq!(t.get("4", t.column("en").unwrap()), Some("physical"));
        assert_eq!(t.get("9", 0), None);
        let (t, problems) = Table::parse("c", b"code,name\n1,a\n2,b\n1,c\n").unwrap();
        assert_eq!(t.get("1", 0), Some("a"));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 4);
        assert!(problems[0].message.contains("twice"));
        assert!(Table::parse("c", b"code\n1\n").is_err());
    }
}
