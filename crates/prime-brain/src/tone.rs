//! The calm voice: the phrasebook guidance is rendered from, and the tone
//! audit every guidance text must pass. Shared by the evaluator and the
//! instruction-tuning export.
//!
//! The audit is rule-based: one rule per [`ToneIssue`], each a word list or a
//! few patterns over the lowercased words of the text; a text is calm when no
//! rule fires. List entries also match their regular inflections ("settle":
//! "settled", "settling"). The rules follow the conventions of the labelled
//! set `tests/fixtures/tone-phrases.json`, on which a test measures them:
//! acronyms (CPU, LUFS) are jargon, not shouting; "now" is calm, "right now"
//! urgent; every spelled-out quantity is a number, a vague amount ("a little",
//! "a few bars") is not; one soft command is calm, stacked commands are not;
//! audio terms, even jargon, are cues.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use super::schema::{AlsChannel, Intensity};

/// Calm, number-free guidance text for a channel and intensity.
pub fn phrase(channel: AlsChannel, intensity: Intensity) -> &'static str {
    use AlsChannel::*;
    use Intensity::*;
    match (channel, intensity) {
        (Temperature, Whisper) => "The mix feels a touch warm.",
        (Temperature, Nudge) => "The low end feels crowded; a gentle cut would let it breathe.",
        (Temperature, Call) => "The mix is running hot; let it cool before going on.",
        (Energy, Whisper) => "Energy is rising; let it carry you.",
        (Energy, Nudge) => "The energy wants somewhere to go; open a little space.",
        (Energy, Call) => "The energy is spilling over; bring it back to center.",
        (Pulse, Whisper) => "All calm; the pulse is steady.",
        (Pulse, Nudge) => "The pulse could loop here and settle.",
        (Pulse, Call) => "The pulse is slipping; steady the groove.",
        (Pressure, Whisper) => "The room feels a little warm.",
        (Pressure, Nudge) => "The session is running warm; easing the load keeps you in flow.",
        (Pressure, Call) => "The session is overheating; ease the load now.",
    }
}

/// A reason a guidance text is not calm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ToneIssue {
    /// Harsh or judging words ("awful", "amateur", "a mistake").
    Harsh,
    /// Faulting the listener ("you broke", "you always", "because of you").
    Blame,
    /// Pressing for haste ("right now", "ASAP", "you must").
    Urgent,
    /// An exclamation mark, or a word in capitals that is not an acronym.
    Shouting,
    /// A digit in any script, or a quantity in words ("ninety percent",
    /// "twice", "half a second", "a few dB").
    Number,
    /// Engineering terms ("sidechain", "buffer", "true peak", "CPU").
    Jargon,
    /// Over 30 words or 160 characters.
    Long,
    /// Stacked bare commands ("Cut the bass. Lower the vocal.").
    Imperative,
    /// No musical or sensory reference at all ("Okay.").
    NoCue,
}

impl ToneIssue {
    /// The issue's label, as in the labelled phrase set.
    pub fn name(self) -> &'static str {
        match self {
            ToneIssue::Harsh => "harsh",
            ToneIssue::Blame => "blame",
            ToneIssue::Urgent => "urgent",
            ToneIssue::Shouting => "shouting",
            ToneIssue::Number => "number",
            ToneIssue::Jargon => "jargon",
            ToneIssue::Long => "long",
            ToneIssue::Imperative => "imperative",
            ToneIssue::NoCue => "no-cue",
        }
    }
}

/// Most words of a calm text.
const MAX_WORDS: usize = 30;
/// Most characters of a calm text.
const MAX_CHARS: usize = 160;

/// Harsh and judging words.
const HARSH: &str = "
    garbage terrible awful mistake amateur amateurish fake bad disaster disastrous unusable cheap lifeless
    embarrass dead boring sloppy junk wrong waste ruin horrible horrendous ugly useless pathetic stupid dumb
    idiot idiotic mess trash rubbish crap suck lame dreadful atrocious hideous worst worse poor lousy shoddy
    mediocre hopeless pointless incompetent clueless careless laughable ridiculous unlistenable painful
    annoying irritating nasty gross failure fail shame shameful disgrace appalling abysmal dire trainwreck
    unacceptable intolerable inexcusable";

/// Misdeeds blamed on "you" or "your …" (`{faults}` in [`BLAME`]).
const FAULTS: &str = "
    break broke broken ruin ignore overload overdo overdid overdone mess wreck botch forget forgot forgotten
    miss fail choose chose chosen skip neglect butcher destroy kill smash crush drown bury overcook blow blew
    blown screw spoil mangle overuse abuse lose lost made rush";

/// Faulting the listener; each alternative matches whole words.
const BLAME: &[&str] = &[
    r"you(?:'ve|'d| have| had| seem to have| seem to)? (?:\w+ly |just |again )?(?:{faults})",
    r"your (?:\w+ ){1,2}(?:{faults})",
    r"you (?:\w+ly )?(?:can't|cannot|couldn't)",
    r"you (?:\w+ly )?(?:did not|didn't|do not|don't|never) (?:know|listen|leave|check|hear|bother|care|think)",
    "you (?:always|never|keep|kept|constantly|continually|repeatedly)",
    "you(?:'re| are) (?:the (?:reason|problem|cause)|to blame|responsible|at fault)",
    "you (?:should|could)(?:'ve| have| know| quit| give up| be ashamed)",
    "your (?:fault|mistake|doing|problem)",
    r"your (?:\w+ ){0,2}(?:is|are|was|were) (?:the|a) (?:problem|issue|mistake|reason)",
    "if you(?:'d| had)|because of your?|on you|whoever|why (?:would|did|do) you|what were you|blame",
    r"again you|you \w+ed\b.*\bagain",
];

/// Pressing for haste; each alternative matches whole words.
const URGENT: &[&str] = &[
    "right (?:now|away)|immediate(?:ly)?|instantly|at once|straight away|this (?:instant|second|minute)",
    "asap|as soon as possible|urgent(?:ly)?|emergency|critical|pronto|hurry|without delay|don't wait",
    "no time to (?:lose|waste)|time is running out|now or never|before it's too late",
    "stop (?:everything|whatever|what you)|drop everything",
    r"must|gotta|(?:have|has|need|needs|got) to\b.*\bnow",
];

/// Urgent at the head of a clause, or anywhere in a command ("Fix it fast").
const HASTE: &str = "quick quickly fast";

/// Bare verbs that open a command.
const VERBS: &str = "
    cut lower raise fix turn delete kill flatten ease cool steady bring tighten tame widen narrow bounce pull
    push set stop mute solo remove add boost drop trim thin soften spread move make keep leave take try check
    use put get do send route reduce increase compress pan clear slow speed start play record save undo
    render export give open let lift shift nudge tuck loosen fade swap replace double quantize tune retune
    change redo rerun restart reset go listen act retake enable disable bypass mix automate edit copy paste
    duplicate split hit press click wait";

/// Engineering acronyms: jargon, not shouting.
const JARGON_ACRONYMS: &str = "
    cpu gpu dsp lufs rms eq daw midi vst aax asio lfo adsr adc dac fft hpf lpf bpf dbfs dbtp ssd usb ir vca fet";
/// Other acronyms that are not shouting.
const PLAIN_ACRONYMS: &str = "asap ok dj tv bpm db hz khz ms";

const JARGON: &str = "
    xrun underrun overrun dropout latency buffer threshold compressor compression limiter ratio sidechain
    clipping crossover frequency frequencies bus buses busses aux phase shelf shelving nyquist aliasing dither
    oversampling normalize normalization codec bitrate transient envelope oscillator resonance bandwidth
    headroom automation routing deadline jitter convolution lookahead multiband parametric polarity impedance
    attenuation interpolation denormal preamp";

/// Jargon of several words (hyphens split words: "high-pass" reads "high pass").
const JARGON_PHRASES: &[&str] = &[
    "sample rate|bit depth|true peak|gain (?:staging|reduction)|makeup gain|dynamic range|crest factor|q factor",
    "audio (?:engine|driver|thread)|thread pool|word ?clock|delay compensation",
    "(?:high|low|band) pass|mid side|dry wet|wet dry|noise floor|signal (?:chain|path)|impulse response",
];

/// Units of sound: numbers, and cues too.
const UNITS: &str = "db dbs decibel decibels hz khz mhz bpm ms msec millisecond milliseconds semitone semitones";

/// Quantities in words: cardinals, ordinals, fractions, multipliers, percent.
const QUANTITIES: &str = "
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
    seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred hundreds
    thousand thousands million millions billion dozen dozens first second third thirds fourth fifth sixth
    seventh eighth ninth tenth eleventh twelfth twentieth hundredth thousandth half halves halve halved
    quarter quarters twice thrice double doubled triple tripled quadruple percent percentage cent cents";

/// Musical and sensory references.
const CUES: &str = "
    mix master sound sonic song track tune music musical groove pulse beat rhythm tempo timing bar loop energy
    warm heat hot cool cold breathe breath air spacious space room flow steady calm settle ease relax rest
    pause pressure load session playback listen hear ear feel felt voice vocal sing singer bass kick snare
    drum hat cymbal percussion shaker guitar piano key synth pad string chord harmony melody hook lead verse
    chorus bridge intro outro drop breakdown fill build lift low mid high sub bright dark crisp sharp soft
    gentle loud quiet smooth rough thin thick full dense wide narrow stereo reverb delay echo tail fade
    crossfade edit punch attack body weight presence clear muddy boomy boxy crowd clutter distant close tight
    loose rush drag drift slip swing pocket downbeat phrase line texture tone colour color glow light heavy
    dynamic swell bounce silence ring sustain arrangement section instrument stem layer";
/// Cues taken as written, without inflections ("noted" is no cue).
const CUES_AS_WRITTEN: &str = "note notes take takes";

/// Suffixes of the regular inflections a word-list entry also matches.
const SUFFIXES: &[&str] = &[
    "s", "es", "d", "ed", "r", "er", "ers", "st", "est", "ing", "ingly", "edly", "y", "ly", "th", "ness",
];

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("valid regex")
}

/// A pattern matching any of the alternatives as whole words.
fn whole_words(alternatives: &[&str]) -> String {
    format!(r"\b(?:{})\b", alternatives.join("|"))
}

/// The words of a list, as written.
fn words(list: &str) -> HashSet<String> {
    list.split_whitespace().map(str::to_string).collect()
}

/// The words of a list with their regular inflections: "settle" also gives
/// "settled" and "settling", "hot" "hotter", "bury" "buried", "warm" "warmth".
fn inflected(list: &str) -> HashSet<String> {
    let vowel = |b: u8| b"aeiou".contains(&b);
    let mut forms = words(list);
    for entry in list.split_whitespace() {
        let mut stems = vec![entry.to_string()];
        stems.extend(entry.strip_suffix('e').map(str::to_string));
        stems.extend(entry.strip_suffix('y').map(|stem| format!("{stem}i")));
        // A short final syllable doubles its consonant: "hot", "hotter".
        if let [.., a, b, c] = entry.as_bytes()
            && !vowel(*a)
            && vowel(*b)
            && !vowel(*c)
            && !b"wxy".contains(c)
        {
            stems.push(format!("{entry}{}", *c as char));
        }
        for stem in &stems {
            forms.extend(SUFFIXES.iter().map(|suffix| format!("{stem}{suffix}")));
        }
    }
    forms
}

/// Engineering terms and their plurals, with the engineering acronyms.
fn jargon() -> HashSet<String> {
    let terms = JARGON.split_whitespace().chain(JARGON_ACRONYMS.split_whitespace());
    terms.flat_map(|term| [term.to_string(), format!("{term}s")]).collect()
}

static WORD: LazyLock<Regex> = LazyLock::new(|| regex(r"\p{L}+(?:'\p{L}+)*"));
/// Clause boundaries: punctuation, and "then" between commands.
static CLAUSE: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i)[.;:,!?]+|\bthen\b"));
static HARSH_WORDS: LazyLock<HashSet<String>> = LazyLock::new(|| inflected(HARSH));
static BLAME_PATTERN: LazyLock<Regex> = LazyLock::new(|| {
    let faults = inflected(FAULTS).into_iter().collect::<Vec<_>>().join("|");
    regex(&whole_words(BLAME).replace("{faults}", &faults))
});
static URGENT_PATTERN: LazyLock<Regex> = LazyLock::new(|| regex(&whole_words(URGENT)));
static HASTE_WORDS: LazyLock<HashSet<String>> = LazyLock::new(|| words(HASTE));
static COMMAND_VERBS: LazyLock<HashSet<String>> = LazyLock::new(|| words(VERBS));
static ACRONYMS: LazyLock<HashSet<String>> =
    LazyLock::new(|| words(JARGON_ACRONYMS).union(&words(PLAIN_ACRONYMS)).cloned().collect());
static NUMBER_WORDS: LazyLock<HashSet<String>> = LazyLock::new(|| words(&format!("{QUANTITIES} {UNITS}")));
static JARGON_WORDS: LazyLock<HashSet<String>> = LazyLock::new(jargon);
static JARGON_PATTERN: LazyLock<Regex> = LazyLock::new(|| regex(&whole_words(JARGON_PHRASES)));
/// Cues: the cue lists, units of sound and every audio term, jargon included.
static CUE_WORDS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let mut cues = inflected(CUES);
    cues.extend(words(CUES_AS_WRITTEN));
    cues.extend(words(UNITS));
    cues.extend(jargon());
    cues
});

/// A word in capitals (two or more) that is not a known acronym.
fn shouted(word: &str) -> bool {
    word.chars().filter(|c| c.is_uppercase()).count() >= 2
        && !word.chars().any(char::is_lowercase)
        && !ACRONYMS.contains(&word.to_lowercase())
}

/// Every tone issue of one guidance text, in [`ToneIssue`] order, each once.
pub fn tone_issues(text: &str) -> Vec<ToneIssue> {
    let text = text.replace('’', "'");
    let tokens: Vec<&str> = WORD.find_iter(&text).map(|m| m.as_str()).collect();
    let lower: Vec<String> = tokens.iter().map(|w| w.to_lowercase()).collect();
    let flat = lower.join(" ");
    let has = |set: &HashSet<String>| lower.iter().any(|w| set.contains(w));
    let clauses: Vec<Vec<String>> = CLAUSE
        .split(&text)
        .map(|clause| {
            WORD.find_iter(clause)
                .map(|m| m.as_str().to_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|clause| !clause.is_empty())
        .collect();
    // Clauses opening on a bare verb; three, or two and nothing else, are stacked.
    let commands = clauses.iter().filter(|c| COMMAND_VERBS.contains(&c[0])).count();
    let hasty = clauses.iter().any(|c| {
        HASTE_WORDS.contains(&c[0]) || (COMMAND_VERBS.contains(&c[0]) && c.iter().any(|w| HASTE_WORDS.contains(w)))
    });
    let jargon_phrase = JARGON_PATTERN.is_match(&flat);
    let checks = [
        (ToneIssue::Harsh, has(&HARSH_WORDS)),
        (ToneIssue::Blame, BLAME_PATTERN.is_match(&flat)),
        (ToneIssue::Urgent, hasty || URGENT_PATTERN.is_match(&flat)),
        (
            ToneIssue::Shouting,
            text.contains('!') || tokens.iter().any(|w| shouted(w)),
        ),
        (
            ToneIssue::Number,
            text.chars().any(|c| c.is_numeric() || c == '%') || has(&NUMBER_WORDS),
        ),
        (ToneIssue::Jargon, jargon_phrase || has(&JARGON_WORDS)),
        (
            ToneIssue::Long,
            tokens.len() > MAX_WORDS || text.chars().count() > MAX_CHARS,
        ),
        (
            ToneIssue::Imperative,
            commands >= 3 || (commands >= 2 && commands == clauses.len()),
        ),
        (ToneIssue::NoCue, !jargon_phrase && !has(&CUE_WORDS)),
    ];
    checks
        .into_iter()
        .filter_map(|(issue, found)| found.then_some(issue))
        .collect()
}

/// The tone audit of one guidance text: calm when it has no [`ToneIssue`].
pub fn tone_ok(text: &str) -> bool {
    tone_issues(text).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phrasebook_phrase_is_calm() {
        for channel in AlsChannel::ALL {
            for intensity in Intensity::ALL {
                let text = phrase(channel, intensity);
                assert!(tone_ok(text), "{text}: {:?}", tone_issues(text));
            }
        }
    }

    #[test]
    fn names_every_issue_of_a_harsh_text() {
        let text = "Your mix is garbage and you should quit; the energy is awful, ninety percent wasted.";
        assert_eq!(
            tone_issues(text),
            [ToneIssue::Harsh, ToneIssue::Blame, ToneIssue::Number]
        );
        assert!(!tone_ok(text));
    }

    #[test]
    fn follows_the_borderline_conventions() {
        let cases: [(&str, &[ToneIssue]); 8] = [
            ("The CPU feels warm.", &[ToneIssue::Jargon]),
            ("The mix feels warm NOW.", &[ToneIssue::Shouting]),
            ("Ease the load now.", &[]),
            ("Ease the load right now.", &[ToneIssue::Urgent]),
            ("The vocal is half a second late.", &[ToneIssue::Number]),
            ("Give it a few bars to settle.", &[]),
            ("You might let the bass settle.", &[]),
            ("Okay.", &[ToneIssue::NoCue]),
        ];
        for (text, issues) in cases {
            assert_eq!(tone_issues(text), issues, "{text}");
        }
    }

    /// Precision and recall of the not-calm verdict over the labelled set.
    #[test]
    fn calibrated_on_the_labelled_phrases() {
        let set: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../../../tests/fixtures/tone-phrases.json")).unwrap();
        let (mut caught, mut flagged, mut not_calm) = (0, 0, 0);
        for item in &set {
            let verdict = !tone_ok(item["text"].as_str().unwrap());
            let label = !item["calm"].as_bool().unwrap();
            caught += usize::from(verdict && label);
            flagged += usize::from(verdict);
            not_calm += usize::from(label);
        }
        let precision = caught as f64 / flagged as f64;
        let recall = caught as f64 / not_calm as f64;
        println!(
            "tone audit on {} phrases: precision {precision:.3}, recall {recall:.3}",
            set.len()
        );
        assert!(
            precision >= 0.98 && recall >= 0.98,
            "precision {precision:.3}, recall {recall:.3}"
        );
    }
}
