//! The kernel's per-kind counts of records that did not fit in the ring buffer, and of
//! records whose follow-up a full kernel table will not report.
use anyhow::{anyhow, Result};
use aya::{
    maps::{MapData, PerCpuArray},
    Ebpf,
};
use sensor_common::{DROP_ANY, DROP_COUNTERS_MAP, DROP_KIND_SLOTS, UNTRACKED_BASE};

pub struct DropCounters {
    map: PerCpuArray<MapData, u64>,
    reported: [u64; DROP_KIND_SLOTS as usize],
    /// The [`DROP_ANY`] total when the slots were last read.
    any_reported: u64,
}

impl DropCounters {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let map = ebpf
            .take_map(DROP_COUNTERS_MAP)
            .ok_or_else(|| anyhow!("map {DROP_COUNTERS_MAP} missing from the object"))?;
        Ok(Self {
            map: PerCpuArray::try_from(map)?,
            reported: [0; DROP_KIND_SLOTS as usize],
            any_reported: 0,
        })
    }

    /// Drops since the previous call, as `(kind, cause, count)` for each kind and cause that
    /// had any.
    pub fn new_drops(&mut self) -> Vec<(u32, DropCause, u64)> {
        let mut out = Vec::new();
        // One lookup while nothing is dropped, instead of one per slot every second.
        let Some(any) = self.total(DROP_ANY) else {
            return out;
        };
        if any == self.any_reported {
            return out;
        }
        self.any_reported = any;
        for slot in 0..DROP_KIND_SLOTS {
            let Some(total) = self.total(slot) else {
                continue;
            };
            let reported = &mut self.reported[slot as usize];
            if total > *reported {
                let (kind, cause) = if slot >= UNTRACKED_BASE {
                    (slot - UNTRACKED_BASE, DropCause::TrackingTableFull)
                } else {
                    (slot, DropCause::RingBufferFull)
                };
                out.push((kind, cause, total - *reported));
                *reported = total;
            }
        }
        out
    }

    /// A slot's count over all CPUs.
    fn total(&self, slot: u32) -> Option<u64> {
        let values = self.map.get(&slot, 0).ok()?;
        Some(values.iter().copied().sum())
    }
}

/// Why the kernel counted a record instead of delivering all of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropCause {
    /// The record did not fit in the ring buffer.
    RingBufferFull,
    /// The record went out, but the table that follows it to its end (open TCP connections)
    /// was full: its end will not be reported.
    TrackingTableFull,
}
