//! A shared remote cache on S3 or WebDAV: the second tier of the store
//! ([`fabric_core::store::TieredStorage`]) that clones, colleagues and CI
//! push results to and pull them from.
//!
//! The remote is laid out like a local store (`objects/ab/cdef…`,
//! `trees/…`, `runs/…`, from the same key functions), through the
//! `object_store` crate. What this tier guarantees and what it leaves to
//! the tier in front of it:
//!
//! - Writes are idempotent by content address: the same key always gets the
//!   same bytes, so concurrent pushes of the same content need no
//!   conditional puts (several servers ignore them).
//! - Nothing read from here is trusted: the tiered store re-hashes every
//!   object and tree before keeping it, and the runner checks every
//!   restored file against its record.
//! - "Which of these are missing" is answered by listings, never one
//!   request per object: one listing per `objects/ab/` directory involved,
//!   or one listing of all objects when many directories are.
//! - Every request has a time limit ([`RemoteSettings::timeout`]) and
//!   retries at most twice within it, so a remote that is down or stalled
//!   fails with a message instead of hanging.
//! - Credentials come from the environment only: `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT`, `AWS_REGION` (and the other
//!   `AWS_*` variables `object_store` reads) for S3; `FABRIC_WEBDAV_USER`
//!   and `FABRIC_WEBDAV_PASSWORD` (HTTP basic authentication) for WebDAV.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use fabric_core::digest::Digest;
use fabric_core::manifest::{RemoteLocation, RemoteSettings};
use fabric_core::store::{ObjectStore, RunCache, object_key, run_key, tree_key};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};

/// Objects up to this size are sent in one request; larger ones in parts
/// where the server takes them (S3), so memory stays bounded.
const PART: usize = 8 << 20;

/// Object directories (`objects/ab/`) listed one by one before one listing
/// of every object is cheaper.
const LISTED_ONE_BY_ONE: usize = 16;

/// Requests in flight at once for one batch question.
const CONCURRENT_LISTINGS: usize = 8;

/// A remote cache.
pub struct Remote {
    store: Arc<dyn object_store::ObjectStore>,
    location: RemoteLocation,
    /// S3 uploads large objects in parts; WebDAV takes one request.
    multipart: bool,
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
        let (store, multipart): (Arc<dyn object_store::ObjectStore>, bool) = match &settings.location {
            RemoteLocation::S3 { bucket, prefix } => {
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_virtual_hosted_style_request(false)
                    .with_client_options(client)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| setup_error(&settings.location, e))?;
                let store: Arc<dyn object_store::ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(s3, prefix.as_str()))
                };
                (store, true)
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
                (Arc::new(http), false)
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Ok(Remote {
            store,
            location: settings.location.clone(),
            multipart,
            runtime,
        })
    }

    /// Where the remote is (never with credentials).
    pub fn location(&self) -> &RemoteLocation {
        &self.location
    }

    /// Asks the remote something cheap: Ok when it answers and lets us in.
    pub fn probe(&self) -> io::Result<()> {
        self.runtime
            .block_on(self.store.list_with_delimiter(Some(&Key::from("runs"))))
            .map(|_| ())
            .or_else(|error| match error {
                object_store::Error::NotFound { .. } => Ok(()),
                error => Err(self.failed("answer", error)),
            })
    }

    /// Every object hash under `objects/` (or under `objects/ab/`).
    async fn listed(&self, directory: &str) -> io::Result<BTreeSet<Digest>> {
        let prefix = Key::from(directory);
        let found: Vec<object_store::ObjectMeta> = match self.store.list(Some(&prefix)).try_collect().await {
            Ok(found) => found,
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
                format!("{}{}", dir.as_ref(), name.as_ref()).parse().ok()
            })
            .collect())
    }

    async fn put_file(&self, key: &Key, source: &Path) -> object_store::Result<()> {
        let mut file = std::fs::File::open(source).map_err(generic)?;
        let size = file.metadata().map_err(generic)?.len();
        if size <= PART as u64 || !self.multipart {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).map_err(generic)?;
            self.store.put(key, PutPayload::from(bytes)).await?;
            return Ok(());
        }
        let mut upload = WriteMultipart::new_with_chunk_size(self.store.put_multipart(key).await?, PART);
        let mut buffer = vec![0; PART];
        loop {
            let read = file.read(&mut buffer).map_err(generic)?;
            if read == 0 {
                break;
            }
            upload.wait_for_capacity(2).await?;
            upload.write(&buffer[..read]);
        }
        upload.finish().await?;
        Ok(())
    }

    async fn get_file(&self, key: &Key, destination: &Path) -> object_store::Result<()> {
        let mut stream = self.store.get(key).await?.into_stream();
        let mut file = io::BufWriter::new(std::fs::File::create(destination).map_err(generic)?);
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk?).map_err(generic)?;
        }
        file.flush().map_err(generic)
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
            .block_on(put_twice(|| async {
                self.store.put(&key, PutPayload::from(bytes.to_vec())).await.map(|_| ())
            }))
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

impl ObjectStore for Remote {
    fn missing(&self, hashes: &BTreeSet<Digest>) -> io::Result<BTreeSet<Digest>> {
        if hashes.is_empty() {
            return Ok(BTreeSet::new());
        }
        let directories: BTreeSet<String> = hashes
            .iter()
            .map(|hash| {
                object_key(hash)
                    .rsplit_once('/')
                    .map(|(dir, _)| dir.to_string())
                    .unwrap_or_default()
            })
            .collect();
        let present = self.runtime.block_on(async {
            if directories.len() > LISTED_ONE_BY_ONE {
                return self.listed("objects").await;
            }
            let listings: Vec<BTreeSet<Digest>> = futures::stream::iter(directories.iter())
                .map(|dir| self.listed(dir))
                .buffer_unordered(CONCURRENT_LISTINGS)
                .try_collect()
                .await?;
            Ok::<_, io::Error>(listings.into_iter().flatten().collect())
        })?;
        Ok(hashes.difference(&present).copied().collect())
    }

    fn put_object(&self, hash: &Digest, source: &Path) -> io::Result<()> {
        let key = Key::from(object_key(hash));
        self.runtime
            .block_on(put_twice(|| self.put_file(&key, source)))
            .map_err(|e| self.failed("take an object", e))
    }

    fn get_object(&self, hash: &Digest, destination: &Path) -> io::Result<()> {
        self.runtime
            .block_on(self.get_file(&Key::from(object_key(hash)), destination))
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

/// Runs a put, and once more when it failed as it does on WebDAV when a
/// concurrent writer creates the same collection (`objects/ab/`) between
/// the server's "no such collection" and our creating it: the second try
/// finds it made.
async fn put_twice<F, Fut>(put: F) -> object_store::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = object_store::Result<()>>,
{
    match put().await {
        Err(object_store::Error::NotFound { .. } | object_store::Error::Generic { store: "HTTP", .. }) => put().await,
        done => done,
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

fn generic(error: io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "local file",
        source: Box::new(error),
    }
}
