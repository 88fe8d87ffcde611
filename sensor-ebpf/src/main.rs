//! Custos kernel programs. One module per event family, named as in the
//! other crates; shared plumbing in the others.
//!
//! Every program is thin: it reads what it needs from kernel structs (at offsets the daemon
//! resolved from BTF, see `kread`), stages the record in a per-CPU buffer or a ring-buffer slot,
//! and hands it to the daemon. A record that cannot be written is counted, never lost silently.
#![no_std]
#![no_main]
// Inline asm for BPF atomics, which core does not expose on the bpf target.
#![feature(asm_experimental_arch)]

// Event families, named as in the other crates.
mod block_device;
mod device_control;
mod file;
mod mount;
mod network;
mod privilege;
mod process;

// Shared plumbing.
mod blob;
mod emit;
mod kread;
mod maps;
mod path;
mod recent_paths;
mod record;
mod syscall_exit;
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
