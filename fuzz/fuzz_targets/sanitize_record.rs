//! Any bytes as a raw snapshot record: sanitize must not panic, and whatever
//! it keeps must revalidate and carry no personal data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prime_fabric::prime::sanitize::{clean_record, leak};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(snapshot) = clean_record(text) {
        assert!(snapshot.validate().is_ok());
        assert_eq!(leak(&snapshot), None);
    }
});
