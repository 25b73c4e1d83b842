//! `MODEL_ALIASES_JSON` parsing: any input is an alias table of valid ids and locations, or
//! a list of errors. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vertex_proxy::models::{Aliases, is_location, is_raw_model_id};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Every service key variable reads as set: the table is what is fuzzed, not the environment.
    match Aliases::parse(text, "global", |_| Some("sk-service-key".into())) {
        Ok(aliases) => {
            for (_, route) in aliases.iter() {
                assert!(is_raw_model_id(&route.model), "{}", route.model);
                assert!(!route.locations.is_empty());
                assert!(route.locations.iter().all(|l| is_location(l)));
            }
        }
        Err(errors) => assert!(!errors.is_empty()),
    }
});
