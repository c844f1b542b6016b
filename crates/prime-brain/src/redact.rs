//! The redactor: free text rebuilt from the closed vocabulary.
//!
//! [`redact`] keeps what is known to be safe and replaces the rest:
//!
//! 1. Detectors name personal data so the report can say what was removed:
//!    URLs and web addresses, emails (plain and spelled out: "jane dot doe at
//!    gmail dot com"), IP addresses (with ports), paths (Unix, macOS,
//!    home-relative, Windows drive and UNC, `file://`), file names, handles
//!    (`@name`, `u/name`), phone, card and account numbers. Each becomes its
//!    typed placeholder ([`Placeholder`]), covering the whole
//!    whitespace-delimited token.
//! 2. Everything else is rebuilt word by word: a word in the vocabulary
//!    ([`lexicon::is_word`]) stays as written; any other word becomes
//!    `⟨person⟩` (a known name, or capitalized) or `⟨word⟩`; every number
//!    becomes `⟨number⟩`; ASCII punctuation stays; whitespace and other
//!    symbols become single spaces. A vocabulary word that is also a
//!    name ("Mark") is a person when capitalized mid-sentence.
//!
//! So the guarantee does not rest on the detectors: what they miss is still
//! not in the vocabulary. Sanitize checks its output with an independent
//! verifier ([`super::privacy`]), not with this module.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::rc::Rc;
use std::sync::LazyLock;

use regex::Regex;

use super::lexicon::{self, Placeholder};

/// One piece of personal data a detector found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What stands in its place.
    pub kind: Placeholder,
    /// Where, in bytes.
    pub range: Range<usize>,
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("valid regex")
}

/// Top-level domains that mark a host name written without a scheme.
const TLDS: &str = "com|org|net|io|fm|me|ly|co|uk|de|fr|es|it|nl|jp|cn|ru|br|in|au|ca|us|info|biz|app|dev|tv|gg|be|link|site|online|music|studio|local|lan|home|internal";

static URL: LazyLock<Regex> = LazyLock::new(|| regex(r#"(?i)\b(?:[a-z][a-z0-9+.-]*://|www\.)[^\s<>"'`]+"#));
/// A host name with a common top-level domain, with or without a path
/// (`soundcloud.com/janedoe`, `bit.ly/x`).
static DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        r"(?i)\b[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.(?:{TLDS})\b(?:/\S*)?"
    ))
});
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?i)[a-z0-9._%+-]+\s?(?:@|\[at\]|\(at\)|\{at\})\s?[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}")
});
/// An email spelled out: `jane dot doe at gmail dot com`, `jane [at] mail [dot] com`.
static SPELLED_EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    let dot = r"(?:\s*(?:\bdot\b|\[dot\]|\(dot\)|\{dot\})\s*|\.)";
    let at = r"(?:\s*(?:\bat\b|\[at\]|\(at\)|\{at\})\s*|@)";
    regex(&format!(
        r"(?i)\b[\w+-]+(?:{dot}[\w+-]+)*{at}[\w-]+(?:{dot}[\w-]+)*{dot}(?:{TLDS})\b"
    ))
});
static IP_CANDIDATE: LazyLock<Regex> = LazyLock::new(|| regex(r"[0-9A-Fa-f]*[:.][0-9A-Fa-f:.%]*[0-9A-Fa-f:]"));
static UNIX_PATH: LazyLock<Regex> = LazyLock::new(|| regex(r#"(?:^|[\s"'(\[=:,])((?:~|\.{1,2})?/[^\s"'<>()\[\],;]+)"#));
static WINDOWS_PATH: LazyLock<Regex> =
    LazyLock::new(|| regex(r#"(?i)\b[a-z]:[\\/][^\s"'<>|,;]*|\\\\[^\s\\"']+\\[^\s"'<>|,;]+"#));
static FILE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)\b[\w-]+\.(?:wav|mp3|aiff?|flac|ogg|m4a|aac|mid|midi|als|alp|logicx|ptx|ptf|flp|rpp|cpr|band|sesx|zip|rar|7z|txt|pdf|docx?|xlsx?|json|png|jpe?g|gif|mov|mp4|nki|fxp|sfz)\b",
    )
});
static HANDLE: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i)(?:^|[^\w@])(@[a-z0-9_][a-z0-9_.]*|\bu/[a-z0-9_-]+)"));
/// Seven or more digits in phone, card or account shapes (spaces, dots,
/// dashes, parentheses between groups).
static LONG_NUMBER: LazyLock<Regex> = LazyLock::new(|| regex(r"(?:\+|\(|\b)\d[\d\s().-]{5,}\d\b"));
/// An IBAN: country, check digits, groups.
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| regex(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,3})?\b"));

/// Every piece of personal data the detectors find in `text`,
/// non-overlapping, in order. Each covers its whole whitespace-delimited
/// token (cutting a token in two would leave fragments); detections that
/// overlap merge into one, of the longer one's kind.
pub fn findings(text: &str) -> Vec<Finding> {
    let mut found: Vec<Finding> = Vec::new();
    let mut claim = |kind: Placeholder, range: Range<usize>| found.push(Finding { kind, range });
    for m in URL.find_iter(text) {
        claim(Placeholder::Link, m.range());
    }
    for m in EMAIL.find_iter(text).chain(SPELLED_EMAIL.find_iter(text)) {
        claim(Placeholder::Contact, m.range());
    }
    for m in DOMAIN.find_iter(text) {
        claim(Placeholder::Link, m.range());
    }
    for m in IP_CANDIDATE.find_iter(text) {
        let candidate = m.as_str().trim_end_matches(['.', ':']);
        let bare = candidate.split('%').next().unwrap_or(candidate);
        let without_port = bare.rsplit_once(':').map_or(bare, |(host, _)| host);
        let ipv4 = bare.parse::<Ipv4Addr>().is_ok() || without_port.parse::<Ipv4Addr>().is_ok();
        if ipv4 || (bare.contains(':') && bare.trim_matches(['[', ']']).parse::<Ipv6Addr>().is_ok()) {
            claim(Placeholder::Address, m.start()..m.start() + candidate.len());
        }
    }
    for m in WINDOWS_PATH.find_iter(text) {
        claim(Placeholder::Path, m.range());
    }
    for captures in UNIX_PATH.captures_iter(text) {
        let path = captures.get(1).expect("group 1 always matches");
        // A lone slash between words ("4/4", "and/or") is not a path.
        if path.as_str().len() > 1 {
            claim(Placeholder::Path, path.range());
        }
    }
    for m in FILE.find_iter(text) {
        claim(Placeholder::Path, m.range());
    }
    for captures in HANDLE.captures_iter(text) {
        let handle = captures.get(1).expect("group 1 always matches");
        claim(Placeholder::Handle, handle.range());
    }
    for m in LONG_NUMBER.find_iter(text).chain(IBAN.find_iter(text)) {
        let digits = m.as_str().chars().filter(char::is_ascii_digit).count();
        if digits >= 7 {
            claim(Placeholder::Number, m.range());
        }
    }
    let mut found: Vec<Finding> = found
        .into_iter()
        .map(|mut finding| {
            // A phone number is contact data, whatever else it looks like.
            if finding.kind == Placeholder::Number && looks_like_phone(&text[finding.range.clone()]) {
                finding.kind = Placeholder::Contact;
            }
            finding.range = whole_tokens(text, finding.range);
            finding
        })
        // A token holding a placeholder was sanitized before: it is left to
        // the word-by-word rebuild (so sanitizing twice changes nothing).
        .filter(|finding| !holds_placeholder(&text[finding.range.clone()]))
        .collect();
    found.sort_by_key(|f| (f.range.start, std::cmp::Reverse(f.range.end)));
    let mut merged: Vec<Finding> = Vec::with_capacity(found.len());
    for finding in found {
        match merged.last_mut() {
            Some(last) if finding.range.start < last.range.end => {
                if finding.range.len() > last.range.len() {
                    last.kind = finding.kind;
                }
                last.range.end = last.range.end.max(finding.range.end);
            }
            _ => merged.push(finding),
        }
    }
    merged
}

/// True when `token` holds a placeholder.
fn holds_placeholder(token: &str) -> bool {
    token
        .char_indices()
        .any(|(i, c)| c == '⟨' && Placeholder::at_start(&token[i..]).is_some())
}

/// Phone shapes: a leading `+` or `(`, or 7–15 digits in up to five groups.
fn looks_like_phone(candidate: &str) -> bool {
    let digits = candidate.chars().filter(char::is_ascii_digit).count();
    let groups = candidate
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .count();
    candidate.starts_with(['+', '(']) || ((7..=12).contains(&digits) && (2..=4).contains(&groups))
}

/// Widens `range` to whole whitespace-delimited tokens.
fn whole_tokens(text: &str, range: Range<usize>) -> Range<usize> {
    let start = text[..range.start]
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
        .map_or(0, |(i, c)| i + c.len_utf8());
    let end = text[range.end..]
        .find(char::is_whitespace)
        .map_or(text.len(), |i| range.end + i);
    start..end
}

/// The result of [`redact`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Redaction {
    /// The rebuilt text.
    pub text: String,
    /// Placeholders written, by kind.
    pub counts: Vec<(Placeholder, usize)>,
    /// Words and numbers in the input.
    pub tokens: usize,
    /// Of those, the ones that came through unchanged.
    pub kept: usize,
}

/// Builds the output: single spaces, adjacent equal placeholders merged.
#[derive(Default)]
struct Rebuilt {
    text: String,
    counts: BTreeMap<Placeholder, usize>,
    space: bool,
    last: Option<Placeholder>,
}

impl Rebuilt {
    fn space(&mut self) {
        self.space = !self.text.is_empty();
    }

    fn push(&mut self, piece: &str) {
        if std::mem::take(&mut self.space) {
            self.text.push(' ');
        }
        self.text.push_str(piece);
        self.last = None;
    }

    fn placeholder(&mut self, kind: Placeholder) {
        // "Jane Doe" is one person: equal neighbours with only space between merge.
        if self.last == Some(kind) {
            self.space = false;
            return;
        }
        self.push(kind.text());
        self.last = Some(kind);
        *self.counts.entry(kind).or_insert(0) += 1;
    }
}

/// Typographic punctuation mapped to its ASCII form.
fn ascii_punctuation(c: char) -> Option<char> {
    match c {
        _ if c.is_ascii_punctuation() => Some(c),
        '‘' | '’' | '′' => Some('\''),
        '“' | '”' | '″' => Some('"'),
        '–' | '—' | '‐' | '‒' => Some('-'),
        '…' => Some('.'),
        _ => None,
    }
}

/// Rebuilds `segment` (text outside detector findings) word by word.
fn rebuild(segment: &str, out: &mut Rebuilt, tokens: &mut usize, kept: &mut usize, sentence_start: &mut bool) {
    let mut rest = segment;
    while let Some(c) = rest.chars().next() {
        if let Some(kind) = Placeholder::at_start(rest) {
            // Text sanitized before keeps its placeholders.
            out.placeholder(kind);
            rest = &rest[kind.text().len()..];
            *sentence_start = false;
            continue;
        }
        let run = lexicon::letter_run(rest);
        if run > 0 {
            let word = &rest[..run];
            *tokens += 1;
            let capitalized = word.chars().next().is_some_and(char::is_uppercase);
            // A name is looked up only where it matters: a capitalized word
            // mid-sentence, or one that goes.
            let known = lexicon::is_word(word);
            let name = (capitalized || !known) && lexicon::is_name(word);
            if known && !(name && capitalized && !*sentence_start) {
                out.push(word);
                *kept += 1;
            } else {
                out.placeholder(if name || capitalized {
                    Placeholder::Person
                } else {
                    Placeholder::Word
                });
                let possessive = if word.ends_with("'s") || word.ends_with("'S") {
                    "'s"
                } else if word.ends_with('\'') {
                    "'"
                } else {
                    ""
                };
                if !possessive.is_empty() {
                    out.push(possessive);
                }
            }
            *sentence_start = false;
            rest = &rest[run..];
            continue;
        }
        if c.is_numeric() {
            let mut end = c.len_utf8();
            let mut chars = rest[end..].char_indices().peekable();
            while let Some((i, next)) = chars.next() {
                let joins = matches!(next, '.' | ',' | ':') && chars.peek().is_some_and(|(_, d)| d.is_numeric());
                if next.is_numeric() || joins {
                    end = c.len_utf8() + i + next.len_utf8();
                } else {
                    break;
                }
            }
            *tokens += 1;
            out.placeholder(Placeholder::Number);
            *sentence_start = false;
            rest = &rest[end..];
            continue;
        }
        if let Some(p) = ascii_punctuation(c) {
            out.push(p.encode_utf8(&mut [0; 4]));
            if matches!(p, '.' | '!' | '?') {
                *sentence_start = true;
            }
        } else {
            // Whitespace, and any other symbol, separate words.
            out.space();
        }
        rest = &rest[c.len_utf8()..];
    }
}

/// Rebuilds `text` from the vocabulary and placeholders, until nothing
/// changes: rebuilding can bring characters together that a detector then
/// claims ("x😀/y" becomes "⟨word⟩ /y", a path), and sanitizing twice must
/// change nothing. Counts are of the placeholders in the final text; tokens
/// are those of `text`.
pub fn redact(text: &str) -> Redaction {
    let mut result = redact_once(text);
    if result.text == text {
        return result;
    }
    for _ in 0..4 {
        let again = redact_once(&result.text);
        result.counts = again.counts;
        if again.text == result.text {
            break;
        }
        result.text = again.text;
    }
    result
}

fn redact_once(text: &str) -> Redaction {
    let mut out = Rebuilt::default();
    let (mut tokens, mut kept, mut sentence_start) = (0, 0, true);
    let mut at = 0;
    for finding in findings(text) {
        rebuild(
            &text[at..finding.range.start],
            &mut out,
            &mut tokens,
            &mut kept,
            &mut sentence_start,
        );
        tokens += text[finding.range.clone()].split_whitespace().count();
        out.placeholder(finding.kind);
        sentence_start = false;
        at = finding.range.end;
    }
    rebuild(&text[at..], &mut out, &mut tokens, &mut kept, &mut sentence_start);
    Redaction {
        text: out.text,
        counts: out.counts.into_iter().collect(),
        tokens,
        kept,
    }
}

/// Distinct texts remembered per thread before the memo is cleared.
const MEMO_LIMIT: usize = 65_536;

thread_local! {
    static MEMO: std::cell::RefCell<std::collections::HashMap<String, Rc<Redaction>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// [`redact`], memoized per thread: snapshots repeat most of their text
/// (conversation windows, Bloom actions). The memo is bounded.
pub fn redact_memoized(text: &str) -> Rc<Redaction> {
    if let Some(hit) = MEMO.with(|memo| memo.borrow().get(text).cloned()) {
        return hit;
    }
    let result = Rc::new(redact(text));
    MEMO.with(|memo| {
        let mut memo = memo.borrow_mut();
        if memo.len() >= MEMO_LIMIT {
            memo.clear();
        }
        memo.insert(text.to_string(), result.clone());
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilds_text_from_the_vocabulary_and_typed_placeholders() {
        let cases = [
            ("mail maya.k+mix@studio.example.com now", "mail ⟨contact⟩ now"),
            (
                "see https://x.example/a?b=1 and www.example.org",
                "see ⟨link⟩ and ⟨link⟩",
            ),
            (
                "host 192.168.1.20 or fe80::1ff:fe23:4567:890a",
                "host ⟨address⟩ or ⟨address⟩",
            ),
            ("ssh 10.0.0.12:8080 please", "ssh ⟨address⟩ please"),
            ("saved to /home/maya/projects/song", "saved to ⟨path⟩"),
            (r"saved to C:\Users\john\Music", "saved to ⟨path⟩"),
            ("bounce final_mix_v2.wav", "bounce ⟨path⟩"),
            ("call +44 20 7946 0958 today", "call ⟨contact⟩ today"),
            ("Jane Doe's lead vocal is too loud", "⟨person⟩'s lead vocal is too loud"),
            ("jane and JANE SMITH and McDonald", "⟨person⟩ and ⟨person⟩ and ⟨person⟩"),
            ("张伟 likes the bass", "⟨word⟩ likes the bass"),
            (
                "follow @janedoe_music on soundcloud.com/janedoe",
                "follow ⟨handle⟩ on ⟨link⟩",
            ),
            ("jane dot doe at gmail dot com", "⟨contact⟩"),
            ("card 4111 1111 1111 1111 ok", "card ⟨number⟩ ok"),
            ("take 3 at 120 bpm", "take ⟨number⟩ at ⟨number⟩ bpm"),
            ("Keep the tempo — it's calm…", "Keep the tempo - it's calm."),
            ("ask Mark about it. Will you?", "ask ⟨person⟩ about it. Will you?"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input).text, expected, "{input}");
            assert_eq!(redact(expected).text, expected, "{expected} rebuilds to itself");
        }
    }

    #[test]
    fn counts_placeholders_and_kept_tokens() {
        let r = redact("Jane Doe's lead vocal is too loud");
        assert_eq!(r.counts, vec![(Placeholder::Person, 1)]);
        assert_eq!((r.tokens, r.kept), (7, 5));
    }
}
