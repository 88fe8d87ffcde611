//! Reads of kernel struct members at offsets the daemon resolved from the running kernel's BTF.
use aya_ebpf::helpers::bpf_probe_read_kernel;
use sensor_common::{offsets::MISSING, KernelOffsets};

/// Filled in by the daemon before load (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets::UNSET;

/// Process id of the daemon itself: its own activity is never reported.
#[unsafe(no_mangle)]
pub static SELF_TGID: u32 = 0;

/// One member offset, see [`load`].
macro_rules! off {
    ($field:ident) => {
        $crate::kread::load(&$crate::kread::OFFSETS.$field)
    };
}
pub(crate) use off;

/// Reads a daemon-filled global. Volatile so the compiler keeps the load instead of folding in
/// the placeholder value the object was built with.
#[inline(always)]
pub fn load(global: &u32) -> u32 {
    unsafe { core::ptr::read_volatile(global) }
}

#[inline(always)]
pub fn self_tgid() -> u32 {
    load(&SELF_TGID)
}

/// Reads a `T` at `base + offset`, or `None` when the base is NULL, the member does not exist in
/// this kernel, or the memory cannot be read.
#[inline(always)]
pub fn read_at<T: Copy>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() || offset == MISSING {
        return None;
    }
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T).ok() }
}

/// Reads a kernel pointer member.
#[inline(always)]
pub fn read_ptr(base: *const u8, offset: u32) -> Option<*const u8> {
    read_at::<*const u8>(base, offset).filter(|p| !p.is_null())
}
