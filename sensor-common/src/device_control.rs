//! The device-control family: devices the kernel refuses to mount or open, where BPF LSM runs.
//! Its decisions are made by the daemon; the kernel's refusals arrive as block-device records
//! (`DENIED_MOUNT`, `DENIED_OPEN`).

/// Devices (kernel dev_t) the kernel refuses to mount or open (value: the deciding rule's
/// index).
pub const DENIED_DEVICES_MAP: &str = "DENIED_DEVICES";
