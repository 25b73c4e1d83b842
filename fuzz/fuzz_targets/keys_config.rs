//! `API_KEYS_JSON` parsing: any input is a key set or a list of errors. Never a panic, never a
//! key set that would run open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vertex_proxy::keys::KeySet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match KeySet::parse(text, |name| name == "flash") {
        Ok(keys) => assert!(keys.enabled_count() >= 1),
        Err(errors) => assert!(!errors.is_empty()),
    }
});
