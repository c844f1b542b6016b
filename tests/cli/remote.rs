//! The shared remote cache against real servers started here on 127.0.0.1:
//! lighttpd's mod_webdav (from Debian, installed by `scripts/setup --tests`).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::{Outcome, Workspace};

/// A lighttpd WebDAV server on a free loopback port, stopped on drop.
struct WebDav {
    dir: tempfile::TempDir,
    port: u16,
    server: Child,
}

impl WebDav {
    /// Starts a server; with `user`, it asks for that user and password;
    /// `extra` is appended to its configuration.
    fn start(user: Option<(&str, &str)>, extra: &str) -> WebDav {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("dav");
        // The collection the remote URL names exists, as a bucket would.
        std::fs::create_dir_all(root.join("cache")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = format!(
            r#"server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{dir}/error.log"
server.upload-dirs = ("{dir}/tmp")
server.modules = ("mod_webdav", "mod_auth", "mod_authn_file")
webdav.activate = "enable"
webdav.is-readonly = "disable"
webdav.opts = ("propfind-depth-infinity" => "enable")
"#,
            root = root.display(),
            dir = dir.path().display()
        );
        if let Some((user, password)) = user {
            std::fs::write(dir.path().join("users"), format!("{user}:{password}\n")).unwrap();
            config.push_str(&format!(
                r#"auth.backend = "plain"
auth.backend.plain.userfile = "{}/users"
auth.require = ("/" => ("method" => "basic", "realm" => "cache", "require" => "valid-user"))
"#,
                dir.path().display()
            ));
        }
        config.push_str(extra);
        std::fs::write(dir.path().join("lighttpd.conf"), config).unwrap();
        let server = WebDav::launch(dir.path());
        let mut webdav = WebDav { dir, port, server };
        webdav.wait_until_it_answers();
        webdav
    }

    fn launch(dir: &std::path::Path) -> Child {
        Command::new("lighttpd")
            .args(["-D", "-f"])
            .arg(dir.join("lighttpd.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("lighttpd is installed by scripts/setup --tests")
    }

    /// Kills the server at once (connections in flight are cut).
    fn kill(&mut self) {
        self.server.kill().unwrap();
        self.server.wait().unwrap();
    }

    /// Starts the server again on the same port and files.
    fn restart(&mut self) {
        self.server = WebDav::launch(self.dir.path());
        self.wait_until_it_answers();
    }

    /// Waits (a bounded time) for the port to take connections.
    fn wait_until_it_answers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.server.try_wait().unwrap() {
                panic!(
                    "lighttpd exited ({status}): {}",
                    std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "lighttpd did not answer within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("webdav+http://127.0.0.1:{}/cache", self.port)
    }

    /// Where the server keeps what is pushed.
    fn files(&self) -> PathBuf {
        self.dir.path().join("dav/cache")
    }

    /// Every object file the server holds.
    fn objects(&self) -> Vec<PathBuf> {
        walkdir::WalkDir::new(self.files().join("objects"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.server.id() as i32, signal);
        }
    }
}

impl Drop for WebDav {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// The chain pipeline with `[workspace.remote]` pointing at `url`.
fn with_remote(ws: &Workspace, url: &str, extra: &str) {
    ws.chain();
    let manifest = ws.read("Fabric.toml");
    ws.write(
        "Fabric.toml",
        &manifest.replace(
            "[params]",
            &format!("[workspace.remote]\nurl = \"{url}\"\n{extra}\n[params]"),
        ),
    );
}

/// A clone of `ws`: its manifests, data and lock, none of its outs or store.
/// Its stage commands are the same, so they count executions in `ws`'s
/// counters ([`executed`] of `ws` covers both).
fn clone_of(ws: &Workspace) -> Workspace {
    let clone = Workspace::new();
    for file in [
        "Fabric.toml",
        "pipelines/chain.toml",
        "data/in.txt",
        "data/other.txt",
        "Fabric.lock",
    ] {
        clone.write(file, &ws.read(file));
    }
    clone
}

const OUTS: [&str; 4] = ["build/a.txt", "build/b.txt", "build/c/copy.txt", "build/d.txt"];

fn executed(ws: &Workspace) -> usize {
    ["a", "b", "c", "d"].iter().map(|s| ws.count(s)).sum()
}

fn same_outs(one: &Workspace, other: &Workspace) {
    for out in OUTS {
        assert_eq!(
            std::fs::read(one.path(out)).unwrap(),
            std::fs::read(other.path(out)).unwrap(),
            "{out}"
        );
    }
}

#[test]
fn a_second_clone_restores_what_the_first_pushed_and_executes_nothing() {
    let server = WebDav::start(None, "");
    let first = Workspace::new();
    with_remote(&first, &server.url(), "");
    let listed = first.ok(&["remote", "list"]);
    assert!(
        listed.stdout.contains(&server.url()) && listed.stdout.contains("answers"),
        "{}",
        listed.stdout
    );
    let pushed = first.ok(&["run", "--push"]);
    assert!(pushed.stderr.contains("uploaded 4 objects"), "{}", pushed.stderr);
    assert_eq!(executed(&first), 4);
    assert_eq!(server.objects().len(), 4, "one object per distinct file");

    let second = clone_of(&first);
    let pulled = second.ok(&["run", "--pull"]);
    assert_eq!(executed(&first), 4, "nothing runs in the clone: {}", pulled.stderr);
    same_outs(&first, &second);
    assert_eq!(second.read("Fabric.lock"), first.read("Fabric.lock"));
    second.ok(&["status", "--check"]);

    // `fabric pull` fetches and checks out; nothing is left to do after it.
    let third = clone_of(&first);
    let pulled = third.ok(&["pull"]);
    assert!(pulled.stderr.contains("downloaded 4 objects"), "{}", pulled.stderr);
    same_outs(&first, &third);
    third.ok(&["run"]);
    assert_eq!(executed(&first), 4);

    // A second push sends nothing: the remote is asked what it lacks.
    let again = first.ok(&["push"]);
    assert!(
        again.stderr.contains("uploaded 0 objects") && again.stderr.contains("4 already there"),
        "{}",
        again.stderr
    );
    // A truncated copy on the remote is sent again by the next push.
    let truncated = &server.objects()[0];
    let whole = std::fs::read(truncated).unwrap();
    std::fs::write(truncated, &whole[..whole.len() - 1]).unwrap();
    let repaired = first.ok(&["push"]);
    assert!(repaired.stderr.contains("uploaded 1 objects"), "{}", repaired.stderr);
    assert_eq!(std::fs::read(truncated).unwrap(), whole);
}

#[test]
fn a_damaged_or_missing_remote_object_is_reported_and_its_stage_runs() {
    let server = WebDav::start(None, "");
    let first = Workspace::new();
    with_remote(&first, &server.url(), "");
    first.ok(&["run", "--push"]);
    let hash_of = |out: &str| {
        blake3::hash(&std::fs::read(first.path(out)).unwrap())
            .to_hex()
            .to_string()
    };
    let object = |out: &str| {
        let hash = hash_of(out);
        server.files().join("objects").join(&hash[..2]).join(&hash[2..])
    };
    std::fs::write(object("build/d.txt"), "poisoned\n").unwrap();
    std::fs::remove_file(object("build/a.txt")).unwrap();
    // And the listing of c's directory out is gone.
    let lock = fabric_core::lock::Lock::read(&first.path("Fabric.lock")).unwrap();
    let c_tree = lock.stage["c"].outs.get("build/c").unwrap().hash;
    std::fs::remove_file(server.files().join(format!("trees/{c_tree}.json"))).unwrap();

    let second = clone_of(&first);
    let run = second.ok(&["run", "--pull"]);
    assert_eq!(
        first.count("d"),
        2,
        "the damaged object is not restored: {}",
        run.stderr
    );
    assert_eq!(first.count("a"), 2, "the missing object is run for");
    assert_eq!(first.count("b"), 1, "b is restored (a ran to the same bytes)");
    assert_eq!(first.count("c"), 2, "c, whose listing is gone, runs");
    assert!(run.stderr.contains("holds other content"), "reported: {}", run.stderr);
    same_outs(&first, &second);
    assert!(
        !std::fs::read_dir(second.path(".fabric/store/objects"))
            .unwrap()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .any(|f| std::fs::read(f.path()).unwrap() == b"poisoned\n"),
        "the poisoned bytes are not kept locally"
    );
    // `fabric pull` gets what the remote has, and says what it lacks.
    let partial = clone_of(&first);
    let pulled = partial.fabric(&["pull"]);
    assert_eq!(pulled.code, 1, "{}", pulled.stderr);
    assert!(
        pulled.stderr.contains("2 objects the lock records are in neither"),
        "{}",
        pulled.stderr
    );
    assert!(
        pulled.stderr.contains("cannot restore build/a.txt"),
        "{}",
        pulled.stderr
    );
    assert_eq!(partial.read("build/b.txt"), first.read("build/b.txt"));
    // It says which object is wrong and restores nothing from it.
    let third = clone_of(&first);
    let pulled = third.fabric(&["pull", "d"]);
    assert_ne!(pulled.code, 0);
    assert!(pulled.stderr.contains("holds other content"), "{}", pulled.stderr);
    assert!(!third.path("build/d.txt").exists());

    // Damaged in place with its size kept (a size check cannot see it): the
    // workspace that was sent it runs the stage and its push sends a sound
    // copy over the damaged one.
    let sound = std::fs::read(first.path("build/d.txt")).unwrap();
    let mut flipped = sound.clone();
    flipped[0] ^= 1;
    // A new file: lighttpd fails the transfer of one rewritten in place at
    // the same size (a transport error, which a run survives too, by
    // running the stage, but which is not damage it can recognise).
    std::fs::remove_file(object("build/d.txt")).unwrap();
    std::fs::write(object("build/d.txt"), &flipped).unwrap();
    let fourth = clone_of(&first);
    let run = fourth.ok(&["run", "--pull", "--push"]);
    assert!(run.stderr.contains("holds other content"), "{}", run.stderr);
    assert_eq!(
        std::fs::read(object("build/d.txt")).unwrap(),
        sound,
        "repaired by the push: {}",
        run.stderr
    );
}

#[test]
fn a_run_record_that_disagrees_with_the_lock_is_not_used() {
    let server = WebDav::start(None, "");
    let first = Workspace::new();
    with_remote(&first, &server.url(), "");
    first.ok(&["run", "--push"]);
    // The remote's record of d's fingerprint now names a's output (content
    // the remote does hold, so only the lock can tell it is wrong).
    let lock = fabric_core::lock::Lock::read(&first.path("Fabric.lock")).unwrap();
    let fingerprint = |stage: &str| lock.stage[stage].fingerprint.to_string();
    let runs = server.files().join("runs");
    let a_record = std::fs::read_to_string(runs.join(format!("{}.json", fingerprint("a")))).unwrap();
    std::fs::write(
        runs.join(format!("{}.json", fingerprint("d"))),
        a_record.replace("build/a.txt", "build/d.txt"),
    )
    .unwrap();

    let second = clone_of(&first);
    second.ok(&["run", "--pull"]);
    assert_eq!(second.read("build/d.txt"), first.read("build/d.txt"));
    assert_eq!(executed(&first), 4, "the lock's own record is what is restored");

    // Without a lock, a record is trusted by its fingerprint, but only for
    // the outs the stage declares: one naming another path is not used.
    std::fs::write(
        runs.join(format!("{}.json", fingerprint("d"))),
        a_record.replace("build/a.txt", "build/elsewhere.txt"),
    )
    .unwrap();
    let unlocked = clone_of(&first);
    std::fs::remove_file(unlocked.path("Fabric.lock")).unwrap();
    unlocked.ok(&["run", "--pull"]);
    assert_eq!(first.count("d"), 2, "d runs instead");
    assert_eq!(executed(&first), 5, "the other stages are restored by fingerprint");
    assert!(!unlocked.path("build/elsewhere.txt").exists());
    assert_eq!(unlocked.read("build/d.txt"), first.read("build/d.txt"));
}

#[test]
fn a_remote_that_is_down_or_stalled_fails_within_its_timeout_and_run_pull_runs_instead() {
    let server = WebDav::start(None, "");
    let first = Workspace::new();
    with_remote(&first, &server.url(), "timeout = 2");
    first.ok(&["run"]);
    server.signal(libc::SIGSTOP);
    let started = Instant::now();
    let pushed = first.fabric(&["push"]);
    assert_eq!(pushed.code, 1, "{}", pushed.stderr);
    assert!(pushed.stderr.contains("did not"), "{}", pushed.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded by the timeout: {:?}",
        started.elapsed()
    );
    let listed = first.fabric(&["remote", "list"]);
    assert_eq!(listed.code, 1);
    assert!(listed.stdout.contains("does not answer"), "{}", listed.stdout);

    let second = clone_of(&first);
    let run = second.ok(&["run", "--pull"]);
    assert!(
        run.stderr.contains("running without the remote cache"),
        "{}",
        run.stderr
    );
    assert_eq!(executed(&first), 8, "everything runs again in the clone");
    same_outs(&first, &second);
}

/// Appends a stage writing `megabytes` of random bytes to `build/big.bin`.
fn with_big_stage(ws: &Workspace, megabytes: usize) {
    with_stage(
        ws,
        &format!(
            "[stage.big]\ncmd = \"{} && head -c {} /dev/urandom > build/big.bin\"\nouts = [\"build/big.bin\"]\n",
            ws.tick("big"),
            megabytes * 1_000_000
        ),
    );
}

/// Adds `stage` (TOML) to the workspace's chain pipeline.
fn with_stage(ws: &Workspace, stage: &str) {
    let pipeline = ws.read("pipelines/chain.toml");
    ws.write("pipelines/chain.toml", &format!("{pipeline}\n{stage}"));
}

#[test]
fn a_large_object_that_lost_a_part_is_refused_and_sent_whole_by_the_next_push() {
    let server = WebDav::start(None, "");
    let first = Workspace::new();
    with_remote(&first, &server.url(), "");
    // Made again byte for byte when it runs again (unlike `with_big_stage`).
    with_stage(
        &first,
        &format!(
            "[stage.big]\ncmd = \"{} && yes 0123456789abcdef | head -c 20000000 > build/big.bin\"\nouts = [\"build/big.bin\"]\n",
            first.tick("big")
        ),
    );
    first.ok(&["run", "--push", "big"]);
    let hash = blake3::hash(&std::fs::read(first.path("build/big.bin")).unwrap())
        .to_hex()
        .to_string();
    let part = server.files().join(format!("parts/{hash}/000001"));
    let whole = std::fs::read(&part).unwrap();
    std::fs::remove_file(&part).unwrap();

    let second = clone_of(&first);
    second.write("pipelines/chain.toml", &first.read("pipelines/chain.toml"));
    let run = second.ok(&["run", "--pull", "--push", "big"]);
    assert!(run.stderr.contains("holds other content"), "{}", run.stderr);
    assert_eq!(first.count("big"), 2, "big ran again: {}", run.stderr);
    assert!(
        std::fs::read(&part).is_ok_and(|bytes| bytes == whole),
        "sent whole again: {}",
        run.stderr
    );
}

#[test]
fn a_server_lost_mid_transfer_fails_the_pull_and_keeps_nothing_half_made() {
    // The server sends 4 MB/s, so a 40 MB object is still on its way when
    // the server is killed.
    let mut server = WebDav::start(None, "connection.kbytes-per-second = 4096\n");
    let first = Workspace::new();
    with_remote(&first, &server.url(), "timeout = 60");
    with_big_stage(&first, 40);
    first.ok(&["run", "--push", "big"]);
    let hash = blake3::hash(&std::fs::read(first.path("build/big.bin")).unwrap())
        .to_hex()
        .to_string();
    let parts = std::fs::read_dir(server.files().join("parts").join(&hash))
        .unwrap()
        .count();
    assert_eq!(parts, 3, "40 MB goes as parts of 16 MiB");

    let second = clone_of(&first);
    second.write("pipelines/chain.toml", &first.read("pipelines/chain.toml"));
    let pulling = second.spawn(&["pull", "big"]);
    let incoming = second.path(".fabric/store/incoming");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_dir(&incoming)
        .map(|entries| entries.flatten().any(|e| e.metadata().is_ok_and(|m| m.len() > 0)))
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "the download did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill();
    let output = pulling.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not send an object"), "{stderr}");
    assert!(!second.path("build/big.bin").exists());
    assert!(
        !second
            .path(".fabric/store/objects")
            .join(&hash[..2])
            .join(&hash[2..])
            .exists()
            && std::fs::read_dir(&incoming).unwrap().next().is_none(),
        "nothing half-downloaded is kept"
    );

    server.restart();
    second.ok(&["pull", "big"]);
    assert_eq!(
        std::fs::read(second.path("build/big.bin")).unwrap(),
        std::fs::read(first.path("build/big.bin")).unwrap()
    );
}

#[test]
fn a_remote_holding_thousands_of_objects_is_listed_completely() {
    // lighttpd cuts a recursive listing short (at 3,914 entries here): the
    // remote must be asked directory by directory.
    let server = WebDav::start(None, "");
    let first = Workspace::new();
    with_remote(&first, &server.url(), "");
    with_stage(
        &first,
        "[stage.many]\ncmd = \"mkdir -p build/many && cd build/many && seq 6000 | xargs touch && for f in *; do echo $f > $f; done\"\nouts = [\"build/many\"]\n",
    );
    first.ok(&["run", "--push", "many"]);
    assert_eq!(server.objects().len(), 6000);
    let second = clone_of(&first);
    second.write("pipelines/chain.toml", &first.read("pipelines/chain.toml"));
    let pulled = second.ok(&["pull", "many"]);
    assert!(pulled.stderr.contains("downloaded 6000 objects"), "{}", pulled.stderr);
    assert_eq!(std::fs::read_dir(second.path("build/many")).unwrap().count(), 6000);
    assert_eq!(second.read("build/many/5999"), "5999\n");
}

#[test]
fn refused_credentials_are_reported_and_never_printed() {
    let server = WebDav::start(Some(("fabric", "s3cret-pass")), "");
    let ws = Workspace::new();
    with_remote(&ws, &server.url(), "timeout = 5");
    ws.ok(&["run"]);
    let refused = ws.fabric(&["push"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("credentials were refused"),
        "{}",
        refused.stderr
    );
    let wrong = Outcome::from(
        ws.command(&["push"])
            .env("FABRIC_WEBDAV_USER", "fabric")
            .env("FABRIC_WEBDAV_PASSWORD", "not-it")
            .output()
            .unwrap(),
    );
    assert_eq!(wrong.code, 1);
    assert!(wrong.stderr.contains("credentials were refused"), "{}", wrong.stderr);
    // Neither the password nor the header that carries it (base64 of
    // `fabric:not-it`) is printed.
    assert!(
        !wrong.stderr.contains("not-it") && !wrong.stderr.contains("ZmFicmljOm5vdC1pd"),
        "{}",
        wrong.stderr
    );
    let pushed = Outcome::from(
        ws.command(&["push"])
            .env("FABRIC_WEBDAV_USER", "fabric")
            .env("FABRIC_WEBDAV_PASSWORD", "s3cret-pass")
            .output()
            .unwrap(),
    );
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    assert!(!pushed.stderr.contains("s3cret"));
    assert_eq!(server.objects().len(), 4);
}

#[test]
fn concurrent_pushes_of_the_same_content_leave_a_sound_remote() {
    let server = WebDav::start(None, "");
    // 300 files more: many `objects/ab/` collections for the pushes to
    // create at the same moment.
    let workspaces: Vec<Workspace> = (0..3)
        .map(|_| {
            let ws = Workspace::new();
            with_remote(&ws, &server.url(), "");
            with_stage(
                &ws,
                "[stage.many]\ncmd = \"mkdir -p build/many && for i in $(seq 300); do echo $i > build/many/$i; done\"\nouts = [\"build/many\"]\n",
            );
            ws.ok(&["run"]);
            ws
        })
        .collect();
    let pushes: Vec<Child> = workspaces.iter().map(|ws| ws.spawn(&["push"])).collect();
    for push in pushes {
        let output = push.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    assert_eq!(server.objects().len(), 304);
    for object in server.objects() {
        let bytes = std::fs::read(&object).unwrap();
        let name = format!(
            "{}{}",
            object.parent().unwrap().file_name().unwrap().to_string_lossy(),
            object.file_name().unwrap().to_string_lossy()
        );
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), name, "{}", object.display());
    }
    let clone = clone_of(&workspaces[0]);
    clone.ok(&["run", "--pull"]);
    assert_eq!(executed(&workspaces[0]), 4, "the clone ran nothing");
    same_outs(&workspaces[0], &clone);
}

#[test]
fn remote_settings_are_checked_when_the_manifest_loads() {
    let ws = Workspace::new();
    with_remote(&ws, "https://me:hunter2@dav.example/cache", "timeout = 0");
    let outcome = ws.fabric(&["status"]);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("carries credentials"), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("Fabric.toml:"), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("`timeout = 0` is not a positive number"),
        "{}",
        outcome.stderr
    );
    let none = Workspace::new();
    none.chain();
    let outcome = none.fabric(&["push"]);
    assert_eq!(outcome.code, 1);
    assert!(outcome.stderr.contains("no remote is configured"), "{}", outcome.stderr);
}

/// A single-node Garage (a real distributed S3 store, built by
/// `scripts/setup --tests`) on free loopback ports, with a bucket `cache`
/// and a key allowed to use it; stopped on drop.
struct Garage {
    dir: tempfile::TempDir,
    s3_port: u16,
    server: Child,
    key: String,
    secret: String,
}

impl Garage {
    fn binary() -> PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".fabric/bin/garage")
    }

    fn start() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let port = || {
            std::net::TcpListener::bind(("127.0.0.1", 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (rpc, s3_port, admin) = (port(), port(), port());
        let secret: String = (0..32).map(|i| format!("{:02x}", (i * 37 + 11) % 256)).collect();
        std::fs::write(
            dir.path().join("garage.toml"),
            format!(
                r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3_port}"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "fabric-test-admin"
"#,
                dir = dir.path().display()
            ),
        )
        .unwrap();
        let server = Command::new(Garage::binary())
            .arg("-c")
            .arg(dir.path().join("garage.toml"))
            .arg("server")
            .stdout(std::fs::File::create(dir.path().join("server.log")).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("garage is built by scripts/setup --tests");
        let mut garage = Garage {
            dir,
            s3_port,
            server,
            key: String::new(),
            secret: String::new(),
        };
        // The node answers its CLI once its RPC is up (bounded wait).
        let deadline = Instant::now() + Duration::from_secs(30);
        let node = loop {
            let status = garage.cli(&["status"]);
            if let Some(id) = status.lines().find_map(|line| {
                line.split_whitespace()
                    .next()
                    .filter(|w| w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit()))
            }) {
                break id.to_string();
            }
            assert!(Instant::now() < deadline, "garage did not come up: {status}");
            std::thread::sleep(Duration::from_millis(100));
        };
        garage.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage.cli(&["layout", "apply", "--version", "1"]);
        let created = garage.cli(&["key", "create", "fabric"]);
        let field = |name: &str| {
            created
                .lines()
                .find_map(|line| line.trim().strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no `{name}` in: {created}"))
        };
        garage.key = field("Key ID:");
        garage.secret = field("Secret key:");
        garage.cli(&["bucket", "create", "cache"]);
        garage.cli(&["bucket", "allow", "--read", "--write", "cache", "--key", "fabric"]);
        garage
    }

    /// Runs the garage CLI against this node; its output (stdout, then stderr).
    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new(Garage::binary())
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(args)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// The environment fabric reads S3 settings and credentials from.
    fn env(&self, secret: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.key.clone()),
            ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.s3_port)),
            ("AWS_REGION", "garage".to_string()),
        ]
    }

    fn fabric(&self, ws: &Workspace, args: &[&str]) -> Outcome {
        Outcome::from(ws.command(args).envs(self.env(&self.secret)).output().unwrap())
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[test]
fn through_garage_s3_a_clone_restores_everything_a_large_out_included() {
    let garage = Garage::start();
    let first = Workspace::new();
    with_remote(&first, "s3://cache/team/prime", "");
    with_big_stage(&first, 25);
    let listed = garage.fabric(&first, &["remote", "list"]);
    assert!(listed.stdout.contains("answers"), "{}{}", listed.stdout, listed.stderr);
    let pushed = garage.fabric(&first, &["run", "--push"]);
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    assert!(pushed.stderr.contains("uploaded 5 objects"), "{}", pushed.stderr);

    let second = clone_of(&first);
    second.write("pipelines/chain.toml", &first.read("pipelines/chain.toml"));
    let pulled = garage.fabric(&second, &["run", "--pull"]);
    assert_eq!(pulled.code, 0, "{}", pulled.stderr);
    assert_eq!(
        executed(&first) + first.count("big"),
        5,
        "the clone ran nothing: {}",
        pulled.stderr
    );
    same_outs(&first, &second);
    assert_eq!(
        std::fs::read(first.path("build/big.bin")).unwrap(),
        std::fs::read(second.path("build/big.bin")).unwrap()
    );

    // The usual AWS files serve when the environment names nothing.
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/credentials"),
        format!(
            "[default]\naws_access_key_id = GKnotthisone\n\n[ci]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            garage.key, garage.secret
        ),
    )
    .unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        format!(
            "[profile ci]\nregion = garage\nendpoint_url = http://127.0.0.1:{}\n",
            garage.s3_port
        ),
    )
    .unwrap();
    let third = clone_of(&first);
    third.write("pipelines/chain.toml", &first.read("pipelines/chain.toml"));
    let from_files = Outcome::from(
        third
            .command(&["pull"])
            .env("HOME", home.path())
            .env("AWS_PROFILE", "ci")
            .output()
            .unwrap(),
    );
    assert_eq!(from_files.code, 0, "{}", from_files.stderr);
    same_outs(&first, &third);

    let refused = Outcome::from(
        first
            .command(&["push"])
            .envs(garage.env("not-the-secret"))
            .output()
            .unwrap(),
    );
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("credentials were refused"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("not-the-secret") && !refused.stderr.contains(&garage.secret));
}
