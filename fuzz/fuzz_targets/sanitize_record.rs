//! Any bytes as a raw snapshot record: sanitize must not panic, and whatever
//! it keeps must revalidate and pass the privacy verifier.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prime_brain::privacy::check_snapshot;
use prime_brain::pseudonym::PseudonymKey;
use prime_brain::sanitize::clean_record;

const KEY: PseudonymKey = PseudonymKey::from_bytes([1; 32]);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(snapshot) = clean_record(text, &KEY) {
        assert!(snapshot.validate().is_ok());
        assert_eq!(check_snapshot(&snapshot), Ok(()));
    }
});
