//! Finding and redacting personal data in free text.
//!
//! Detectors, applied in this order (earlier ones claim text first): URLs,
//! emails, IP addresses (validated by the standard parsers), paths (Unix,
//! macOS, home-relative, Windows drive and UNC), file names with media or
//! document extensions, phone numbers (7–15 digits in phone shapes), and
//! person names (capitalized words outside a vocabulary of ordinary words).
//! A name followed by a track word becomes the track's archetype ("Maya vox
//! take 3" → "the vocals track take 3"); other names become "someone".
//!
//! The same [`findings`] function verifies sanitize's output: redacted text
//! must produce no findings at all.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

use super::vocabulary::archetype_of;

/// The kinds of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `http://…`, `www.…`
    Url,
    /// `name@example.org`
    Email,
    /// IPv4 or IPv6 address.
    Ip,
    /// A file system path.
    Path,
    /// A file name with an extension.
    File,
    /// A phone number.
    Phone,
    /// A person's name.
    Person,
}

impl Kind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Url => "url",
            Kind::Email => "email",
            Kind::Ip => "ip",
            Kind::Path => "path",
            Kind::File => "file",
            Kind::Phone => "phone",
            Kind::Person => "person",
        }
    }

    fn replacement(self) -> &'static str {
        match self {
            Kind::Url => "[link]",
            Kind::Email => "[email]",
            Kind::Ip => "[address]",
            Kind::Path => "[path]",
            Kind::File => "[file]",
            Kind::Phone => "[phone]",
            Kind::Person => "someone",
        }
    }
}

/// One piece of personal data in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it is.
    pub kind: Kind,
    /// Where, in bytes.
    pub range: Range<usize>,
}

static URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?i)\b(?:[a-z][a-z0-9+.-]*://|www\.)[^\s<>"'`]+"#).expect("valid regex"));
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[a-z0-9._%+-]+(?:@|\s?\[at\]\s?)[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}").expect("valid regex")
});
static IP_CANDIDATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9A-Fa-f]*[:.][0-9A-Fa-f:.%]*[0-9A-Fa-f:]").expect("valid regex"));
static UNIX_PATH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?:^|[\s"'(\[=:,])((?:~|\.{1,2})?/[^\s"'<>()\[\],;]+)"#).expect("valid regex"));
static WINDOWS_PATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b[a-z]:[\\/][^\s"'<>|,;]*|\\\\[^\s\\"']+\\[^\s"'<>|,;]+"#).expect("valid regex")
});
static FILE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b[\w-]+\.(?:wav|mp3|aiff?|flac|ogg|m4a|aac|mid|midi|als|alp|logicx|ptx|ptf|flp|rpp|cpr|band|sesx|zip|rar|7z|txt|pdf|docx?|xlsx?|json|png|jpe?g|gif|mov|mp4|nki|fxp|sfz)\b",
    )
    .expect("valid regex")
});
static PHONE_CANDIDATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:\+|\(|\b)\d[\d\s().-]{5,}\d\b").expect("valid regex"));
static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b\p{Lu}\p{Ll}+(?:'s)?\b").expect("valid regex"));

/// Capitalized words that are not names: sentence starters and Studio terms.
const ORDINARY: &[&str] = &[
    "A",
    "About",
    "Add",
    "After",
    "Again",
    "All",
    "Also",
    "An",
    "And",
    "Any",
    "Are",
    "Arrange",
    "As",
    "At",
    "Back",
    "Balance",
    "Bass",
    "Be",
    "Before",
    "Bloom",
    "Boost",
    "Both",
    "Brain",
    "Bridge",
    "Bring",
    "Bus",
    "But",
    "By",
    "Can",
    "Check",
    "Chorus",
    "Clean",
    "Compress",
    "Consider",
    "Could",
    "Cut",
    "Do",
    "Does",
    "Done",
    "Drop",
    "Drums",
    "Duplicate",
    "Each",
    "Easy",
    "Energy",
    "Even",
    "Every",
    "Fade",
    "Feel",
    "Few",
    "Fine",
    "Fix",
    "Flow",
    "For",
    "Free",
    "Freeze",
    "From",
    "Gentle",
    "Get",
    "Give",
    "Go",
    "Good",
    "Great",
    "Guitar",
    "Had",
    "Has",
    "Have",
    "He",
    "Healthy",
    "Her",
    "Here",
    "His",
    "Hold",
    "How",
    "If",
    "In",
    "Into",
    "Intro",
    "Is",
    "It",
    "Its",
    "Just",
    "Keep",
    "Keys",
    "Last",
    "Later",
    "Leave",
    "Less",
    "Let",
    "Let's",
    "Lift",
    "Light",
    "Like",
    "Listen",
    "Loop",
    "Looks",
    "Lower",
    "Make",
    "Maybe",
    "Master",
    "Mix",
    "Mixx",
    "Mode",
    "More",
    "Most",
    "Move",
    "Much",
    "Mute",
    "My",
    "Need",
    "New",
    "Next",
    "Nice",
    "No",
    "Not",
    "Now",
    "Of",
    "Ok",
    "Okay",
    "On",
    "Once",
    "One",
    "Only",
    "Open",
    "Or",
    "Our",
    "Out",
    "Outro",
    "Over",
    "Play",
    "Please",
    "Prime",
    "Pressure",
    "Pulse",
    "Quiet",
    "Raise",
    "Ready",
    "Recall",
    "Reduce",
    "Remove",
    "Reverb",
    "Right",
    "Room",
    "Save",
    "See",
    "Set",
    "She",
    "Should",
    "Show",
    "Since",
    "Slow",
    "So",
    "Solo",
    "Some",
    "Something",
    "Sounds",
    "Start",
    "Still",
    "Stop",
    "Studio",
    "Such",
    "Sure",
    "Synth",
    "Take",
    "Tempo",
    "Than",
    "Thanks",
    "That",
    "That's",
    "The",
    "Their",
    "Then",
    "There",
    "These",
    "They",
    "This",
    "Those",
    "Tighten",
    "Time",
    "To",
    "Too",
    "Try",
    "Turn",
    "Up",
    "Use",
    "Verse",
    "Very",
    "Vocals",
    "Wait",
    "Want",
    "Warm",
    "Warmth",
    "Was",
    "We",
    "Well",
    "What",
    "When",
    "Where",
    "Which",
    "While",
    "Who",
    "Why",
    "Will",
    "With",
    "Would",
    "Yes",
    "Yet",
    "You",
    "Your",
    "Temperature",
    "Whisper",
    "Nudge",
    "Call",
    "Someone",
    "Session",
    "Track",
    "Vocal",
    "Lead",
    "Kick",
    "Snare",
    "Piano",
    "Pad",
    "Sub",
    "Hook",
    "Tension",
    "Engine",
    "Low",
    "High",
    "Dropouts",
    "Latency",
    "Buffer",
    "Harmonic",
    "Passive",
    "Active",
    "Learning",
    "Optimizing",
    "Key",
    "Scale",
    "Major",
    "Minor",
    "Beat",
    "Bar",
    "Groove",
    "Melody",
    "Harmony",
    "Chord",
    "Note",
    "Noise",
    "Everything",
    "Nothing",
    "Sound",
    "Level",
    "Levels",
    "Send",
    "Return",
    "Export",
    "Bounce",
    "Render",
];

/// Every piece of personal data in `text`, non-overlapping, in order.
/// Every finding but a name covers its whole whitespace-delimited token, and
/// detections that overlap merge into one finding covering both (of the
/// longer one's kind), so no fragment survives redaction.
pub fn findings(text: &str) -> Vec<Finding> {
    let mut found: Vec<Finding> = Vec::new();
    let claim = |kind: Kind, range: Range<usize>, found: &mut Vec<Finding>| {
        found.push(Finding { kind, range });
    };
    for m in URL.find_iter(text) {
        claim(Kind::Url, m.range(), &mut found);
    }
    for m in EMAIL.find_iter(text) {
        claim(Kind::Email, m.range(), &mut found);
    }
    for m in IP_CANDIDATE.find_iter(text) {
        let candidate = m.as_str().trim_end_matches(['.', ':']);
        let bare = candidate.split('%').next().unwrap_or(candidate);
        if bare.parse::<Ipv4Addr>().is_ok() || (bare.contains(':') && bare.parse::<Ipv6Addr>().is_ok()) {
            claim(Kind::Ip, m.start()..m.start() + candidate.len(), &mut found);
        }
    }
    for m in WINDOWS_PATH.find_iter(text) {
        claim(Kind::Path, m.range(), &mut found);
    }
    for captures in UNIX_PATH.captures_iter(text) {
        let path = captures.get(1).expect("group 1 always matches");
        // A lone slash between words ("4/4", "and/or") is not a path.
        if path.as_str().len() > 1 {
            claim(Kind::Path, path.range(), &mut found);
        }
    }
    for m in FILE.find_iter(text) {
        claim(Kind::File, m.range(), &mut found);
    }
    for m in PHONE_CANDIDATE.find_iter(text) {
        let digits = m.as_str().chars().filter(char::is_ascii_digit).count();
        if (7..=15).contains(&digits) {
            claim(Kind::Phone, m.range(), &mut found);
        }
    }
    for m in WORD.find_iter(text) {
        let word = m.as_str();
        let stem = word.strip_suffix("'s").unwrap_or(word);
        if !ORDINARY.contains(&word) && !ORDINARY.contains(&stem) {
            claim(Kind::Person, m.range(), &mut found);
        }
    }
    // Anything but a name takes its whole whitespace-delimited token: cutting
    // a token in two would leave fragments that read as new words or paths.
    for finding in &mut found {
        if finding.kind != Kind::Person {
            let start = text[..finding.range.start]
                .char_indices()
                .rev()
                .find(|(_, c)| c.is_whitespace())
                .map_or(0, |(i, c)| i + c.len_utf8());
            let end = text[finding.range.end..]
                .find(char::is_whitespace)
                .map_or(text.len(), |i| finding.range.end + i);
            finding.range = start..end;
        }
    }
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

/// The text with personal data replaced, and how many of each kind.
pub fn redact(text: &str) -> (String, BTreeMap<Kind, usize>) {
    let found = findings(text);
    let mut counts = BTreeMap::new();
    if found.is_empty() {
        return (text.to_string(), counts);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut index = 0;
    while index < found.len() {
        let finding = &found[index];
        out.push_str(&text[at..finding.range.start]);
        *counts.entry(finding.kind).or_insert(0) += 1;
        at = finding.range.end;
        if finding.kind == Kind::Person
            && let Some((archetype, end)) = track_after(text, finding.range.end)
        {
            out.push_str("the ");
            out.push_str(archetype);
            out.push_str(" track");
            at = end;
            // Skip findings swallowed by the track phrase.
            while index + 1 < found.len() && found[index + 1].range.start < end {
                index += 1;
            }
        } else {
            out.push_str(finding.kind.replacement());
        }
        index += 1;
    }
    out.push_str(&text[at..]);
    (out, counts)
}

/// The result of [`redact_verified`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    /// The redacted text.
    pub text: String,
    /// Redactions by kind.
    pub counts: Vec<(Kind, usize)>,
    /// The first kind of personal data still found in `text` by a second
    /// scan (`None` when clean).
    pub residue: Option<Kind>,
}

/// Distinct texts remembered per thread before the memo is cleared.
const MEMO_LIMIT: usize = 65_536;

thread_local! {
    static MEMO: std::cell::RefCell<std::collections::HashMap<String, std::rc::Rc<Redacted>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Redacts `text` and scans the result again. Snapshots repeat most of their
/// text (conversation windows, Bloom actions), so results are memoized per
/// thread; the memo is bounded.
pub fn redact_verified(text: &str) -> std::rc::Rc<Redacted> {
    if let Some(hit) = MEMO.with(|memo| memo.borrow().get(text).cloned()) {
        return hit;
    }
    let (clean, counts) = redact(text);
    let residue = findings(&clean).first().map(|f| f.kind);
    let result = std::rc::Rc::new(Redacted {
        text: clean,
        counts: counts.into_iter().collect(),
        residue,
    });
    MEMO.with(|memo| {
        let mut memo = memo.borrow_mut();
        if memo.len() >= MEMO_LIMIT {
            memo.clear();
        }
        memo.insert(text.to_string(), result.clone());
    });
    result
}

/// A track word right after a name: its archetype and the end of that word.
fn track_after(text: &str, from: usize) -> Option<(&'static str, usize)> {
    let rest = &text[from..];
    let mut offset = 0;
    for (n, word) in rest.split_inclusive(char::is_whitespace).enumerate() {
        if n >= 2 {
            break;
        }
        let trimmed = word.trim().trim_matches(|c: char| !c.is_alphanumeric());
        if !trimmed.is_empty()
            && let Some(archetype) = archetype_of(trimmed)
        {
            let end = from + offset + word.trim_end().len();
            return Some((archetype, end));
        }
        offset += word.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_each_kind_and_leaves_ordinary_text() {
        let cases = [
            ("mail maya.k+mix@studio.example.com now", "mail [email] now"),
            (
                "see https://x.example/a?b=1 and www.example.org",
                "see [link] and [link]",
            ),
            (
                "host 192.168.1.20 or fe80::1ff:fe23:4567:890a",
                "host [address] or [address]",
            ),
            ("saved to /home/maya/projects/song", "saved to [path]"),
            (r"saved to C:\Users\john\Music", "saved to [path]"),
            ("bounce final_mix_v2.wav", "bounce [file]"),
            ("call +44 20 7946 0958 today", "call [phone] today"),
            ("muted Maya vox take 3", "muted the vocals track take 3"),
            ("Ahmed wants more reverb", "someone wants more reverb"),
            (
                "Keep the tempo at 4/4 and/or loop the chorus",
                "Keep the tempo at 4/4 and/or loop the chorus",
            ),
            // An address inside a path: one finding covers both.
            ("/-::0", "[address]"),
            // Tokens end at any whitespace, multi-byte ones too.
            ("\u{2000}/etc/x y", "\u{2000}[path] y"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input).0, expected, "{input}");
            assert!(findings(&redact(input).0).is_empty(), "{input} redacts cleanly");
        }
    }
}
