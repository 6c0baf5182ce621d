//! A policy plugin that misbehaves on demand, for the sandbox tests: a `tools/call` of a tool
//! named `spin` loops forever, `bomb` allocates without end, `panic` panics. Everything else
//! passes.

use relay::plugin::types::{Denial, RequestInfo};

wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

struct Misbehaving;

impl exports::relay::plugin::policy_check::Guest for Misbehaving {
    fn check(request: RequestInfo) -> Result<(), Denial> {
        match request.tool.as_deref() {
            Some("spin") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("bomb") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("panic") => panic!("misbehaving-policy was asked to panic"),
            _ => Ok(()),
        }
    }
}

export!(Misbehaving);
