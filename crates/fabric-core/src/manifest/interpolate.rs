//! `${...}` interpolation in `cmd`, `with`, `deps` and `outs`.
//!
//! Three references exist: `${params.NAME}`, `${matrix.KEY}` (a matrix
//! stage's value, see [`super::matrix`]) and `${stage.NAME.outs[N]}`. Every
//! `${` starts a reference, so a typo is an error rather than text handed to
//! the shell; write `$${` for a literal `${` (e.g. `$${HOME}` for the shell).

use std::ops::Range;

/// A reference inside `${...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `${params.NAME}`
    Param(String),
    /// `${matrix.KEY}`
    Matrix(String),
    /// `${stage.NAME.outs[INDEX]}`
    StageOut { stage: String, index: usize },
}

/// A piece of an interpolated string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text taken as it is.
    Literal(String),
    /// A reference and its byte range in the string (including `${` and `}`).
    Ref(Reference, Range<usize>),
}

/// A malformed reference: its byte range in the string and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte range within the string.
    pub range: Range<usize>,
    /// What is wrong.
    pub message: String,
}

/// Splits `text` into literal text and references.
pub fn parse(text: &str) -> Result<Vec<Piece>, SyntaxError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            literal.push_str("${");
            rest = tail;
            offset += at + 3;
        } else if after.starts_with("${") {
            let Some(close) = after.find('}') else {
                return Err(SyntaxError {
                    range: offset + at..text.len(),
                    message: "unclosed `${`".into(),
                });
            };
            let range = offset + at..offset + at + close + 1;
            let reference = parse_reference(&after[2..close]).map_err(|message| SyntaxError {
                range: range.clone(),
                message,
            })?;
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Ref(reference, range));
            rest = &after[close + 1..];
            offset += at + close + 1;
        } else {
            literal.push('$');
            rest = &after[1..];
            offset += at + 1;
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

fn parse_reference(inner: &str) -> Result<Reference, String> {
    let inner = inner.trim();
    if let Some(name) = inner.strip_prefix("params.") {
        if is_name(name) {
            return Ok(Reference::Param(name.to_string()));
        }
    } else if let Some(key) = inner.strip_prefix("matrix.") {
        if is_name(key) {
            return Ok(Reference::Matrix(key.to_string()));
        }
    } else if let Some(rest) = inner.strip_prefix("stage.")
        && let Some((stage, field)) = rest.rsplit_once(".outs[")
        && let Some(index) = field.strip_suffix(']')
        && super::matrix::is_stage_name(stage)
        && let Ok(index) = index.parse()
    {
        return Ok(Reference::StageOut {
            stage: stage.to_string(),
            index,
        });
    }
    Err(format!(
        "`${{{inner}}}` is not a reference; use `${{params.NAME}}`, `${{matrix.KEY}}` or `${{stage.NAME.outs[N]}}`, or `$${{` for a literal `${{`"
    ))
}

/// True for names of params and stages: letters, digits, `_` and `-`.
pub fn is_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_literals_and_references() {
        let pieces = parse(
            "train --seed ${params.seed} -o ${stage.data.outs[1]} $$HOME $${X} ${matrix.lr} ${stage.t@lr=0.1.outs[0]}",
        )
        .unwrap();
        assert_eq!(
            pieces,
            vec![
                Piece::Literal("train --seed ".into()),
                Piece::Ref(Reference::Param("seed".into()), 13..27),
                Piece::Literal(" -o ".into()),
                Piece::Ref(
                    Reference::StageOut {
                        stage: "data".into(),
                        index: 1
                    },
                    31..52
                ),
                Piece::Literal(" $$HOME ${X} ".into()),
                Piece::Ref(Reference::Matrix("lr".into()), 66..78),
                Piece::Literal(" ".into()),
                Piece::Ref(
                    Reference::StageOut {
                        stage: "t@lr=0.1".into(),
                        index: 0
                    },
                    79..104
                ),
            ]
        );
    }

    #[test]
    fn rejects_malformed_references() {
        assert_eq!(parse("a ${params.x").unwrap_err().range, 2..12);
        assert_eq!(parse("${param.x}").unwrap_err().range, 0..10);
        assert!(parse("${stage.x.outs[a]}").is_err());
        assert!(parse("${matrix.a b}").is_err());
        assert!(parse("${stage.x@.outs[0]}").is_err());
    }
}
