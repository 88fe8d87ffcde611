//! Maps shared by all programs.
use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use sensor_common::{kind, ExecBuffer};

use crate::path::PathScratch;

/// The one ring buffer every record goes through (size set by the daemon at load).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Failed ring-buffer writes, per record kind; the daemon turns them into loss events.
#[map(name = "DROPS")]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// Staging area for exec records, too large for the 512-byte stack.
#[map(name = "EXEC_BUF")]
pub static EXEC_BUF: PerCpuArray<ExecBuffer> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for the kernel-side path walk.
#[map(name = "PATH_BUF")]
pub static PATH_BUF: PerCpuArray<PathScratch> = PerCpuArray::with_max_entries(1, 0);
