//! The kernel's per-kind counts of records that did not fit in the ring buffer.
use anyhow::{anyhow, Result};
use aya::{
    maps::{MapData, PerCpuArray},
    Ebpf,
};
use sensor_common::{kind, DROP_COUNTERS_MAP};

pub struct DropCounters {
    map: PerCpuArray<MapData, u64>,
    reported: [u64; kind::COUNT as usize],
}

impl DropCounters {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let map = ebpf
            .take_map(DROP_COUNTERS_MAP)
            .ok_or_else(|| anyhow!("map {DROP_COUNTERS_MAP} missing from the object"))?;
        Ok(Self {
            map: PerCpuArray::try_from(map)?,
            reported: [0; kind::COUNT as usize],
        })
    }

    /// Drops since the previous call, as `(kind, count)` for each kind that had any.
    pub fn new_drops(&mut self) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        for kind in 0..kind::COUNT {
            let Ok(values) = self.map.get(&kind, 0) else {
                continue;
            };
            let total: u64 = values.iter().copied().sum();
            let reported = &mut self.reported[kind as usize];
            if total > *reported {
                out.push((kind, total - *reported));
                *reported = total;
            }
        }
        out
    }
}
