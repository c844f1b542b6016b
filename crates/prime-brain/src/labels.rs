//! The current Prime Brain logic as a rule-based labeler (the brief's "seed
//! labels"), and the doctrine on which commands each mode allows.

use std::collections::BTreeMap;

use super::schema::*;
use super::vocabulary;

/// What the current logic would say and do for a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedLabel {
    /// Calm, number-free response text.
    pub response: String,
    /// The command it would issue, if any.
    pub command: Option<DawCommand>,
    /// The ALS channel the guidance goes out on.
    pub channel: AlsChannel,
    /// How strongly.
    pub intensity: Intensity,
}

/// True when a performance or health flag is critical: the one case where
/// passive modes may act.
pub fn critical_health(snapshot: &Snapshot) -> bool {
    snapshot.ai_analysis_flags.iter().any(|f| {
        f.severity == Severity::Critical && matches!(f.category, FlagCategory::Performance | FlagCategory::Health)
    })
}

/// The doctrine: may `mode` issue a command of type `kind`?
/// Passive: nothing, unless health is critical (then only non-intrusive
/// fixes). Learning: non-intrusive commands only. Active, optimizing: all.
pub fn allowed(mode: Mode, kind: &str, critical: bool) -> bool {
    let Some(spec) = vocabulary::command(kind) else {
        return false;
    };
    match mode {
        Mode::Passive => critical && !spec.intrusive,
        Mode::Learning => !spec.intrusive,
        Mode::Active | Mode::Optimizing => true,
    }
}

/// The doctrine on how loudly `mode` may speak: a call only when health is
/// critical; in passive mode, otherwise, only a whisper.
pub fn intensity_allowed(mode: Mode, intensity: Intensity, critical: bool) -> bool {
    critical
        || match intensity {
            Intensity::Whisper => true,
            Intensity::Nudge => mode != Mode::Passive,
            Intensity::Call => false,
        }
}

/// The seed label of one snapshot.
pub fn seed_label(snapshot: &Snapshot) -> SeedLabel {
    let metrics = &snapshot.audio_metrics;
    let strained = metrics.cpu_load > 0.85
        || metrics.dropouts > 0
        || snapshot.ai_analysis_flags.iter().any(|f| {
            f.severity >= Severity::High && matches!(f.category, FlagCategory::Performance | FlagCategory::Health)
        });
    let muddy = snapshot
        .ai_analysis_flags
        .iter()
        .any(|f| f.category == FlagCategory::Mix && f.severity >= Severity::Medium);
    let tense = snapshot.harmonic_state.tension > 0.7;
    let critical = critical_health(snapshot);

    let (command, channel, response) = if strained {
        let command = if metrics.buffer_size < 512 {
            DawCommand {
                kind: "engine.setBufferSize".into(),
                target: None,
                args: Some(BTreeMap::from([(
                    "size".into(),
                    serde_json::json!(metrics.buffer_size.saturating_mul(2)),
                )])),
            }
        } else {
            DawCommand {
                kind: "track.freeze".into(),
                target: Some("synth".into()),
                args: None,
            }
        };
        (
            Some(command),
            AlsChannel::Pressure,
            "The session is running warm; easing the load keeps you in flow.",
        )
    } else if muddy {
        (
            Some(DawCommand {
                kind: "mix.eqCut".into(),
                target: Some("bass".into()),
                args: Some(BTreeMap::from([("amount".into(), serde_json::json!("gentle"))])),
            }),
            AlsChannel::Temperature,
            "The low end feels crowded; a gentle cut would let it breathe.",
        )
    } else if tense {
        (None, AlsChannel::Energy, "Energy is rising; let it carry you.")
    } else {
        (None, AlsChannel::Pulse, "All calm; the pulse is steady.")
    };
    let command = command.filter(|c| allowed(snapshot.mode, &c.kind, critical));
    let intensity = if critical {
        Intensity::Call
    } else if snapshot.mode == Mode::Passive || command.is_none() {
        Intensity::Whisper
    } else {
        Intensity::Nudge
    };
    SeedLabel {
        response: response.to_string(),
        command,
        channel,
        intensity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_doctrine_keeps_passive_quiet_unless_health_is_critical() {
        assert!(!allowed(Mode::Passive, "mix.eqCut", false));
        assert!(allowed(Mode::Passive, "engine.setBufferSize", true));
        assert!(!allowed(Mode::Passive, "transport.stop", true));
        assert!(allowed(Mode::Learning, "mix.eqCut", false));
        assert!(!allowed(Mode::Learning, "track.mute", false));
        assert!(allowed(Mode::Active, "track.mute", false));
        assert!(!allowed(Mode::Active, "mix.unknown", false));
    }
}
