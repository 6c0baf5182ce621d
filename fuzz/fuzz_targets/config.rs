//! `relay.yaml` and `backends.yaml` parsing and validation: arbitrary text never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::config::{BackendsFile, RelayConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = RelayConfig::parse(text);
    if let Ok(file) = BackendsFile::parse(text) {
        let _ = file.validate();
    }
});
