//! Appending variable-length pieces (paths, argv) to a record's blob.
//!
//! Write offsets are masked with `MASK` so the verifier can prove every write stays inside the
//! blob: a blob is `MASK + 1 + PATH_MAX` bytes and each piece is at most PATH_MAX.
use aya_ebpf::helpers::generated::{
    bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str,
};
use sensor_common::{BlobRef, PATH_MAX};

pub struct Blob<const MASK: usize> {
    base: *mut u8,
    pub used: usize,
}

impl<const MASK: usize> Blob<MASK> {
    #[inline(always)]
    pub fn new(base: *mut u8) -> Self {
        Self { base, used: 0 }
    }

    #[inline(always)]
    fn slot(&self, len: usize) -> (usize, u32) {
        let offset = self.used & MASK;
        let len = if len > PATH_MAX { PATH_MAX } else { len };
        (offset, len as u32)
    }

    #[inline(always)]
    fn commit(&mut self, offset: usize, len: usize) -> BlobRef {
        self.used = offset + len;
        BlobRef {
            offset: offset as u16,
            len: len as u16,
        }
    }

    /// Copies `len` (at most PATH_MAX) bytes of kernel memory.
    #[inline(always)]
    pub fn kernel(&mut self, src: *const u8, len: usize) -> Option<BlobRef> {
        let (offset, len) = self.slot(len);
        // SAFETY: the destination is `len` (at most PATH_MAX) bytes at a masked offset inside the
        // blob; the helper checks the source.
        let ret = unsafe { bpf_probe_read_kernel(self.base.add(offset).cast(), len, src.cast()) };
        (ret == 0).then(|| self.commit(offset, len as usize))
    }

    /// Copies the first `len` bytes of `src`, a buffer in map memory, with plain loads and
    /// stores a word at a time; the piece starts on a word boundary of the blob.
    #[inline(always)]
    pub fn words<const N: usize>(&mut self, src: &[u8; N], len: usize) -> Option<BlobRef> {
        const { assert!(N % 8 == 0 && N <= PATH_MAX) };
        if len > N {
            return None;
        }
        let offset = ((self.used + 7) & !7) & MASK;
        self.zero_gap(offset);
        let words = len.div_ceil(8);
        let mut index = 0;
        while index < words && index < N / 8 {
            // SAFETY: word `index` < N / 8 of `src`, which is 8-aligned in its map value (the
            // callers' `#[repr(C)]` layouts put it there); the destination is within PATH_MAX
            // bytes of a masked, word-aligned offset inside the blob. Volatile, so that the
            // loop is not turned into a call of the byte-wise `memcpy`.
            unsafe {
                let word = core::ptr::read_volatile(src.as_ptr().cast::<u64>().add(index));
                core::ptr::write_volatile(self.base.add(offset).cast::<u64>().add(index), word);
            }
            index += 1;
        }
        Some(self.commit(offset, len))
    }

    /// Zeroes the bytes between the end of the last piece and `offset`, a word boundary less
    /// than a word on: they are sent with the record, and the blob is not cleared between
    /// records, so they would carry bytes of an earlier one.
    #[inline(always)]
    fn zero_gap(&mut self, offset: usize) {
        let start = self.used & MASK;
        let mut skipped = 0;
        while skipped < 7 {
            let at = start + skipped;
            if at >= offset {
                break;
            }
            // SAFETY: `at` is below `offset`, a masked offset inside the blob.
            unsafe { core::ptr::write_volatile(self.base.add(at), 0) };
            skipped += 1;
        }
    }

    /// Copies `len` (at most PATH_MAX) bytes of the current task's user memory.
    #[inline(always)]
    pub fn user(&mut self, src: *const u8, len: usize) -> Option<BlobRef> {
        let (offset, len) = self.slot(len);
        // SAFETY: as above; the helper faults safely on bad user memory.
        let ret = unsafe { bpf_probe_read_user(self.base.add(offset).cast(), len, src.cast()) };
        (ret == 0).then(|| self.commit(offset, len as usize))
    }

    /// Copies a NUL-terminated kernel string (at most PATH_MAX bytes with its NUL); the piece
    /// excludes the NUL.
    #[inline(always)]
    pub fn kernel_str(&mut self, src: *const u8) -> Option<BlobRef> {
        let (offset, _) = self.slot(0);
        // SAFETY: at most PATH_MAX bytes, NUL included, at a masked offset inside the blob.
        let ret = unsafe {
            bpf_probe_read_kernel_str(self.base.add(offset).cast(), PATH_MAX as u32, src.cast())
        };
        if ret <= 0 {
            return None;
        }
        let len = (ret as usize - 1) & (PATH_MAX - 1);
        Some(self.commit(offset, len))
    }

    /// Copies a NUL-terminated user string (at most PATH_MAX bytes with its NUL); the piece
    /// excludes the NUL. Returns the piece and whether the string was cut at PATH_MAX.
    #[inline(always)]
    pub fn user_str(&mut self, src: *const u8) -> Option<(BlobRef, bool)> {
        let (offset, _) = self.slot(0);
        // SAFETY: at most PATH_MAX bytes, NUL included, at a masked offset inside the blob.
        let ret = unsafe {
            bpf_probe_read_user_str(self.base.add(offset).cast(), PATH_MAX as u32, src.cast())
        };
        if ret <= 0 {
            return None;
        }
        let with_nul = ret as usize;
        let truncated = with_nul >= PATH_MAX;
        let len = (with_nul - 1) & (PATH_MAX - 1);
        Some((self.commit(offset, len), truncated))
    }
}
