//! `[stage.NAME.resources]`: what a stage asks of a cluster scheduler —
//! cpus, memory, gpus, a time limit, a partition. Checked when the manifest
//! loads like every other key; the local executor ignores them, and they do
//! not enter the fingerprint (they change where a stage runs, not what it
//! makes).

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// A stage's resource requests; `None` leaves the cluster's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU cores for the stage's one task.
    pub cpus: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    /// GPUs.
    pub gpus: Option<u32>,
    /// Time limit in seconds.
    pub time_seconds: Option<u64>,
    /// Partition (or comma-separated partitions) to run in.
    pub partition: Option<String>,
}

/// The table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    cpus: Option<Spanned<i64>>,
    memory: Option<Spanned<toml::Value>>,
    gpus: Option<Spanned<i64>>,
    time: Option<Spanned<toml::Value>>,
    partition: Option<Spanned<String>>,
}

/// A value that is not valid (a request, a setting, a matrix): its byte range, what
/// is wrong, and how to write it.
#[derive(Debug)]
pub struct Invalid {
    /// Where the value is.
    pub span: std::ops::Range<usize>,
    /// What is wrong.
    pub message: String,
    /// How to write it.
    pub hint: &'static str,
}

impl RawResources {
    /// The checked requests, or every value that is wrong.
    pub fn check(&self) -> Result<Resources, Vec<Invalid>> {
        let mut invalid = Vec::new();
        let resources = Resources {
            cpus: checked(
                &self.cpus,
                &mut invalid,
                |n| u32::try_from(*n).ok().filter(|n| *n > 0),
                |n| {
                    (
                        format!("`cpus = {n}` is not a positive number of cores"),
                        "write e.g. `cpus = 4`",
                    )
                },
            ),
            memory_mib: checked(&self.memory, &mut invalid, memory_mib, |value| {
                (
                    format!("`memory = {value}` is not an amount of memory"),
                    "write MiB as a number (`memory = 4096`) or a size with a unit K, M, G or T (`memory = \"4G\"`)",
                )
            }),
            gpus: checked(
                &self.gpus,
                &mut invalid,
                |n| u32::try_from(*n).ok(),
                |n| (format!("`gpus = {n}` is not a number of GPUs"), "write e.g. `gpus = 1`"),
            ),
            time_seconds: checked(&self.time, &mut invalid, seconds, |value| {
                (
                    format!("`time = {value}` is not a time limit"),
                    "write minutes as a number (`time = 90`) or Slurm's \"[DAYS-]HOURS:MINUTES:SECONDS\" (`time = \"1-12:00:00\"`)",
                )
            }),
            partition: checked(
                &self.partition,
                &mut invalid,
                |name| partition(name),
                |name| {
                    (
                        format!("`partition = {name:?}` is not a partition name"),
                        "write a name of letters, digits, `_`, `-` or `.` (several separated by commas)",
                    )
                },
            ),
        };
        if invalid.is_empty() {
            Ok(resources)
        } else {
            Err(invalid)
        }
    }
}

/// The value read by `read`, or None with what is wrong noted in `invalid`.
fn checked<T, U>(
    value: &Option<Spanned<T>>,
    invalid: &mut Vec<Invalid>,
    read: impl Fn(&T) -> Option<U>,
    wrong: impl Fn(&T) -> (String, &'static str),
) -> Option<U> {
    let value = value.as_ref()?;
    let read = read(value.get_ref());
    if read.is_none() {
        let (message, hint) = wrong(value.get_ref());
        invalid.push(Invalid {
            span: value.span(),
            message,
            hint,
        });
    }
    read
}

/// A partition name, or several separated by commas.
fn partition(name: &str) -> Option<String> {
    let valid = name
        .split(',')
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)));
    valid.then(|| name.to_string())
}

/// MiB from a number of MiB or a size with a unit (K, M, G, T; binary).
fn memory_mib(value: &toml::Value) -> Option<u64> {
    match value {
        toml::Value::Integer(mib) => u64::try_from(*mib).ok().filter(|mib| *mib > 0),
        toml::Value::String(text) => {
            let text = text.trim();
            let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
            let (digits, unit) = text.split_at(split);
            let amount: u64 = digits.parse().ok().filter(|n| *n > 0)?;
            let unit = unit.strip_suffix(['B', 'b']).unwrap_or(unit);
            match unit.to_ascii_uppercase().as_str() {
                "K" => Some(amount.div_ceil(1024)),
                "" | "M" => Some(amount),
                "G" => amount.checked_mul(1024),
                "T" => amount.checked_mul(1024 * 1024),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Seconds from a number of minutes or `[DAYS-]HOURS:MINUTES:SECONDS`
/// (also `MINUTES`, `MINUTES:SECONDS`, `HOURS:MINUTES:SECONDS`,
/// `DAYS-HOURS` and `DAYS-HOURS:MINUTES`, as Slurm reads them).
fn seconds(value: &toml::Value) -> Option<u64> {
    let total = match value {
        toml::Value::Integer(minutes) => u64::try_from(*minutes).ok()?.checked_mul(60)?,
        toml::Value::String(text) => {
            let number = |part: &str| -> Option<u64> {
                (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| part.parse().ok())
                    .flatten()
            };
            let (days, clock) = match text.trim().split_once('-') {
                Some((days, clock)) => (Some(number(days)?), clock),
                None => (None, text.trim()),
            };
            let parts: Vec<u64> = clock.split(':').map(number).collect::<Option<_>>()?;
            let (hours, minutes, seconds) = match (days, parts.as_slice()) {
                (None, [m]) => (0, *m, 0),
                (None, [m, s]) => (0, *m, *s),
                (_, [h, m, s]) => (*h, *m, *s),
                (Some(_), [h]) => (*h, 0, 0),
                (Some(_), [h, m]) => (*h, *m, 0),
                _ => return None,
            };
            // Only the leading field of a clock may exceed its unit.
            let bounded = match (days, parts.len()) {
                (None, 1) => true,
                (None, 2) => seconds < 60,
                _ => minutes < 60 && seconds < 60,
            };
            if !bounded {
                return None;
            }
            days.unwrap_or(0)
                .checked_mul(86_400)?
                .checked_add(hours.checked_mul(3600)?)?
                .checked_add(minutes.checked_mul(60)?)?
                .checked_add(seconds)?
        }
        _ => return None,
    };
    (total > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> toml::Value {
        toml::Value::String(value.into())
    }

    #[test]
    fn memory_reads_mib_and_units() {
        assert_eq!(memory_mib(&toml::Value::Integer(512)), Some(512));
        assert_eq!(memory_mib(&text("4G")), Some(4096));
        assert_eq!(memory_mib(&text("4gb")), Some(4096));
        assert_eq!(memory_mib(&text("1536K")), Some(2));
        assert_eq!(memory_mib(&text("1T")), Some(1024 * 1024));
        for bad in ["", "G", "4X", "-4G", "4.5G", "0"] {
            assert_eq!(memory_mib(&text(bad)), None, "{bad:?}");
        }
        assert_eq!(memory_mib(&toml::Value::Integer(0)), None);
        assert_eq!(memory_mib(&toml::Value::Boolean(true)), None);
    }

    #[test]
    fn time_reads_minutes_and_slurm_forms() {
        assert_eq!(seconds(&toml::Value::Integer(90)), Some(5400));
        assert_eq!(seconds(&text("30")), Some(1800));
        assert_eq!(seconds(&text("5:30")), Some(330));
        assert_eq!(seconds(&text("2:00:00")), Some(7200));
        assert_eq!(seconds(&text("1-12:00:00")), Some(129_600));
        assert_eq!(seconds(&text("2-6")), Some(194_400));
        assert_eq!(seconds(&text("1-0:30")), Some(88_200));
        for bad in ["", "1:2:3:4", "1:60:00", "5:75", "a", "1-", "-5", "0", "0:00:00"] {
            assert_eq!(seconds(&text(bad)), None, "{bad:?}");
        }
        assert_eq!(seconds(&toml::Value::Integer(-1)), None);
    }
}
