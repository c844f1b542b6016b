//! A shared remote cache on S3 or WebDAV: the second tier of the store
//! ([`fabric_core::store::TieredStorage`]) that clones, colleagues and CI
//! push results to and pull them from.
//!
//! The remote is laid out like a local store (`objects/ab/cdef…`,
//! `trees/…`, `runs/…`, from the same key functions), through the
//! `object_store` crate. What this tier guarantees and what it leaves to
//! the tier in front of it:
//!
//! - Writes of objects, parts and trees are idempotent by content address:
//!   the same key always gets the same bytes, so concurrent pushes of the
//!   same content need no conditional puts (several servers ignore them).
//!   A run record is replaced by the last push of its fingerprint.
//! - Nothing read from here is trusted: the tiered store re-hashes every
//!   object and tree before keeping it, and the runner checks every
//!   restored file against its record.
//! - "Which of these are missing" is answered by listings, never one
//!   request per object: one listing per `objects/ab/` directory involved,
//!   so at most 256 whatever the number of objects, 8 at a time.
//! - Every request has a time limit ([`RemoteSettings::timeout`]) and
//!   retries at most twice within it, so a remote that is down or stalled
//!   fails with a message instead of hanging.
//! - Credentials come from the environment only, never the manifest:
//!   `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT`,
//!   `AWS_REGION` (and the other `AWS_*` variables `object_store` reads), or
//!   the usual AWS files ([`aws_files`]) for S3; `FABRIC_WEBDAV_USER` and
//!   `FABRIC_WEBDAV_PASSWORD` (HTTP basic authentication) for WebDAV.

mod aws_files;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use fabric_core::digest::Digest;
use fabric_core::manifest::{RemoteLocation, RemoteSettings};
use fabric_core::store::{ObjectStore, RunCache, object_hash, object_key, run_key, tree_key};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStoreExt, PutPayload, RetryConfig};

/// Objects up to this size are sent in one request; a larger one is kept
/// as parts of this size plus a small list of them ([`Parts`]), so memory
/// stays bounded on every server (WebDAV has no multipart upload).
const PART: u64 = 16 << 20;

/// Requests in flight at once for one batch question.
const CONCURRENT_LISTINGS: usize = 8;

/// A remote cache.
pub struct Remote {
    store: Arc<dyn object_store::ObjectStore>,
    location: RemoteLocation,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.location)
    }
}

impl Remote {
    /// Connects to the remote `settings` describe (no request is made yet).
    pub fn open(settings: &RemoteSettings) -> io::Result<Remote> {
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: settings.timeout,
            ..RetryConfig::default()
        };
        let client = ClientOptions::new()
            .with_timeout(settings.timeout)
            .with_connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .with_allow_http(true);
        let store: Arc<dyn object_store::ObjectStore> = match &settings.location {
            RemoteLocation::S3 { bucket, prefix } => {
                let s3 = aws_files::fill_in(object_store::aws::AmazonS3Builder::from_env())
                    .with_bucket_name(bucket)
                    .with_virtual_hosted_style_request(false)
                    .with_client_options(client)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| setup_error(&settings.location, e))?;
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(s3, prefix.as_str()))
                }
            }
            RemoteLocation::WebDav { url } => {
                let client = match webdav_credentials()? {
                    Some(header) => client.with_default_headers(header),
                    None => client,
                };
                let http = object_store::http::HttpBuilder::new()
                    .with_url(url)
                    .with_client_options(client)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| setup_error(&settings.location, e))?;
                Arc::new(http)
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Ok(Remote {
            store,
            location: settings.location.clone(),
            runtime,
        })
    }

    /// Where the remote is (never with credentials).
    pub fn location(&self) -> &RemoteLocation {
        &self.location
    }

    /// Lists the remote's top level: Ok when it answers, lets us in, and
    /// the bucket or collection exists.
    pub fn probe(&self) -> io::Result<()> {
        match self.runtime.block_on(self.store.list_with_delimiter(None)) {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Err(io::Error::other(format!(
                "the remote {} does not exist: create the bucket or WebDAV collection first",
                self.location
            ))),
            Err(error) => Err(self.failed("answer", error)),
        }
    }

    /// Every object hash in one `objects/ab/` directory: one listing of
    /// that directory alone (recursive WebDAV listings are cut short by
    /// some servers: lighttpd's stopped at 3,914 of 10,000 objects here).
    async fn listed(&self, directory: &str) -> io::Result<BTreeMap<Digest, u64>> {
        let found = match self.store.list_with_delimiter(Some(&Key::from(directory))).await {
            Ok(found) => found.objects,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(error) => return Err(self.failed("list objects", error)),
        };
        Ok(found
            .iter()
            .filter_map(|meta| {
                // The last two parts (`ab`, `cdef…`): WebDAV listings name
                // the collection's own path in front of them.
                let mut parts = meta.location.parts().collect::<Vec<_>>().into_iter().rev();
                let (name, dir) = (parts.next()?, parts.next()?);
                Some((object_hash(dir.as_ref(), name.as_ref())?, meta.size))
            })
            .collect())
    }

    /// Uploads object `hash` from `source`: in one request, or as parts
    /// followed by their list (written last, so a listed object has all
    /// its parts).
    async fn put_file(&self, hash: &Digest, source: &Path) -> object_store::Result<()> {
        let mut file = std::fs::File::open(source).map_err(local)?;
        let size = file.metadata().map_err(local)?.len();
        let key = Key::from(object_key(hash));
        if size <= PART {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).map_err(local)?;
            let payload = PutPayload::from(bytes);
            return put_retrying(|| self.store.put(&key, payload.clone())).await;
        }
        let parts = Parts::of(size);
        for index in 0..parts.count {
            let mut bytes = Vec::with_capacity(PART as usize);
            (&mut file).take(PART).read_to_end(&mut bytes).map_err(local)?;
            let part = Key::from(Parts::key(hash, index));
            let payload = PutPayload::from(bytes);
            put_retrying(|| self.store.put(&part, payload.clone())).await?;
        }
        let list = PutPayload::from(parts.encode());
        put_retrying(|| self.store.put(&key, list.clone())).await
    }

    /// Downloads object `hash` to `destination`, streaming, joining parts
    /// when the object is a list of them. (Whatever arrives is checked
    /// against `hash` by the tier in front.)
    async fn get_file(&self, hash: &Digest, destination: &Path) -> object_store::Result<()> {
        let mut file = io::BufWriter::new(std::fs::File::create(destination).map_err(local)?);
        let got = self.store.get(&Key::from(object_key(hash))).await?;
        let parts = if got.meta.size <= Parts::MAX_ENCODED {
            let bytes = got.bytes().await?;
            match Parts::decode(&bytes) {
                Some(parts) => Some(parts),
                None => {
                    file.write_all(&bytes).map_err(local)?;
                    None
                }
            }
        } else {
            copy_stream(got.into_stream(), &mut file).await?;
            None
        };
        for index in 0..parts.map_or(0, |p| p.count) {
            let part = match self.store.get(&Key::from(Parts::key(hash, index))).await {
                Ok(part) => part,
                // A lost part leaves the object short: the tier in front
                // finds it damaged, and the next push sends it whole.
                Err(object_store::Error::NotFound { .. }) => break,
                Err(error) => return Err(error),
            };
            copy_stream(part.into_stream(), &mut file).await?;
        }
        file.flush().map_err(local)
    }

    fn get_small(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        let got = self.runtime.block_on(async {
            match self.store.get(&Key::from(key)).await {
                Ok(result) => result.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(error) => Err(error),
            }
        });
        got.map(|bytes| bytes.map(|b| b.to_vec()))
            .map_err(|e| self.failed("read", e))
    }

    fn put_small(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let key = Key::from(key);
        self.runtime
            .block_on(async {
                let payload = PutPayload::from(bytes.to_vec());
                put_retrying(|| self.store.put(&key, payload.clone())).await
            })
            .map_err(|e| self.failed("write", e))
    }

    fn failed(&self, what: &str, error: object_store::Error) -> io::Error {
        io::Error::other(format!(
            "the remote {} did not {what}: {}",
            self.location,
            explain(&error)
        ))
    }
}

impl Remote {
    /// Those of `hashes` the remote holds, with their sizes: one listing
    /// per `objects/ab/` directory involved, [`CONCURRENT_LISTINGS`] at once.
    fn present(&self, hashes: &BTreeSet<Digest>) -> io::Result<BTreeMap<Digest, u64>> {
        let directories: BTreeSet<String> = hashes
            .iter()
            .map(|hash| {
                object_key(hash)
                    .rsplit_once('/')
                    .map(|(dir, _)| dir.to_string())
                    .unwrap_or_default()
            })
            .collect();
        self.runtime.block_on(async {
            let listings: Vec<BTreeMap<Digest, u64>> = futures::stream::iter(directories.iter())
                .map(|dir| self.listed(dir))
                .buffer_unordered(CONCURRENT_LISTINGS)
                .try_collect()
                .await?;
            Ok(listings.into_iter().flatten().collect())
        })
    }
}

impl ObjectStore for Remote {
    fn missing(&self, hashes: &BTreeSet<Digest>) -> io::Result<BTreeSet<Digest>> {
        let present = self.present(hashes)?;
        Ok(hashes.iter().filter(|h| !present.contains_key(h)).copied().collect())
    }

    /// A held object of another size than its content's is damaged (a
    /// truncated upload, say): it is sent again. An object larger than a
    /// part is held as a short list of its parts.
    fn missing_or_wrong_size(&self, objects: &BTreeMap<Digest, u64>) -> io::Result<BTreeSet<Digest>> {
        let present = self.present(&objects.keys().copied().collect())?;
        Ok(objects
            .iter()
            .filter(|(hash, size)| match present.get(hash) {
                None => true,
                Some(&held) if **size > PART => held > Parts::MAX_ENCODED,
                Some(&held) => held != **size,
            })
            .map(|(hash, _)| *hash)
            .collect())
    }

    fn put_object(&self, hash: &Digest, source: &Path) -> io::Result<()> {
        self.runtime
            .block_on(self.put_file(hash, source))
            .map_err(|e| self.failed("take an object", e))
    }

    fn get_object(&self, hash: &Digest, destination: &Path) -> io::Result<()> {
        self.runtime
            .block_on(self.get_file(hash, destination))
            .map_err(|e| self.failed("send an object", e))
    }

    /// The remote is shared: a damaged copy found here is reported by the
    /// tier in front, not deleted by one workspace.
    fn discard_object(&self, _hash: &Digest) -> io::Result<()> {
        Ok(())
    }

    fn put_tree(&self, hash: &Digest, bytes: &[u8]) -> io::Result<()> {
        self.put_small(&tree_key(hash), bytes)
    }

    fn get_tree(&self, hash: &Digest) -> io::Result<Option<Vec<u8>>> {
        self.get_small(&tree_key(hash))
    }
}

impl RunCache for Remote {
    fn put_run(&self, fingerprint: &Digest, bytes: &[u8]) -> io::Result<()> {
        self.put_small(&run_key(fingerprint), bytes)
    }

    fn get_run(&self, fingerprint: &Digest) -> io::Result<Option<Vec<u8>>> {
        self.get_small(&run_key(fingerprint))
    }
}

/// Runs a put, again when WebDAV refused to create a collection the put
/// needs because a concurrent writer created it first (`MKCOL` answered
/// 405 or 409 between the server's "no such collection" and ours): each
/// retry finds one more level made, so one try per level (`objects/`,
/// `objects/ab/`, or three for `parts/<hash>/<index>`) and one more
/// suffice. Other failures, timeouts among them, are not retried here.
async fn put_retrying<F, Fut>(put: F) -> object_store::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = object_store::Result<object_store::PutResult>>,
{
    let mut tries = 1;
    loop {
        match put().await {
            Err(error) if tries < 4 && lost_collection_race(&error) => tries += 1,
            done => return done.map(|_| ()),
        }
    }
}

fn lost_collection_race(error: &object_store::Error) -> bool {
    let text = error.to_string();
    text.contains("MKCOL") && (text.contains("405") || text.contains("409"))
}

/// Appends a download to `file` as it arrives.
async fn copy_stream<S, B>(mut stream: S, file: &mut impl Write) -> object_store::Result<()>
where
    S: futures::Stream<Item = object_store::Result<B>> + Unpin,
    B: AsRef<[u8]>,
{
    while let Some(chunk) = stream.next().await {
        file.write_all(chunk?.as_ref()).map_err(local)?;
    }
    Ok(())
}

/// The list that stands for an object larger than [`PART`]: its parts are
/// `parts/<hash>/<index>`, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parts {
    size: u64,
    count: u64,
}

impl Parts {
    /// The largest encoding a list can have (what is larger is content).
    const MAX_ENCODED: u64 = 128;
    const MAGIC: &'static str = "fabric-parts v1";

    fn of(size: u64) -> Parts {
        Parts {
            size,
            count: size.div_ceil(PART),
        }
    }

    fn key(hash: &Digest, index: u64) -> String {
        format!("parts/{hash}/{index:06}")
    }

    fn encode(&self) -> Vec<u8> {
        format!("{} {} {}\n", Parts::MAGIC, self.size, self.count).into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Parts> {
        let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
        let mut words = text.strip_prefix(Parts::MAGIC)?.split_whitespace();
        let parts = Parts {
            size: words.next()?.parse().ok()?,
            count: words.next()?.parse().ok()?,
        };
        let whole = words.next().is_none() && parts.size > PART && parts == Parts::of(parts.size);
        whole.then_some(parts)
    }
}

/// The `Authorization` header from `FABRIC_WEBDAV_USER` and
/// `FABRIC_WEBDAV_PASSWORD`, if set.
fn webdav_credentials() -> io::Result<Option<object_store::HeaderMap>> {
    let Ok(user) = std::env::var("FABRIC_WEBDAV_USER") else {
        return Ok(None);
    };
    let password = std::env::var("FABRIC_WEBDAV_PASSWORD").unwrap_or_default();
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = object_store::HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| {
        io::Error::other("FABRIC_WEBDAV_USER or FABRIC_WEBDAV_PASSWORD holds characters a header cannot")
    })?;
    value.set_sensitive(true);
    let mut headers = object_store::HeaderMap::new();
    headers.insert("authorization", value);
    Ok(Some(headers))
}

fn setup_error(location: &RemoteLocation, error: object_store::Error) -> io::Error {
    io::Error::other(format!("cannot set up the remote {location}: {}", explain(&error)))
}

/// An `object_store` error in a sentence a user can act on.
fn explain(error: &object_store::Error) -> String {
    let text = error.to_string();
    if text.contains("403") || text.contains("401") || text.contains("Forbidden") || text.contains("Unauthorized") {
        format!(
            "{text}\n  the credentials were refused: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (S3) or FABRIC_WEBDAV_USER/FABRIC_WEBDAV_PASSWORD (WebDAV)"
        )
    } else if text.contains("timed out") || text.contains("onnect") {
        format!("{text}\n  the remote is down, unreachable or too slow (`timeout` in [workspace.remote])")
    } else {
        text
    }
}

fn local(error: io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "local file",
        source: Box::new(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parts_list_reads_back_and_nothing_else_reads_as_one() {
        let parts = Parts::of(5 * PART + 1);
        assert_eq!(parts.count, 6);
        assert_eq!(Parts::decode(&parts.encode()), Some(parts));
        assert!(parts.encode().len() as u64 <= Parts::MAX_ENCODED);
        for other in [
            &b"fabric-parts v1 100 1\n"[..],
            b"fabric-parts v1 99999999999 1\n",
            b"fabric-parts v1 1 1 1\n",
            b"fabric-parts v2 1 1\n",
            b"hello\n",
        ] {
            assert_eq!(Parts::decode(other), None, "{}", String::from_utf8_lossy(other));
        }
    }
}
