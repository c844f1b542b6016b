//! `[workspace.remote]`: a shared cache that clones, colleagues and CI push
//! results to and pull them from. The manifest names where it is and when
//! it is used; credentials come only from the environment, never from here.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::resources::Invalid;

/// Where a remote lives, as its URL says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteLocation {
    /// `s3://BUCKET/PREFIX`: an S3 bucket (endpoint, region and keys from
    /// the `AWS_*` environment variables).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix everything is kept under (may be empty).
        prefix: String,
    },
    /// `webdav+http(s)://…` or `http(s)://…`: a WebDAV collection.
    WebDav {
        /// The collection's `http(s)://` URL, with no trailing slash.
        url: String,
    },
}

impl RemoteLocation {
    /// Reads a remote URL; the error says what is wrong.
    pub fn parse(url: &str) -> Result<RemoteLocation, String> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if let Some((_, after)) = bucket.split_once('@') {
                return Err(format!(
                    "the URL carries credentials (`s3://***@{after}`); the manifest is committed, so they never go in it"
                ));
            }
            if bucket.is_empty() {
                return Err(format!("`{url}` names no bucket"));
            }
            return Ok(RemoteLocation::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        let http = url.strip_prefix("webdav+").unwrap_or(url);
        let Some(authority) = http.strip_prefix("http://").or_else(|| http.strip_prefix("https://")) else {
            return Err(format!("`{url}` is not an s3://, webdav+http(s):// or http(s):// URL"));
        };
        let host = authority.split('/').next().unwrap_or_default();
        if let Some((_, rest)) = authority.split_once('@').filter(|_| host.contains('@')) {
            return Err(format!(
                "the URL carries credentials (`…://***@{rest}`); the manifest is committed, so they never go in it"
            ));
        }
        if host.is_empty() {
            return Err(format!("`{url}` names no host"));
        }
        Ok(RemoteLocation::WebDav {
            url: http.trim_end_matches('/').to_string(),
        })
    }
}

impl std::fmt::Display for RemoteLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteLocation::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RemoteLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            RemoteLocation::WebDav { url } => write!(f, "webdav+{url}"),
        }
    }
}

/// `[workspace.remote]`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSettings {
    /// Where the remote is.
    pub location: RemoteLocation,
    /// `fabric run` looks in the remote before running a stage (as `--pull`).
    pub pull: bool,
    /// `fabric run` uploads what it made after it succeeds (as `--push`).
    pub push: bool,
    /// How long one request may take before the remote counts as down.
    pub timeout: Duration,
}

/// The default of `timeout`, in seconds.
const TIMEOUT_SECONDS: i64 = 30;

/// `[workspace.remote]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemote {
    url: Spanned<String>,
    #[serde(default)]
    pull: bool,
    #[serde(default)]
    push: bool,
    timeout: Option<Spanned<i64>>,
}

impl RawRemote {
    /// The checked settings, or every value that is wrong.
    pub fn check(&self) -> Result<RemoteSettings, Vec<Invalid>> {
        let mut invalid = Vec::new();
        let location = RemoteLocation::parse(self.url.get_ref())
            .map_err(|message| {
                invalid.push(Invalid {
                    span: self.url.span(),
                    message,
                    hint: "write e.g. `url = \"s3://bucket/prefix\"` or `url = \"webdav+https://host/path\"`; keys and passwords go in the environment",
                })
            })
            .ok();
        let seconds = self.timeout.as_ref().map_or(TIMEOUT_SECONDS, |t| *t.get_ref());
        if seconds <= 0 {
            let span = self.timeout.as_ref().map(Spanned::span).unwrap_or_default();
            invalid.push(Invalid {
                span,
                message: format!("`timeout = {seconds}` is not a positive number of seconds"),
                hint: "write e.g. `timeout = 30`",
            });
        }
        match location {
            Some(location) if invalid.is_empty() => Ok(RemoteSettings {
                location,
                pull: self.pull,
                push: self.push,
                timeout: Duration::from_secs(seconds.unsigned_abs()),
            }),
            _ => Err(invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_or_a_collection_and_never_credentials() {
        assert_eq!(
            RemoteLocation::parse("s3://cache/team/prime/").unwrap(),
            RemoteLocation::S3 {
                bucket: "cache".into(),
                prefix: "team/prime".into()
            }
        );
        assert_eq!(
            RemoteLocation::parse("webdav+http://127.0.0.1:8080/dav/").unwrap(),
            RemoteLocation::WebDav {
                url: "http://127.0.0.1:8080/dav".into()
            }
        );
        assert_eq!(
            RemoteLocation::parse("https://dav.example/c").unwrap().to_string(),
            "webdav+https://dav.example/c"
        );
        for bad in [
            "s3://",
            "ftp://host/x",
            "http:///x",
            "https://user:secret@host/dav",
            "cache",
        ] {
            assert!(RemoteLocation::parse(bad).is_err(), "{bad}");
        }
    }
}
