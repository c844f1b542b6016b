//! The closed vocabulary free text is rebuilt from, and the typed
//! placeholders that stand for everything else.
//!
//! Sanitized free text holds only words of [`is_word`] (the list in
//! `lexicon/words.txt`, the command vocabulary's parts and the track
//! archetypes), placeholders ([`Placeholder`]), ASCII punctuation and single
//! spaces. The lists ship with the project; their hash ([`fingerprint`]) is a
//! fact of the sanitize step, so editing them reruns it.
//!
//! A word is a maximal run of letters, with apostrophes inside it ("don't");
//! a trailing possessive (`'s`, `'`) is not part of the word looked up.
//! Lookup ignores case, so a word not in the list never survives in any case,
//! script or spelling.

use std::collections::HashSet;
use std::sync::LazyLock;

use super::vocabulary;

const WORDS: &str = include_str!("lexicon/words.txt");
const NAMES: &str = include_str!("lexicon/names.txt");

/// Entries of a list file: one per line, `#` comments and blank lines skipped.
fn entries(list: &'static str) -> impl Iterator<Item = &'static str> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

static VOCABULARY: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let mut words: HashSet<String> = entries(WORDS).map(str::to_string).collect();
    // Command types are words too ("mix.eqCut" reads as "mix", "eqcut").
    for command in &vocabulary::COMMANDS {
        words.extend(command.kind.split('.').map(str::to_lowercase));
    }
    words.extend(vocabulary::ARCHETYPES.iter().map(|a| a.to_string()));
    words.insert(vocabulary::NONE.to_string());
    words
});

static PEOPLE: LazyLock<HashSet<&'static str>> = LazyLock::new(|| entries(NAMES).collect());

/// The word looked up for a letter run: lowercase, without a trailing
/// possessive. Borrowed when the run is already in that form (the common case).
fn lookup_form(run: &str) -> std::borrow::Cow<'_, str> {
    let stem = |word: &str| -> usize {
        word.strip_suffix("'s")
            .or_else(|| word.strip_suffix("'S"))
            .or_else(|| word.strip_suffix('\''))
            .unwrap_or(word)
            .len()
    };
    if run.bytes().all(|b| b.is_ascii_lowercase() || b == b'\'') {
        return run[..stem(run)].into();
    }
    let lower = run.to_lowercase();
    let end = stem(&lower);
    let mut lower = lower;
    lower.truncate(end);
    lower.into()
}

/// True when the letter run `run` (any case, possessive allowed) is in the
/// closed vocabulary.
pub fn is_word(run: &str) -> bool {
    VOCABULARY.contains(lookup_form(run).as_ref())
}

/// True when the letter run `run` is a known given name or surname (used
/// only to name what was removed, never to decide what stays).
pub fn is_name(run: &str) -> bool {
    PEOPLE.contains(lookup_form(run).as_ref())
}

/// BLAKE3 of the word and name lists (a step fact of sanitize).
pub fn fingerprint() -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(WORDS.as_bytes()).update(b"\0").update(NAMES.as_bytes());
    hasher.finalize().to_hex()[..16].to_string()
}

/// The length in bytes of the letter run at the start of `text` (letters,
/// and apostrophes followed by a letter), 0 when `text` does not start
/// with a letter.
pub fn letter_run(text: &str) -> usize {
    let mut end = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let inner_apostrophe = c == '\'' && end > 0 && chars.peek().is_some_and(|(_, next)| next.is_alphabetic());
        if c.is_alphabetic() || inner_apostrophe {
            end = i + c.len_utf8();
        } else if c == '\'' && end > 0 {
            // A trailing possessive apostrophe ("drums'") belongs to the word.
            end = i + 1;
            break;
        } else {
            break;
        }
    }
    end
}

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Placeholder {
    /// A person's name.
    Person,
    /// An email address or phone number, plain or obfuscated.
    Contact,
    /// A URL or a web address.
    Link,
    /// A network or postal address.
    Address,
    /// A file system path or file name.
    Path,
    /// A social media handle.
    Handle,
    /// A number (counts, card and account numbers, dates).
    Number,
    /// A word outside the vocabulary that no detector named.
    Word,
}

impl Placeholder {
    /// Every placeholder.
    pub const ALL: [Placeholder; 8] = [
        Placeholder::Person,
        Placeholder::Contact,
        Placeholder::Link,
        Placeholder::Address,
        Placeholder::Path,
        Placeholder::Handle,
        Placeholder::Number,
        Placeholder::Word,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Person => "person",
            Placeholder::Contact => "contact",
            Placeholder::Link => "link",
            Placeholder::Address => "address",
            Placeholder::Path => "path",
            Placeholder::Handle => "handle",
            Placeholder::Number => "number",
            Placeholder::Word => "word",
        }
    }

    /// The text that stands in sanitized output: `⟨person⟩`.
    pub fn text(self) -> &'static str {
        match self {
            Placeholder::Person => "⟨person⟩",
            Placeholder::Contact => "⟨contact⟩",
            Placeholder::Link => "⟨link⟩",
            Placeholder::Address => "⟨address⟩",
            Placeholder::Path => "⟨path⟩",
            Placeholder::Handle => "⟨handle⟩",
            Placeholder::Number => "⟨number⟩",
            Placeholder::Word => "⟨word⟩",
        }
    }

    /// The placeholder `text` starts with, if any.
    pub fn at_start(text: &str) -> Option<Placeholder> {
        if !text.starts_with('⟨') {
            return None;
        }
        Placeholder::ALL.into_iter().find(|p| text.starts_with(p.text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_looked_up_in_any_case_and_names_are_not_words() {
        assert!(is_word("loud") && is_word("LOUD") && is_word("Vocal's"));
        assert!(is_word("eqCut") && is_word("vocals") && is_word("don't"));
        for name in ["jane", "JANE", "Smith", "McDonald", "张伟", "gmail", "com"] {
            assert!(!is_word(name), "{name}");
        }
        assert!(is_name("Jane") && is_name("smith"));
    }

    #[test]
    fn letter_runs_keep_inner_apostrophes() {
        assert_eq!(letter_run("don't stop"), 5);
        assert_eq!(letter_run("drums' level"), 6);
        assert_eq!(letter_run("张伟 x"), "张伟".len());
        assert_eq!(letter_run("'quoted"), 0);
        assert_eq!(letter_run("a1"), 1);
    }

    /// The lists keep their promises: well-formed, and a name is a word only
    /// where `words.txt` says so on purpose (its `# ambiguous` section).
    #[test]
    fn the_lists_are_well_formed_and_names_stay_out_of_the_vocabulary() {
        let mut ambiguous = HashSet::new();
        let mut section = "";
        for line in WORDS.lines().map(str::trim) {
            if let Some(title) = line.strip_prefix('#') {
                section = title.trim();
            } else if !line.is_empty() {
                assert!(
                    line.chars().all(|c| c.is_ascii_lowercase() || c == '\''),
                    "words.txt: `{line}`"
                );
                if section.starts_with("ambiguous") {
                    ambiguous.insert(line);
                }
            }
        }
        for name in entries(NAMES) {
            assert!(
                !entries(WORDS).any(|w| w == name) || ambiguous.contains(name),
                "`{name}` is in names.txt and words.txt outside `# ambiguous`"
            );
        }
        assert!(VOCABULARY.len() > 3000 && PEOPLE.len() > 1500);
        // The verifier checks letter runs on their own ("don't" as "don" and
        // "t"): every part of a word with an apostrophe is a word too.
        for word in VOCABULARY.iter().filter(|w| w.contains('\'')) {
            for part in word.split('\'') {
                assert!(VOCABULARY.contains(part), "`{part}` of `{word}` is not a word");
            }
        }
    }
}
