//! Fuzzes the native policy parser: any UTF-8 text must come back as a
//! validated policy or as errors, never as a panic (or a hang).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vaultfw::policy::parse_toml(text);
    }
});
