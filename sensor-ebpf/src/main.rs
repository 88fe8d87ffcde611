//! Custos kernel programs. One file per hook family; shared plumbing in the other modules.
//!
//! Every program is thin: it reads what it needs from kernel structs (at offsets the daemon
//! resolved from BTF, see `kread`), stages the record in a per-CPU buffer or a ring-buffer slot,
//! and hands it to the daemon. A record that cannot be written is counted, never lost silently.
#![no_std]
#![no_main]
// Inline asm for BPF atomics, which core does not expose on the bpf target.
#![feature(asm_experimental_arch)]

mod blob;
mod block;
mod cred;
mod emit;
mod exec;
mod file;
mod kread;
mod lsm;
mod maps;
mod mount;
mod path;
mod task;

/// Programs reading kernel memory need a GPL-compatible licence.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // eBPF cannot unwind; the verifier rejects any path that reaches here.
    loop {}
}
