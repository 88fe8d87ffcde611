//! Custos: an eBPF sensor that shows what each identity does on a Linux host.
//!
//! The daemon's stages, in the order an event passes them: the kernel programs are loaded and
//! read (`kernel`), their records decoded and enriched with the process, identity, session and
//! privilege chain (`families`: one module per event family, and the registry that ties each
//! family's stages together), filtered by policy and privacy (`alert`, `privacy`), encoded and
//! written to the sinks (`sinks`); `pipeline` runs them. `cli` is the `custos` command line.
pub mod access;
pub mod alert;
pub mod allocator;
pub mod cgroups;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod decode;
pub mod dedup;
pub mod devices;
pub mod families;
pub mod files;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod host;
pub mod identity;
pub mod kernel;
pub mod metrics;
pub mod people;
pub mod pipeline;
pub mod privacy;
pub mod privilege_chain;
pub mod proc_scan;
pub mod process_table;
pub mod sessions;
pub mod sinks;
pub mod ssh_clients;
pub mod tail;
pub mod text;
pub mod views;
