//! Devices the kernel itself refuses (BPF LSM): their mounts and the opens of their nodes fail
//! with EPERM. Kept in the `DENIED_DEVICES` map, with the rule that decided, for the events
//! the kernel's refusals become.
use std::collections::HashMap;

use aya::maps::{HashMap as BpfHashMap, MapData};

pub struct KernelDenyList {
    map: BpfHashMap<MapData, u32, u32>,
    rules: HashMap<u32, String>,
}

impl KernelDenyList {
    pub fn new(map: BpfHashMap<MapData, u32, u32>) -> Self {
        Self {
            map,
            rules: HashMap::new(),
        }
    }

    /// Denies kernel dev_t `dev` from now on, because of `rule`.
    pub fn deny(&mut self, dev: u32, rule: &str) -> Result<(), String> {
        self.map
            .insert(dev, 1, 0)
            .map_err(|e| format!("adding the device to the kernel's deny list: {e}"))?;
        self.rules.insert(dev, rule.to_owned());
        Ok(())
    }

    /// The rule that denied `dev`, if it is denied.
    pub fn rule_of(&self, dev: u32) -> Option<&str> {
        self.rules.get(&dev).map(String::as_str)
    }

    /// The device is gone: a new device with its numbers starts undecided.
    pub fn release(&mut self, dev: u32) {
        if self.rules.remove(&dev).is_some() {
            let _ = self.map.remove(&dev);
        }
    }
}
