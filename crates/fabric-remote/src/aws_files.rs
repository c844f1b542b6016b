//! The usual AWS files, for what the environment does not set: keys from
//! the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//! `~/.aws/credentials`), region and endpoint from the config file
//! (`AWS_CONFIG_FILE`, else `~/.aws/config`), in profile `AWS_PROFILE` (else
//! `default`). The environment always wins, as with the AWS tools.

use std::collections::BTreeMap;
use std::path::PathBuf;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

/// `builder` with every setting the environment leaves unset taken from
/// the AWS files, where they have it.
pub fn fill_in(mut builder: AmazonS3Builder) -> AmazonS3Builder {
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let file = |variable: &str, default: &str| {
        std::env::var_os(variable)
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".aws").join(default)))
    };
    let credentials = file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
        .and_then(|path| section(&std::fs::read_to_string(path).ok()?, &profile));
    // The config file names every profile but the default `profile NAME`.
    let config_section = if profile == "default" {
        profile.clone()
    } else {
        format!("profile {profile}")
    };
    let config = file("AWS_CONFIG_FILE", "config")
        .and_then(|path| section(&std::fs::read_to_string(path).ok()?, &config_section));
    let settings = [
        (&credentials, "aws_access_key_id", AmazonS3ConfigKey::AccessKeyId),
        (
            &credentials,
            "aws_secret_access_key",
            AmazonS3ConfigKey::SecretAccessKey,
        ),
        (&credentials, "aws_session_token", AmazonS3ConfigKey::Token),
        (&config, "region", AmazonS3ConfigKey::Region),
        (&config, "endpoint_url", AmazonS3ConfigKey::Endpoint),
    ];
    for (found, name, key) in settings {
        if builder.get_config_value(&key).is_none()
            && let Some(value) = found.as_ref().and_then(|s| s.get(name))
        {
            builder = builder.with_config(key, value);
        }
    }
    builder
}

/// The `key = value` lines of section `[name]` of an INI text.
fn section(text: &str, name: &str) -> Option<BTreeMap<String, String>> {
    let mut found = None;
    let mut current = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = header.trim() == name;
            if current {
                found.get_or_insert_with(BTreeMap::new);
            }
        } else if current && let Some((key, value)) = line.split_once('=') {
            found
                .get_or_insert_with(BTreeMap::new)
                .insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_section_is_read_and_no_other() {
        let text = "# keys\n[default]\naws_access_key_id = A\n\n[work]\naws_access_key_id=B\n; note\naws_secret_access_key = s = t\n";
        assert_eq!(section(text, "default").unwrap()["aws_access_key_id"], "A");
        let work = section(text, "work").unwrap();
        assert_eq!(work["aws_access_key_id"], "B");
        assert_eq!(work["aws_secret_access_key"], "s = t");
        assert_eq!(work.len(), 2);
        assert!(section(text, "home").is_none());
    }
}
