//! Everything that talks to the kernel: offsets from BTF, loading and attaching the programs,
//! draining the ring buffer and reading the drop counters.
pub mod btf_offsets;
mod btf_reader;
pub mod drops;
pub mod filters;
mod kfuncs;
pub mod loader;
pub mod mounts;
pub mod network_rules;
pub mod privileges;
