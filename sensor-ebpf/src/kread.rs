//! Reads of kernel struct members at offsets the daemon resolved from the running kernel's BTF.
//!
//! Two strategies, chosen per program at compile time through [`Mem`]:
//! - [`Direct`]: plain loads. Only for `tp_btf` programs, whose pointers are BTF-typed: the
//!   verifier checks each load against the kernel's type information and turns it into an
//!   inline fault-safe load, no helper call.
//! - [`Probe`]: `bpf_probe_read_kernel`, for classic and raw tracepoints, whose pointers are
//!   plain numbers to the verifier.
use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{bpf_get_current_task, bpf_get_current_task_btf},
};
use sensor_common::{kfunc, offsets::MISSING, ProgramGlobals, COMM_LEN};

/// Filled in by the daemon before load (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
pub static GLOBALS: ProgramGlobals = ProgramGlobals::UNSET;

/// One member offset, see [`load`].
macro_rules! off {
    ($field:ident) => {
        $crate::kread::load(&$crate::kread::GLOBALS.offsets.$field)
    };
}
pub(crate) use off;

/// Reads a daemon-filled global. Volatile so the compiler keeps the load instead of folding in
/// the placeholder value the object was built with.
#[inline(always)]
pub fn load(global: &u32) -> u32 {
    // SAFETY: `global` is a valid reference; volatile only stops the compiler from folding it.
    unsafe { core::ptr::read_volatile(global) }
}

#[inline(always)]
pub fn self_tgid() -> u32 {
    load(&GLOBALS.self_tgid)
}

/// Bytes one CPU queues before a record wakes the daemon; below it the daemon's own timer
/// drains the ring.
#[inline(always)]
pub fn wakeup_bytes() -> u32 {
    load(&GLOBALS.wakeup_bytes)
}

/// `address` as a BTF-typed pointer to the kernel type `btf_type` (`bpf_rdonly_cast`, which
/// the verifier turns into a move), so that its members are read with plain fault-safe loads
/// instead of helper calls; NULL where the kernel has no such kfunc (`btf_type` 0). The
/// pointer is read-only and untrusted: each load is checked against the type and faults
/// safely, like those of [`Direct`].
#[inline(always)]
pub fn typed_as(address: u64, btf_type: u32) -> *const u8 {
    if btf_type == 0 {
        return core::ptr::null();
    }
    let typed: *const u8;
    // SAFETY: the instruction is a kfunc call (see `sensor_common::kfunc`), which the daemon
    // links to `bpf_rdonly_cast` before load: arguments in r1 and r2, result in r0, r1-r5
    // clobbered, like any call. `btf_type` is a known constant to the verifier (read from the
    // daemon-filled globals), as the kfunc requires.
    unsafe {
        core::arch::asm!(
            ".quad {call}",
            call = const kfunc::RDONLY_CAST_CALL,
            inlateout("r1") address => _,
            inlateout("r2") u64::from(btf_type) => _,
            lateout("r0") typed,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
            options(nostack, nomem, preserves_flags),
        );
    }
    typed
}

/// `pointer` as a plain number. A BTF-typed pointer may be compared and stored but not hashed
/// or combined, and a record's code does both: a value stored into map memory and loaded back
/// is untyped to the verifier, like a probe read's result.
#[inline(always)]
pub fn untyped(pointer: *const u8) -> *const u8 {
    let Some(word) = rooms::word() else {
        return core::ptr::null();
    };
    // SAFETY: this CPU's room, used by one program at a time; volatile, so that the store and
    // the load are kept.
    unsafe {
        core::ptr::write_volatile(word, pointer as u64);
        core::ptr::read_volatile(word) as *const u8
    }
}

/// How a program reads kernel memory.
pub trait Mem {
    /// Whether pointers read this way are BTF-typed, so that members behind them can be read
    /// with plain loads.
    const TYPED: bool;

    /// Reads a `T` at `base + offset`, or `None` when the base is NULL, the member does not
    /// exist in this kernel, or the memory cannot be read.
    fn read<T: Copy>(base: *const u8, offset: u32) -> Option<T>;

    /// The current task, typed for this strategy.
    fn current_task() -> *const u8;

    /// Reads a non-NULL kernel pointer member.
    #[inline(always)]
    fn read_ptr(base: *const u8, offset: u32) -> Option<*const u8> {
        Self::read::<*const u8>(base, offset).filter(|p| !p.is_null())
    }

    /// Reads a byte-array member (`char comm[16]`) whole into `out`, which is left as it was
    /// when the member does not exist and zeroed when it cannot be read. Into its place rather
    /// than returned: an `Option` of an array is zeroed around its tag with calls to the
    /// byte-at-a-time `memset`.
    #[inline(always)]
    fn read_bytes_into<const N: usize>(base: *const u8, offset: u32, out: &mut [u8; N]) {
        read_into(base, offset, out);
    }
}

/// Plain loads through BTF-typed pointers (`tp_btf` programs only).
pub struct Direct;

impl Mem for Direct {
    const TYPED: bool = true;

    #[inline(always)]
    fn read<T: Copy>(base: *const u8, offset: u32) -> Option<T> {
        if base.is_null() || offset == MISSING {
            return None;
        }
        // Volatile keeps each load separate and of the member's own size, as the verifier's
        // type check wants.
        // SAFETY: BTF-typed pointer: the verifier checks this load against the member at `offset`.
        Some(unsafe { core::ptr::read_volatile(base.add(offset as usize) as *const T) })
    }

    #[inline(always)]
    fn current_task() -> *const u8 {
        // SAFETY: a helper without arguments.
        unsafe { bpf_get_current_task_btf() as *const u8 }
    }

    /// Byte by byte: the verifier types a load from a `char` array by its element, and a
    /// helper call costs more than the array's few loads (it runs for every process record).
    #[inline(always)]
    fn read_bytes_into<const N: usize>(base: *const u8, offset: u32, out: &mut [u8; N]) {
        if base.is_null() || offset == MISSING {
            return;
        }
        let mut index = 0;
        while index < N {
            // SAFETY: BTF-typed pointer: the verifier checks each byte against the member.
            out[index] = unsafe { core::ptr::read_volatile(base.add(offset as usize + index)) };
            index += 1;
        }
    }
}

/// `bpf_probe_read_kernel` for untyped pointers.
pub struct Probe;

impl Mem for Probe {
    const TYPED: bool = false;

    #[inline(always)]
    fn read<T: Copy>(base: *const u8, offset: u32) -> Option<T> {
        read_at(base, offset)
    }

    #[inline(always)]
    fn current_task() -> *const u8 {
        // SAFETY: a helper without arguments.
        unsafe { bpf_get_current_task() as *const u8 }
    }
}

/// `value`, read back so that the optimiser knows nothing of it: a mask applied to the result
/// is kept even where a check before made it look redundant. Older verifiers (6.1) lose such
/// checks' bounds once a value is spilled to the stack; the mask, applied right before the
/// value's use, gives them one they keep.
#[inline(always)]
pub fn opaque<T: Copy>(value: T) -> T {
    // SAFETY: a valid local; volatile only hides it from the optimiser.
    unsafe { core::ptr::read_volatile(&value) }
}

/// `bpf_probe_read_kernel` of a `T` at `base + offset`; `None` as for [`Mem::read`].
#[inline(always)]
pub fn read_at<T: Copy>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() || offset == MISSING {
        return None;
    }
    // SAFETY: the helper checks the source and faults safely.
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T).ok() }
}

/// Reads a `T` at `base + offset` into `out` with `bpf_probe_read_kernel`, which zeroes `out`
/// when it cannot read; `out` is left as it was for a NULL base or a member this kernel lacks.
/// For arrays in zeroed records: `read_at` returns an `Option`, whose array is zeroed around
/// its tag with calls to the byte-at-a-time `memset`.
#[inline(always)]
pub fn read_into<T: Copy>(base: *const u8, offset: u32, out: &mut T) {
    if base.is_null() || offset == MISSING {
        return;
    }
    // SAFETY: the helper writes `size_of::<T>()` bytes into `out`, and checks the source.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (out as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            base.add(offset as usize).cast(),
        );
    }
}

/// The current task's command name. aya's helper wrapper zeroes its buffer first, with a call
/// to the byte-at-a-time `memset`; the helper itself writes all 16 bytes (zeros if it fails).
#[inline(always)]
pub fn current_comm() -> [u8; COMM_LEN] {
    let mut comm = core::mem::MaybeUninit::<[u8; COMM_LEN]>::uninit();
    // SAFETY: the helper fills the whole buffer in every case.
    unsafe {
        aya_ebpf::helpers::generated::bpf_get_current_comm(
            comm.as_mut_ptr().cast(),
            COMM_LEN as u32,
        );
        comm.assume_init()
    }
}

/// Reads a non-NULL kernel pointer member with `bpf_probe_read_kernel`.
#[inline(always)]
pub fn read_ptr(base: *const u8, offset: u32) -> Option<*const u8> {
    read_at::<*const u8>(base, offset).filter(|p| !p.is_null())
}

/// Members of one (untyped) struct, read as one span of bytes (`start..start + N`, see
/// `sensor_common::offsets::spans`) with one helper call where the daemon found a span for this
/// kernel's layout, one probe read per member otherwise.
///
/// The span lands in a per-CPU room (see [`rooms`]) rather than on the stack: the path walk
/// runs as a `bpf_loop` callback, and older verifiers (6.1) count the stacks of the program and
/// its callback together, within 512 bytes.
pub struct Fields<'a, const N: usize> {
    base: *const u8,
    start: u32,
    span: Option<&'a [u8; N]>,
}

impl<'a, const N: usize> Fields<'a, N> {
    #[inline(always)]
    pub fn new(base: *const u8, span_start: u32, room: Option<&'a mut [u8; N]>) -> Self {
        let span = room.and_then(|room| {
            let filled = !base.is_null()
                && span_start != MISSING
                // SAFETY: reads into this CPU's room of exactly the span's size; the helper checks
                // the source.
                && unsafe {
                    aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                        room.as_mut_ptr().cast(),
                        N as u32,
                        base.add(span_start as usize).cast(),
                    )
                } == 0;
            filled.then_some(&*room)
        });
        Self {
            base,
            start: span_start,
            span,
        }
    }

    #[inline(always)]
    pub fn get<T: Copy>(&self, offset: u32) -> Option<T> {
        match self.span {
            Some(span) => {
                let relative = offset.wrapping_sub(self.start) as usize;
                if offset == MISSING || relative + core::mem::size_of::<T>() > N {
                    return None;
                }
                // SAFETY: `relative + size_of::<T>() <= N` was checked just above.
                Some(unsafe { core::ptr::read_unaligned(span.as_ptr().add(relative) as *const T) })
            }
            None => read_at(self.base, offset),
        }
    }

    #[inline(always)]
    pub fn ptr(&self, offset: u32) -> Option<*const u8> {
        self.get::<*const u8>(offset).filter(|p| !p.is_null())
    }
}

/// Per-CPU rooms for [`Fields`] spans, one per struct so that nested reads do not overlap.
pub mod rooms {
    use sensor_common::offsets::spans;

    use crate::maps::SPAN_ROOMS;

    #[repr(C)]
    pub struct SpanRooms {
        pub file: [u8; spans::FILE],
        pub inode: [u8; spans::INODE],
        pub dentry: [u8; spans::DENTRY],
        /// A word that BTF-typed pointers pass through to become numbers (`untyped`).
        pub word: u64,
    }

    #[inline(always)]
    fn all() -> Option<*mut SpanRooms> {
        SPAN_ROOMS.get_ptr_mut(0)
    }

    #[inline(always)]
    pub fn file() -> Option<&'static mut [u8; spans::FILE]> {
        // SAFETY: a per-CPU room, used by one program at a time on this CPU.
        all().map(|r| unsafe { &mut (*r).file })
    }

    #[inline(always)]
    pub fn inode() -> Option<&'static mut [u8; spans::INODE]> {
        // SAFETY: as above.
        all().map(|r| unsafe { &mut (*r).inode })
    }

    #[inline(always)]
    pub fn dentry() -> Option<&'static mut [u8; spans::DENTRY]> {
        // SAFETY: as above.
        all().map(|r| unsafe { &mut (*r).dentry })
    }

    #[inline(always)]
    pub fn word() -> Option<*mut u64> {
        // SAFETY: as above; only the field's address is taken.
        all().map(|r| unsafe { core::ptr::addr_of_mut!((*r).word) })
    }
}
