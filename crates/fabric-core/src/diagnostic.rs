//! Compiler-style diagnostics for manifest and graph errors.
//!
//! A [`Diagnostic`] names the file, the byte span inside it, what is wrong and,
//! when we can tell, what to do about it. Rendering (with the snippet and a
//! caret) happens once, at the command edge, through `annotate-snippets`.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

/// A source location: a file (as shown to the user) and a byte span in it.
/// Serialized without the file's text, which the reader attaches again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Location {
    /// Path of the file, relative to the workspace when possible.
    pub file: PathBuf,
    /// The file's text, kept so the snippet can be shown.
    #[serde(skip)]
    pub source: std::sync::Arc<str>,
    /// Byte range of the offending text.
    pub span: Range<usize>,
}

impl Location {
    /// One-based line and column of the span's start.
    pub fn line_column(&self) -> (usize, usize) {
        let start = self.span.start.min(self.source.len());
        let before = &self.source[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}

/// One error about the user's input, with an optional source location and hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// What is wrong, in one sentence.
    pub message: String,
    /// Where, when the error points into a file.
    pub location: Option<Location>,
    /// The label under the caret.
    pub label: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with no location.
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            location: None,
            label: String::new(),
            hint: None,
        }
    }

    /// Points the diagnostic at `location` with a label under the caret.
    pub fn at(mut self, location: Location, label: impl Into<String>) -> Self {
        self.location = Some(location);
        self.label = label.into();
        self
    }

    /// Adds a hint telling the user what to do.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Renders the diagnostic with its snippet, styled when `color` is set.
    pub fn render(&self, color: bool) -> String {
        let renderer = if color { Renderer::styled() } else { Renderer::plain() };
        let file;
        let mut title = Level::ERROR.primary_title(&self.message);
        let mut group = if let Some(location) = &self.location {
            file = location.file.display().to_string();
            let span = clamp_span(&location.source, location.span.clone());
            title = Level::ERROR.primary_title(&self.message);
            Group::with_title(title).element(
                Snippet::source(&*location.source)
                    .path(&file)
                    .annotation(AnnotationKind::Primary.span(span).label(&self.label)),
            )
        } else {
            Group::with_title(title)
        };
        if let Some(hint) = &self.hint {
            group = group.element(Level::HELP.message(hint));
        }
        renderer.render(&[group])
    }
}

/// Keeps a span inside the source and at least one character wide, so the
/// caret always has something to point at.
fn clamp_span(source: &str, span: Range<usize>) -> Range<usize> {
    let start = span.start.min(source.len());
    let end = span.end.clamp(start, source.len());
    if start == end && end < source.len() {
        let next = source[start..].chars().next().map_or(1, char::len_utf8);
        start..start + next
    } else {
        start..end
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = &self.location {
            let (line, column) = location.line_column();
            write!(f, "{}:{line}:{column}: ", location.file.display())?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Every diagnostic found while loading, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Renders every diagnostic, separated by blank lines.
    pub fn render(&self, color: bool) -> String {
        let parts: Vec<String> = self.0.iter().map(|d| d.render(color)).collect();
        parts.join("\n\n")
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(diagnostic: Diagnostic) -> Self {
        Diagnostics(vec![diagnostic])
    }
}

/// The closest candidate to `word`, for "did you mean" hints.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
