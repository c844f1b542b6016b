//! Any text as a Fabric.toml: loading must end in a workspace or diagnostics,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use fabric_core::manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("Fabric.toml"), text).expect("writable");
    if let Err(diagnostics) = manifest::load(dir.path(), &[], &prime_fabric::cli::registry()) {
        let _ = diagnostics.render(false);
    }
});
