//! libFuzzer on `custos::fuzzing::config` (see there for what it feeds and checks).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| custos::fuzzing::config(bytes));
