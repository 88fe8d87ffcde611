//! Loads the programs and attaches each hook through the best path this kernel allows.
//!
//! For each hook the `tp_btf` program is tried first (typed arguments, cheapest); if the kernel
//! refuses it, the classic (or raw) tracepoint twin is used. Which path each hook got is logged and
//! returned, so `custos` can say exactly what it is running on.
use std::fmt;

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    programs::{BtfTracePoint, RawTracePoint, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use sensor_common::{EVENTS_MAP, OFFSETS_GLOBAL, SELF_TGID_GLOBAL, WAKEUP_BYTES_GLOBAL};

use super::{btf_offsets, mounts, privileges};

/// The compiled `sensor-ebpf` programs, built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor"));

/// How a hook ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachPath {
    TpBtf,
    Tracepoint,
    RawTracepoint,
    /// Neither path loaded; the hook is off (only allowed for optional hooks).
    Unavailable,
}

impl fmt::Display for AttachPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachPath::TpBtf => "tp_btf",
            AttachPath::Tracepoint => "tracepoint",
            AttachPath::RawTracepoint => "raw_tracepoint",
            AttachPath::Unavailable => "unavailable",
        })
    }
}

/// One kernel hook and the programs that can serve it.
struct HookSpec {
    hook: &'static str,
    btf_program: &'static str,
    /// The program to use where tp_btf is refused.
    fallback: Fallback,
    /// Without a required hook the sensor refuses to start rather than run blind.
    required: bool,
    /// Which sensor needs the hook.
    sensor: Sensor,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sensor {
    Process,
    /// Part of the file sensor, where the kernel has io_uring.
    IoUring,
    /// Block devices.
    Devices,
}

#[derive(Clone, Copy)]
enum Fallback {
    None,
    /// `(program, category, name)` of a classic tracepoint.
    Tracepoint(&'static str, &'static str, &'static str),
    /// `(program, name)` of a raw tracepoint.
    RawTracepoint(&'static str, &'static str),
}

const HOOKS: &[HookSpec] = &[
    HookSpec {
        hook: "sched_process_exec",
        btf_program: "sched_process_exec_btf",
        fallback: Fallback::Tracepoint("sched_process_exec_tp", "sched", "sched_process_exec"),
        required: true,
        sensor: Sensor::Process,
    },
    HookSpec {
        hook: "sched_process_exit",
        btf_program: "sched_process_exit_btf",
        fallback: Fallback::Tracepoint("sched_process_exit_tp", "sched", "sched_process_exit"),
        required: true,
        sensor: Sensor::Process,
    },
    HookSpec {
        hook: "sched_process_fork",
        btf_program: "sched_process_fork_btf",
        fallback: Fallback::None,
        required: false,
        sensor: Sensor::Process,
    },
    // Syscall results: file opens (file sensor) and credential changes (process sensor).
    HookSpec {
        hook: "sys_exit",
        btf_program: "sys_exit_btf",
        fallback: Fallback::RawTracepoint("sys_exit_raw", "sys_exit"),
        required: true,
        sensor: Sensor::Process,
    },
    // A new disk registers its backing device: USB drives, loop devices, any new disk.
    HookSpec {
        hook: "writeback_bdi_register",
        btf_program: "writeback_bdi_register",
        fallback: Fallback::None,
        required: false,
        sensor: Sensor::Devices,
    },
    // io_uring opens bypass the syscalls: their submission (for the path) and completion.
    HookSpec {
        hook: "io_uring_submit_req",
        btf_program: "io_uring_submit_req",
        fallback: Fallback::None,
        required: false,
        sensor: Sensor::IoUring,
    },
    HookSpec {
        hook: "io_uring_complete",
        btf_program: "io_uring_complete",
        fallback: Fallback::None,
        required: false,
        sensor: Sensor::IoUring,
    },
];

pub struct LoadOptions {
    pub ring_buffer_bytes: u32,
    /// Buffered bytes at which the kernel wakes the reader (0: every record).
    pub wakeup_bytes: u32,
    pub self_tgid: u32,
    /// Whether tp_btf may be tried (false: classic and raw tracepoints only).
    pub allow_btf: bool,
    /// Whether the file-open hook is wanted.
    pub file_sensor: bool,
    /// Whether the block-device hooks are wanted.
    pub device_sensor: bool,
}

/// The loaded programs; dropping it detaches every hook.
pub struct LoadedSensor {
    pub ebpf: Ebpf,
    pub hooks: Vec<(&'static str, AttachPath)>,
}

pub fn load(options: &LoadOptions) -> Result<LoadedSensor> {
    // Lead with what to do; the kernel's own words follow.
    load_inner(options).map_err(
        |err| match privileges::explain(privileges::root_errno(&err)) {
            Some(what_to_do) => err.context(what_to_do),
            None => err,
        },
    )
}

fn load_inner(options: &LoadOptions) -> Result<LoadedSensor> {
    privileges::raise_memlock_limit();
    // Two parsers read the kernel's BTF; one at a time keeps the start-up peak of memory down.
    let offsets = btf_offsets::resolve(&btf_offsets::BtfLayout::from_running_kernel()?)?;
    let btf = Btf::from_sys_fs().context("parsing /sys/kernel/btf/vmlinux for tp_btf programs")?;

    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global(OFFSETS_GLOBAL, &offsets, true)
        .override_global(SELF_TGID_GLOBAL, &options.self_tgid, true)
        .override_global(WAKEUP_BYTES_GLOBAL, &options.wakeup_bytes, true)
        .map_max_entries(EVENTS_MAP, options.ring_buffer_bytes)
        .load(EBPF_OBJECT)
        .context("loading the eBPF object into the kernel")?;

    if options.file_sensor && offsets.regs_orig_ax == sensor_common::offsets::MISSING {
        bail!(
            "the file sensor reads x86_64 syscall registers and this kernel's pt_regs has none: \
             set [sensors] file = false to run without it"
        );
    }
    let mut hooks = Vec::new();
    for spec in HOOKS {
        let wanted = match spec.sensor {
            Sensor::Process => true,
            Sensor::Devices => options.device_sensor,
            Sensor::IoUring => {
                options.file_sensor && offsets.kiocb_opcode != sensor_common::offsets::MISSING
            }
        };
        if !wanted {
            continue;
        }
        let path = attach_hook(&mut ebpf, &btf, spec, options.allow_btf)?;
        tracing::info!(hook = spec.hook, path = %path, "hook attached");
        hooks.push((spec.hook, path));
    }
    Ok(LoadedSensor { ebpf, hooks })
}

fn attach_hook(ebpf: &mut Ebpf, btf: &Btf, spec: &HookSpec, allow_btf: bool) -> Result<AttachPath> {
    let btf_error = if allow_btf {
        match attach_btf(ebpf, btf, spec) {
            Ok(()) => return Ok(AttachPath::TpBtf),
            Err(err) => err,
        }
    } else {
        anyhow!("tp_btf disabled by kernel.attach = \"tracepoint\"")
    };
    tracing::debug!(hook = spec.hook, "tp_btf unavailable: {btf_error:#}");
    let attached = match spec.fallback {
        Fallback::None => {
            if spec.required {
                return Err(btf_error.context(format!("attaching {}", spec.hook)));
            }
            tracing::warn!(
                hook = spec.hook,
                "hook unavailable on this kernel ({btf_error:#}); continuing without it"
            );
            return Ok(AttachPath::Unavailable);
        }
        Fallback::Tracepoint(program, category, name) => {
            attach_tracepoint(ebpf, program, category, name).map(|()| AttachPath::Tracepoint)
        }
        Fallback::RawTracepoint(program, name) => {
            attach_raw_tracepoint(ebpf, program, name).map(|()| AttachPath::RawTracepoint)
        }
    };
    match attached {
        Ok(path) => Ok(path),
        Err(tp_error) if spec.required => bail!(
            "this kernel cannot run the {} hook (Custos needs Linux 5.17 or later with BTF and \
             tracepoints): tp_btf failed ({btf_error:#}); tracepoint failed ({tp_error:#})",
            spec.hook
        ),
        Err(tp_error) => {
            tracing::warn!(hook = spec.hook, "hook unavailable: {tp_error:#}");
            Ok(AttachPath::Unavailable)
        }
    }
}

fn attach_btf(ebpf: &mut Ebpf, btf: &Btf, spec: &HookSpec) -> Result<()> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(spec.btf_program)
        .ok_or_else(|| anyhow!("program {} missing from the object", spec.btf_program))?
        .try_into()?;
    program
        .load(spec.hook, btf)
        .with_context(|| format!("loading tp_btf/{}", spec.hook))?;
    program
        .attach()
        .with_context(|| format!("attaching tp_btf/{}", spec.hook))?;
    Ok(())
}

fn attach_raw_tracepoint(ebpf: &mut Ebpf, program: &str, name: &str) -> Result<()> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program {program} missing from the object"))?
        .try_into()?;
    program
        .load()
        .with_context(|| format!("loading raw_tracepoint/{name}"))?;
    program
        .attach(name)
        .with_context(|| format!("attaching raw_tracepoint/{name}"))?;
    Ok(())
}

fn attach_tracepoint(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<()> {
    mounts::ensure_tracefs()?;
    let program: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program {program} missing from the object"))?
        .try_into()?;
    program
        .load()
        .with_context(|| format!("loading tracepoint/{category}/{name}"))?;
    program
        .attach(category, name)
        .with_context(|| format!("attaching tracepoint/{category}/{name}"))?;
    Ok(())
}
