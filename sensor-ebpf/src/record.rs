//! Where every record starts: zeroed, with its header stamped. A record is built either in a
//! reserved ring-buffer slot (fixed-size records) or in a per-CPU staging buffer (records with a
//! blob), and no field can carry bytes of an earlier event, whichever fields a program sets.
use core::mem::{align_of, size_of};

use aya_ebpf::maps::{ring_buf::RingBufEntry, PerCpuArray};
use sensor_common::{
    BlockDeviceBuffer, ExecBuffer, FileBuffer, MountBuffer, NetworkBuffer, Record, RecordHeader,
};

use crate::{
    emit::{count_drop, now_ns, output_bytes, submit_flags},
    maps::EVENTS,
};

/// A staging buffer: a record followed by its blob, the record first (`#[repr(C)]`).
pub trait Staging {
    type Record: Record;
    fn record(&mut self) -> &mut Self::Record;
}

macro_rules! staging {
    ($($buffer:ty => $record:ty;)*) => {$(
        impl Staging for $buffer {
            type Record = $record;
            #[inline(always)]
            fn record(&mut self) -> &mut $record {
                &mut self.record
            }
        }
    )*};
}

staging! {
    ExecBuffer => sensor_common::ExecRecord;
    FileBuffer => sensor_common::FileOpenRecord;
    BlockDeviceBuffer => sensor_common::BlockDeviceRecord;
    MountBuffer => sensor_common::MountRecord;
    NetworkBuffer => sensor_common::NetworkRecord;
}

/// Zeroes `record` and stamps its header.
#[inline(always)]
fn zero_and_stamp<T: Record>(record: *mut T, size: u32, ktime_ns: u64) {
    zero_words(record);
    // SAFETY: the `Record` contract puts a `RecordHeader` at offset 0 of a `#[repr(C)]` `T`.
    let header = unsafe { &mut *record.cast::<RecordHeader>() };
    *header = RecordHeader {
        kind: T::KIND,
        size,
        ktime_ns,
    };
}

/// Zeroes one `T` eight bytes at a time. `write_bytes` would become a call to the byte-wise
/// `memset` BPF has, several hundred instructions per record.
#[inline(always)]
fn zero_words<T: Record>(record: *mut T) {
    const { assert!(size_of::<T>() % 8 == 0 && align_of::<T>() >= 8) };
    let words = record.cast::<u64>();
    let mut index = 0;
    while index < size_of::<T>() / 8 {
        // SAFETY: `record` points at writable memory for one `T` (a reserved slot or a per-CPU
        // buffer), 8-aligned and a whole number of words long (checked above), and the
        // `Record` contract makes all-zero bytes a valid `T`. Volatile, so that the loop is
        // not turned back into a `memset` call.
        unsafe { core::ptr::write_volatile(words.add(index), 0) };
        index += 1;
    }
}

/// Copies one `T` eight bytes at a time: a plain assignment of a large `T` becomes a call to
/// the byte-wise `memmove`, an instruction loop per byte.
#[inline(always)]
pub fn copy_words<T: Record>(to: &mut T, from: &T) {
    const { assert!(size_of::<T>() % 8 == 0 && align_of::<T>() >= 8) };
    let to = (to as *mut T).cast::<u64>();
    let from = (from as *const T).cast::<u64>();
    let mut index = 0;
    while index < size_of::<T>() / 8 {
        // SAFETY: both are whole `T`s, 8-aligned and a whole number of words long (checked
        // above), and distinct (one is borrowed mutably). Volatile, so that the loop is not
        // turned back into a `memmove` call.
        unsafe {
            core::ptr::write_volatile(to.add(index), core::ptr::read_volatile(from.add(index)))
        };
        index += 1;
    }
}

/// A fixed-size record in a reserved ring-buffer slot.
pub struct Reserved<T: Record>(RingBufEntry<T>);

impl<T: Record> Reserved<T> {
    /// Reserves a slot for a zeroed `T` stamped now; a full ring buffer counts a drop of its
    /// kind.
    #[inline(always)]
    pub fn new() -> Option<Self> {
        Self::stamped(now_ns())
    }

    /// [`Self::new`] for a record whose time the kernel already took (CLOCK_BOOTTIME ns).
    #[inline(always)]
    pub fn stamped(ktime_ns: u64) -> Option<Self> {
        let reserved = Self::uncounted(ktime_ns);
        if reserved.is_none() {
            count_drop(T::KIND);
        }
        reserved
    }

    /// [`Self::stamped`] without counting a drop when the ring buffer is full: for a record
    /// that another CPU may send at the same moment, whose caller counts it lost only once it
    /// knows that no other CPU sent it.
    #[inline(always)]
    pub fn uncounted(ktime_ns: u64) -> Option<Self> {
        let mut entry = EVENTS.reserve::<T>(0)?;
        zero_and_stamp(entry.as_mut_ptr(), size_of::<T>() as u32, ktime_ns);
        Some(Self(entry))
    }

    #[inline(always)]
    pub fn record(&mut self) -> &mut T {
        // SAFETY: `new` wrote a whole zeroed `T`, which the `Record` contract makes valid.
        unsafe { self.0.assume_init_mut() }
    }

    /// Gives the slot back unsent.
    #[inline(always)]
    pub fn discard(self) {
        self.0.discard(0);
    }

    #[inline(always)]
    pub fn submit(self) {
        self.0.submit(submit_flags(T::KIND, size_of::<T>()));
    }
}

/// This CPU's staging buffer in `map`, its record zeroed and stamped at `ktime_ns` (the size is
/// set by [`send`]). The blob is not cleared: only the bytes written to it are sent.
#[inline(always)]
pub fn stage<B: Staging>(map: &'static PerCpuArray<B>, ktime_ns: u64) -> Option<&'static mut B> {
    // SAFETY: a per-CPU slot, used by one program at a time on this CPU (programs do not
    // preempt each other), and valid for the life of the program.
    let buffer = unsafe { &mut *map.get_ptr_mut(0)? };
    zero_and_stamp(buffer.record() as *mut B::Record, 0, ktime_ns);
    Some(buffer)
}

/// Sends a staged record and the `used` bytes of its blob; false when the ring buffer refused
/// it (the drop is counted).
#[inline(always)]
pub fn send<B: Staging>(buffer: &mut B, used: usize) -> bool {
    let mut size = size_of::<B::Record>() + used;
    if size > size_of::<B>() {
        size = size_of::<B>();
    }
    // SAFETY: as in `zero_and_stamp`, the header is at offset 0 of the record.
    let header = unsafe { &mut *(buffer.record() as *mut B::Record).cast::<RecordHeader>() };
    header.size = size as u32;
    output_bytes(
        <B::Record as Record>::KIND,
        (buffer as *const B).cast(),
        size,
    )
}
