//! Per-identity, per-device counts of files opened for writing, for periodic summaries.
use std::collections::{HashMap, HashSet};

use custos_proto::v1::BlockDevice;

/// Distinct files remembered per (identity, device) and period; more are counted as opens only.
const MAX_FILES: usize = 10_000;

/// Who wrote: the real uid and the login uid behind it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Writer {
    pub uid: u32,
    pub login_uid: u32,
}

#[derive(Debug, Default)]
pub struct Counts {
    /// The device as it was described at the first write (it may be gone by the summary).
    pub device: BlockDevice,
    pub write_opens: u64,
    pub create_opens: u64,
    pub files: HashSet<u64>,
}

#[derive(Default)]
pub struct WriteCounter {
    by_writer: HashMap<(Writer, u32), Counts>,
}

impl WriteCounter {
    pub fn count(&mut self, writer: Writer, device: &BlockDevice, inode: u64, created: bool) {
        let dev = crate::devices::kernel_dev(device.major, device.minor);
        let counts = self
            .by_writer
            .entry((writer, dev))
            .or_insert_with(|| Counts {
                device: device.clone(),
                ..Counts::default()
            });
        counts.write_opens += 1;
        if created {
            counts.create_opens += 1;
        }
        if counts.files.len() < MAX_FILES {
            counts.files.insert(inode);
        }
    }

    /// Everything counted since the last call.
    pub fn take(&mut self) -> Vec<((Writer, u32), Counts)> {
        self.by_writer.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_per_writer_and_device_and_reset_when_taken() {
        let mut counter = WriteCounter::default();
        let alice = Writer {
            uid: 1000,
            login_uid: 1000,
        };
        let device = |minor| BlockDevice {
            major: 7,
            minor,
            ..BlockDevice::default()
        };
        counter.count(alice, &device(7), 11, true);
        counter.count(alice, &device(7), 11, false);
        counter.count(alice, &device(7), 12, true);
        counter.count(alice, &device(8), 11, false);
        let mut taken = counter.take();
        taken.sort_by_key(|((_, dev), _)| *dev);
        let (_, on_7) = &taken[0];
        assert_eq!(on_7.device.minor, 7);
        assert_eq!(on_7.device.minor, 7);
        assert_eq!(
            (on_7.write_opens, on_7.create_opens, on_7.files.len()),
            (3, 2, 2)
        );
        assert_eq!(taken.len(), 2);
        assert!(counter.take().is_empty());
    }
}
