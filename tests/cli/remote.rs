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
    /// Starts a server; with `user`, it asks for that user and password.
    fn start(user: Option<(&str, &str)>) -> WebDav {
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
        std::fs::write(dir.path().join("lighttpd.conf"), config).unwrap();
        let server = Command::new("lighttpd")
            .args(["-D", "-f"])
            .arg(dir.path().join("lighttpd.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("lighttpd is installed by scripts/setup --tests");
        let mut webdav = WebDav { dir, port, server };
        webdav.wait_until_it_answers();
        webdav
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
    let server = WebDav::start(None);
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
}

#[test]
fn a_damaged_or_missing_remote_object_is_reported_and_its_stage_runs() {
    let server = WebDav::start(None);
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

    let second = clone_of(&first);
    let run = second.ok(&["run", "--pull"]);
    assert_eq!(
        first.count("d"),
        2,
        "the damaged object is not restored: {}",
        run.stderr
    );
    assert_eq!(first.count("a"), 2, "the missing object is run for");
    assert_eq!(
        first.count("b") + first.count("c"),
        2,
        "b and c are restored (a ran to the same bytes)"
    );
    same_outs(&first, &second);
    assert!(
        !std::fs::read_dir(second.path(".fabric/store/objects"))
            .unwrap()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .any(|f| std::fs::read(f.path()).unwrap() == b"poisoned\n"),
        "the poisoned bytes are not kept locally"
    );
    // `fabric pull` says which object is wrong and restores nothing from it.
    let third = clone_of(&first);
    let pulled = third.fabric(&["pull", "d"]);
    assert_ne!(pulled.code, 0);
    assert!(pulled.stderr.contains("holds other content"), "{}", pulled.stderr);
    assert!(!third.path("build/d.txt").exists());
}

#[test]
fn a_run_record_that_disagrees_with_the_lock_is_not_used() {
    let server = WebDav::start(None);
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
}

#[test]
fn a_remote_that_is_down_or_stalled_fails_within_its_timeout_and_run_pull_runs_instead() {
    let server = WebDav::start(None);
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

#[test]
fn refused_credentials_are_reported_and_never_printed() {
    let server = WebDav::start(Some(("fabric", "s3cret-pass")));
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
    assert!(!wrong.stderr.contains("not-it"), "{}", wrong.stderr);
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
    let server = WebDav::start(None);
    let workspaces: Vec<Workspace> = (0..3)
        .map(|_| {
            let ws = Workspace::new();
            with_remote(&ws, &server.url(), "");
            ws.ok(&["run"]);
            ws
        })
        .collect();
    let pushes: Vec<Child> = workspaces.iter().map(|ws| ws.spawn(&["push"])).collect();
    for push in pushes {
        let output = push.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
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
