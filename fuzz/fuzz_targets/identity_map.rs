//! libFuzzer on `custos::fuzzing::identity_map` (see there for what it feeds and checks).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| custos::fuzzing::identity_map(bytes));
