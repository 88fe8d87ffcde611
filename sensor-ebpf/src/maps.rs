//! Maps shared by all programs.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use sensor_common::{
    BlockDeviceBuffer, ExeKey, ExecBuffer, FileBuffer, FileDedupKey, FileDedupState,
    FileFilterConfig, MountBuffer, NetworkBuffer, NetworkDedupKey, NetworkDedupState,
    NetworkFilterConfig, NetworkRecord, OpenVerdict, OpenVerdictKey, PrefixKey, UringOpen,
    DROP_SLOTS, FILE_DEDUP_ENTRIES, NETWORK_DEDUP_ENTRIES, OPEN_VERDICTS_ENTRIES, PREFIX_MAX,
};

use crate::{
    emit::QueuedBytes,
    file::{RecentVerdict, RECENT_VERDICT_SLOTS},
    kread::rooms::SpanRooms,
    path::PathScratch,
    recent_paths::{RecentPath, RECENT_PATH_SLOTS},
};

/// The one ring buffer every record goes through (size set by the daemon at load).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// See `sensor_common::READER_ASLEEP_MAP`.
#[map(name = "READER_ASLEEP")]
pub static READER_ASLEEP: Array<u32> = Array::with_max_entries(1, 0);

/// Per CPU, the bytes it queued since the daemon last read the ring; see `emit::submit_flags`.
#[map(name = "QUEUED_BYTES")]
pub static QUEUED_BYTES: PerCpuArray<QueuedBytes> = PerCpuArray::with_max_entries(1, 0);

/// Failed ring-buffer writes, per record kind; the daemon turns them into loss events.
#[map(name = "DROPS")]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_SLOTS, 0);

/// Staging area for exec records, too large for the 512-byte stack.
#[map(name = "EXEC_BUF")]
pub static EXEC_BUF: PerCpuArray<ExecBuffer> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for the kernel-side path walk.
#[map(name = "PATH_BUF")]
pub static PATH_BUF: PerCpuArray<PathScratch> = PerCpuArray::with_max_entries(1, 0);

/// Staging area for file-open records.
#[map(name = "FILE_BUF")]
pub static FILE_BUF: PerCpuArray<FileBuffer> = PerCpuArray::with_max_entries(1, 0);

/// File sensor settings (slot 0), rewritten by the daemon on reload.
#[map(name = "FILE_FILTER")]
pub static FILE_FILTER: Array<FileFilterConfig> = Array::with_max_entries(1, 0);

/// Path prefix rules: longest match wins; value is a `filter_action`.
#[map(name = "PATH_PREFIXES")]
pub static PATH_PREFIXES: LpmTrie<[u8; PREFIX_MAX], u32> = LpmTrie::with_max_entries(1024, 0);

/// Scratch key for prefix lookups (too large for the stack).
#[map(name = "PREFIX_KEY")]
pub static PREFIX_KEY: PerCpuArray<PrefixKey> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "FILTER_UIDS")]
pub static FILTER_UIDS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

#[map(name = "FILTER_COMMS")]
pub static FILTER_COMMS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(1024, 0);

#[map(name = "FILTER_CGROUPS")]
pub static FILTER_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);

#[map(name = "FILTER_EXES")]
pub static FILTER_EXES: HashMap<ExeKey, u32> = HashMap::with_max_entries(1024, 0);

/// Open deduplication windows; LRU so that the busiest keys stay.
#[map(name = "FILE_DEDUP")]
pub static FILE_DEDUP: LruHashMap<FileDedupKey, FileDedupState> =
    LruHashMap::with_max_entries(FILE_DEDUP_ENTRIES, 0);

/// Path-rule exclusions remembered by name (see [`OpenVerdict`]); LRU, so the names opened
/// most stay.
#[map(name = "OPEN_VERDICTS")]
pub static OPEN_VERDICTS: LruHashMap<OpenVerdictKey, OpenVerdict> =
    LruHashMap::with_max_entries(OPEN_VERDICTS_ENTRIES, 0);

/// Per CPU, the verdicts last found or made in `OPEN_VERDICTS`, each in the slot its name
/// hashes to: the few names every program start opens hit here, in this CPU's cache, without
/// the shared map's hash and bucket walk.
#[map(name = "RECENT_VERDICTS")]
pub static RECENT_VERDICTS: PerCpuArray<RecentVerdict> =
    PerCpuArray::with_max_entries(RECENT_VERDICT_SLOTS, 0);

/// Per CPU, paths lately resolved for exec records, each in the slot its name hashes to (see
/// `recent_paths`).
#[map(name = "RECENT_PATHS")]
pub static RECENT_PATHS: PerCpuArray<RecentPath> =
    PerCpuArray::with_max_entries(RECENT_PATH_SLOTS, 0);

/// Slot 0 counts renames and mount changes anywhere: a remembered verdict holds only while it
/// is unchanged.
#[map(name = "NAMES_GENERATION")]
pub static NAMES_GENERATION: Array<u64> = Array::with_max_entries(1, 0);

/// io_uring open requests between submission and completion, by request address.
#[map(name = "URING_OPENS")]
pub static URING_OPENS: LruHashMap<u64, UringOpen> = LruHashMap::with_max_entries(1024, 0);

/// Staging for a [`UringOpen`] (too large for the stack).
#[map(name = "URING_SCRATCH")]
pub static URING_SCRATCH: PerCpuArray<UringOpen> = PerCpuArray::with_max_entries(1, 0);

/// Staging for device records.
#[map(name = "BLOCK_DEVICE_BUF")]
pub static BLOCK_DEVICE_BUF: PerCpuArray<BlockDeviceBuffer> = PerCpuArray::with_max_entries(1, 0);

/// Staging for mount records.
#[map(name = "MOUNT_BUF")]
pub static MOUNT_BUF: PerCpuArray<MountBuffer> = PerCpuArray::with_max_entries(1, 0);

/// Devices (kernel dev_t) whose write opens are always reported (removable media, loop
/// devices); maintained by the daemon.
#[map(name = "WATCHED_DEVICES")]
pub static WATCHED_DEVICES: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// Devices (kernel dev_t) the kernel refuses to mount or open, where BPF LSM runs; maintained
/// by the daemon from its device rules.
#[map(name = "DENIED_DEVICES")]
pub static DENIED_DEVICES: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// Slot 0: 1 while LSM `file_open` reports successful opens, so `sys_exit` reports only the
/// failures (set by the daemon around attaching it).
#[map(name = "OPEN_HOOK")]
pub static OPEN_HOOK: Array<u32> = Array::with_max_entries(1, 0);

/// Per-CPU rooms for struct spans read with one helper call (see `kread::Fields`).
#[map(name = "SPAN_ROOMS")]
pub static SPAN_ROOMS: PerCpuArray<SpanRooms> = PerCpuArray::with_max_entries(1, 0);

/// Network sensor settings (slot 0), rewritten by the daemon on reload.
#[map(name = "NETWORK_FILTER")]
pub static NETWORK_FILTER: Array<NetworkFilterConfig> = Array::with_max_entries(1, 0);

/// Staging for network records.
#[map(name = "NETWORK_BUF")]
pub static NETWORK_BUF: PerCpuArray<NetworkBuffer> = PerCpuArray::with_max_entries(1, 0);

/// Non-blocking connects in progress, by `struct sock` address, until their outcome is known.
#[map(name = "PENDING_CONNECTS")]
pub static PENDING_CONNECTS: LruHashMap<u64, NetworkRecord> = LruHashMap::with_max_entries(4096, 0);

/// Address rules (CIDR, IPv4 as IPv4-mapped IPv6): longest match wins; value is a
/// `filter_action`.
#[map(name = "NETWORK_ADDRS")]
pub static NETWORK_ADDRS: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(1024, 0);

/// Port rules: port to `filter_action`.
#[map(name = "NETWORK_PORTS")]
pub static NETWORK_PORTS: HashMap<u16, u32> = HashMap::with_max_entries(1024, 0);

/// User rules for the network sensor: real uid to `filter_action`.
#[map(name = "NETWORK_UIDS")]
pub static NETWORK_UIDS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// Command-name rules for the network sensor.
#[map(name = "NETWORK_COMMS")]
pub static NETWORK_COMMS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(1024, 0);

/// Connect dedup windows; LRU so that the busiest keys stay.
#[map(name = "NETWORK_DEDUP")]
pub static NETWORK_DEDUP: LruHashMap<NetworkDedupKey, NetworkDedupState> =
    LruHashMap::with_max_entries(NETWORK_DEDUP_ENTRIES, 0);

/// Reported TCP connections still open, by `struct sock` address, until they end. Allocated
/// as connections come (no preallocation); the daemon sets the size.
#[map(name = "CONNECTIONS")]
pub static CONNECTIONS: HashMap<u64, NetworkRecord> =
    HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

const BPF_F_NO_PREALLOC: u32 = 1;
