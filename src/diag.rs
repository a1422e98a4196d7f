//! Diagnostics: every configuration problem with its file, line and column,
//! collected so that one run reports them all.

use std::fmt;
use std::path::{Path, PathBuf};

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The configuration cannot run.
    Error,
    /// It can be checked, but something needs attention before it runs
    /// (for example a secret whose environment variable is not set here).
    Warning,
}

/// One problem in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file, relative to the configuration directory where possible.
    pub file: PathBuf,
    /// 1-based line (0 when it concerns the whole file).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, and what to do.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.line == 0 {
            write!(f, "{}: {sev}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {sev}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// A problem found in one file before it is placed: the byte offset it is
/// at (`None`: the file as a whole) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Byte offset in the file.
    pub at: Option<usize>,
    /// What is wrong, and what to do.
    pub message: String,
}

impl Problem {
    /// A problem at `at`.
    pub fn new(at: Option<usize>, message: impl Into<String>) -> Self {
        Problem {
            at,
            message: message.into(),
        }
    }
}

/// A loaded text file, for turning byte offsets into lines and columns.
pub struct SourceText {
    /// Path as shown in diagnostics.
    pub path: PathBuf,
    /// The text.
    pub text: String,
}

impl SourceText {
    /// Wraps a text.
    pub fn new(path: impl Into<PathBuf>, text: String) -> Self {
        SourceText {
            path: path.into(),
            text,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        (line, before[line_start..].chars().count() + 1)
    }

    /// A diagnostic at a byte offset.
    pub fn at(&self, severity: Severity, offset: usize, message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.line_col(offset);
        Diagnostic {
            severity,
            file: self.path.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    /// An error at a byte offset.
    pub fn error(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        self.at(Severity::Error, offset, message)
    }

    /// Byte offset of the content of a TOML string value whose span is
    /// `span`, plus `inner` bytes of the decoded content. Escapes `\"` and
    /// `\\` are accounted for; other escapes may shift the column.
    pub fn string_offset(&self, span: std::ops::Range<usize>, inner: usize) -> usize {
        let raw = &self.text[span.clone()];
        let (open, basic) = if raw.starts_with("\"\"\"") {
            (3, true)
        } else if raw.starts_with("'''") {
            (3, false)
        } else {
            (1, raw.starts_with('"'))
        };
        let mut start = span.start + open;
        if open == 3 && self.text[start..].starts_with('\n') {
            start += 1;
        } else if open == 3 && self.text[start..].starts_with("\r\n") {
            start += 2;
        }
        if !basic {
            return start + inner;
        }
        let bytes = self.text.as_bytes();
        let (mut raw_i, mut dec) = (start, 0);
        while dec < inner && raw_i < span.end {
            if bytes[raw_i] == b'\\' {
                raw_i += 2;
            } else {
                raw_i += 1;
            }
            dec += 1;
        }
        raw_i
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A diagnostic about a whole file.
pub fn file_error(path: &Path, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        message: message.into(),
    }
}

/// The diagnostics of a load.
#[derive(Debug, Default)]
pub struct Diagnostics {
    /// All problems found, errors and warnings.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Adds one.
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count()
    }
    /// Sorted by file, line and column.
    pub fn sort(&mut self) {
        self.items
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let s = SourceText::new("a.toml", "x = 1\nname = \"张三 \\\"q\\\" z\"\n".to_string());
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(6), (2, 1));
        let start = s.text.find('"').unwrap();
        let end = s.text.rfind('"').unwrap() + 1;
        // decoded: `张三 "q" z`; the 'z' is at decoded byte 11 (张三 are 3 bytes each)
        let off = s.string_offset(start..end, 11);
        assert_eq!(&s.text[off..off + 1], "z");
        assert_eq!(s.line_col(off).0, 2);
    }
}
