//! Loads the programs and attaches each hook through the best path this kernel allows.
//!
//! Each hook lists the programs that can serve it, richest first: BPF LSM, fentry/fexit and
//! `tp_btf` (typed arguments, cheapest), then kprobes, then classic or raw tracepoints. The
//! first that loads and attaches wins. Which path each hook got is logged and returned, so
//! `custos` can say exactly what it is running on.
use std::fmt;

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::Array,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, Lsm, RawTracePoint, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use sensor_common::{
    KernelOffsets, ProgramGlobals, CONNECTIONS_MAP, EVENTS_MAP, OPEN_HOOK_MAP, PROGRAM_GLOBALS,
};

use super::{
    btf_offsets,
    kfuncs::{self, TypedReads},
    mounts, privileges,
};
use crate::{
    config::AttachMode,
    families::{Hook, HookSpec, Sensor, HOOKS},
};

/// The compiled `sensor-ebpf` programs, built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor"));

/// How a hook ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachPath {
    Lsm,
    Fentry,
    Fexit,
    /// One classic tracepoint per syscall of interest (`syscalls/sys_exit_*`).
    SyscallTracepoints,
    TpBtf,
    Kprobe,
    Tracepoint,
    RawTracepoint,
    /// No path loaded; the hook is off (only allowed for optional hooks).
    Unavailable,
}

impl fmt::Display for AttachPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachPath::Lsm => "lsm",
            AttachPath::Fentry => "fentry",
            AttachPath::Fexit => "fexit",
            AttachPath::SyscallTracepoints => "syscall_tracepoints",
            AttachPath::TpBtf => "tp_btf",
            AttachPath::Kprobe => "kprobe",
            AttachPath::Tracepoint => "tracepoint",
            AttachPath::RawTracepoint => "raw_tracepoint",
            AttachPath::Unavailable => "unavailable",
        })
    }
}

/// One way to serve a hook: `(program, kernel name)`, or for classic tracepoints
/// `(program, category, name)`.
#[derive(Clone, Copy)]
pub(crate) enum Program {
    Lsm(&'static str, &'static str),
    Fentry(&'static str, &'static str),
    Fexit(&'static str, &'static str),
    /// `(program, syscalls)`: one program on `syscalls/sys_exit_<name>` for each name.
    SyscallTracepoints(&'static str, &'static [&'static str]),
    TpBtf(&'static str, &'static str),
    Kprobe(&'static str, &'static str),
    Tracepoint(&'static str, &'static str, &'static str),
    RawTracepoint(&'static str, &'static str),
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Lsm(name, _)
            | Program::Fentry(name, _)
            | Program::Fexit(name, _)
            | Program::SyscallTracepoints(name, _)
            | Program::TpBtf(name, _)
            | Program::Kprobe(name, _)
            | Program::Tracepoint(name, ..)
            | Program::RawTracepoint(name, _) => name,
        }
    }

    fn path(self) -> AttachPath {
        match self {
            Program::Lsm(..) => AttachPath::Lsm,
            Program::Fentry(..) => AttachPath::Fentry,
            Program::Fexit(..) => AttachPath::Fexit,
            Program::SyscallTracepoints(..) => AttachPath::SyscallTracepoints,
            Program::TpBtf(..) => AttachPath::TpBtf,
            Program::Kprobe(..) => AttachPath::Kprobe,
            Program::Tracepoint(..) => AttachPath::Tracepoint,
            Program::RawTracepoint(..) => AttachPath::RawTracepoint,
        }
    }

    /// Whether `kernel.attach` lets this program be tried.
    fn allowed(self, mode: AttachMode) -> bool {
        match mode {
            AttachMode::Auto => true,
            AttachMode::Tracepoint => {
                matches!(self, Program::Tracepoint(..) | Program::RawTracepoint(..))
            }
            AttachMode::Btf => matches!(
                self,
                Program::Lsm(..) | Program::Fentry(..) | Program::Fexit(..) | Program::TpBtf(..)
            ),
        }
    }
}

pub struct LoadOptions {
    pub ring_buffer_bytes: u32,
    /// Buffered bytes at which the kernel wakes the reader (0: every record).
    pub wakeup_bytes: u32,
    pub self_tgid: u32,
    /// Which program types may be tried (`kernel.attach`).
    pub mode: AttachMode,
    /// Whether the file-open hook is wanted.
    pub file_sensor: bool,
    /// Whether the block-device hooks are wanted.
    pub device_sensor: bool,
    /// Whether the network hooks are wanted.
    pub network_sensor: bool,
    /// Open TCP connections the kernel follows to their end at most.
    pub max_open_connections: u32,
}

/// The loaded programs; dropping it detaches every hook.
pub struct LoadedSensor {
    pub ebpf: Ebpf,
    pub hooks: Vec<(Hook, AttachPath)>,
}

impl LoadedSensor {
    /// Whether `hook` is attached through some path.
    pub fn attached(&self, hook: Hook) -> bool {
        self.hooks
            .iter()
            .any(|(name, path)| *name == hook && *path != AttachPath::Unavailable)
    }
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

/// Each CPU wakes the reader once it has queued its share of `wakeup_bytes`, so that all of
/// them together never queue more without a wakeup (0 stays 0: a wakeup per record).
fn per_cpu_share(wakeup_bytes: u32) -> Result<u32> {
    if wakeup_bytes == 0 {
        return Ok(0);
    }
    let cpus = aya::util::nr_cpus()
        .map_err(|(path, err)| anyhow!("reading the possible CPUs from {path}: {err}"))?;
    Ok((wakeup_bytes / cpus.max(1) as u32).max(1))
}

fn load_inner(options: &LoadOptions) -> Result<LoadedSensor> {
    privileges::raise_memlock_limit();
    if EBPF_OBJECT.is_empty() {
        bail!(
            "this custos was built without its eBPF programs (AYA_BUILD_SKIP); rebuild without it"
        );
    }
    // aya's loader parses all of the kernel's BTF when made, and it is given the names alone
    // (see `kernel_btf`): made first, its parse is over and gone before anything else is held,
    // so that start-up's peak of memory is that parse on what the daemon holds at the start.
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    let (offsets, typed, btf) = kernel_btf()?;
    let object = kfuncs::link(EBPF_OBJECT, typed)?;
    match typed {
        Some(_) => tracing::info!(calls = object.calls, "opened files read with plain loads (bpf_rdonly_cast)"),
        None => tracing::info!("opened files read with helper calls: this kernel has no bpf_rdonly_cast (6.2 and later have)"),
    }

    let globals = ProgramGlobals {
        self_tgid: options.self_tgid,
        wakeup_bytes: per_cpu_share(options.wakeup_bytes)?,
        files_struct_type: typed.map_or(0, |typed| typed.files_struct),
        offsets,
    };
    let mut ebpf = loader
        .btf(Some(&btf))
        .override_global(PROGRAM_GLOBALS, &globals, true)
        .map_max_entries(EVENTS_MAP, options.ring_buffer_bytes)
        .map_max_entries(CONNECTIONS_MAP, options.max_open_connections.max(1))
        .load(object.bytes())
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
            Sensor::Network => options.network_sensor,
            Sensor::FileOpenLsm => options.file_sensor || options.device_sensor,
            Sensor::IoUring => {
                options.file_sensor && offsets.kiocb_opcode != sensor_common::offsets::MISSING
            }
        };
        if !wanted {
            continue;
        }
        // Successful opens move to file_open as it attaches; set first so none is missed.
        let reports_opens = spec.sensor == Sensor::FileOpenLsm && options.file_sensor;
        if reports_opens {
            set_open_hook(&mut ebpf, true)?;
        }
        // Most of start-up is the verifier's work on each program: said per hook, so that a
        // kernel or a change that makes it slow shows.
        let loading = std::time::Instant::now();
        let attached = attach_hook(&mut ebpf, &btf, spec, options.mode)?;
        let load_ms = loading.elapsed().as_millis();
        let path = attached.map_or(AttachPath::Unavailable, Program::path);
        if reports_opens && path == AttachPath::Unavailable {
            set_open_hook(&mut ebpf, false)?;
        }
        let verified = attached.and_then(|program| verified_instructions(&ebpf, program));
        tracing::info!(hook = %spec.hook, path = %path, load_ms, verified, "hook attached");
        warn_near_verifier_limit(spec, verified);
        hooks.push((spec.hook, path));
    }
    Ok(LoadedSensor { ebpf, hooks })
}

/// The kernel's verifier gives up on a program after this many instructions explored.
const VERIFIER_INSTRUCTION_LIMIT: u32 = 1_000_000;

/// How many instructions the verifier explored to accept `program`, where the kernel says
/// (Linux 5.16 and later).
fn verified_instructions(ebpf: &Ebpf, program: Program) -> Option<u32> {
    ebpf.program(program.name())?
        .info()
        .ok()?
        .verified_instruction_count()
}

/// A program past half the verifier's budget here may be refused by a kernel whose verifier
/// explores more: said before it is.
fn warn_near_verifier_limit(spec: &HookSpec, verified: Option<u32>) {
    if let Some(verified) = past_half_the_verifier_budget(verified) {
        tracing::warn!(
            hook = %spec.hook,
            "the kernel's verifier explored {verified} instructions of its \
             {VERIFIER_INSTRUCTION_LIMIT} to accept this hook's program; a kernel whose verifier \
             explores more may refuse it: report it with this kernel's version"
        );
    }
}

/// The count of explored instructions, when it is past half the verifier's budget.
fn past_half_the_verifier_budget(verified: Option<u32>) -> Option<u32> {
    verified.filter(|v| *v > VERIFIER_INSTRUCTION_LIMIT / 2)
}

/// The struct offsets the programs read with, from the kernel's BTF, and that BTF for aya with
/// its types' names and kinds only: all aya needs to find the ids of the functions and
/// tracepoints programs attach to (the programs carry no relocations against the kernel's
/// types). The whole BTF, as aya parses it, is about 17 MiB while parsed.
fn kernel_btf() -> Result<(KernelOffsets, Option<TypedReads>, Btf)> {
    let layout = btf_offsets::BtfLayout::from_running_kernel()?;
    let offsets = btf_offsets::resolve(&layout)?;
    let typed = TypedReads::of_kernel(&layout, &offsets);
    let names = layout.names_and_kinds()?;
    drop(layout);
    let btf = Btf::parse(&names, aya::Endianness::default())
        .context("parsing the names and kinds of the kernel's BTF types")?;
    Ok((offsets, typed, btf))
}

/// Tells `sys_exit` whether LSM `file_open` reports successful opens.
fn set_open_hook(ebpf: &mut Ebpf, on: bool) -> Result<()> {
    let map = ebpf
        .map_mut(OPEN_HOOK_MAP)
        .ok_or_else(|| anyhow!("map {OPEN_HOOK_MAP} missing from the object"))?;
    let mut slot: Array<_, u32> = Array::try_from(map)?;
    slot.set(0, u32::from(on), 0)
        .context("writing the open-hook switch")
}

/// The program that serves `spec`'s hook, the first of its programs that loads and attaches;
/// `None` when none does and the hook is optional.
fn attach_hook(
    ebpf: &mut Ebpf,
    btf: &Btf,
    spec: &HookSpec,
    mode: AttachMode,
) -> Result<Option<Program>> {
    let mut errors = Vec::new();
    for program in spec.programs {
        if !program.allowed(mode) {
            errors.push(format!(
                "{}: not tried (kernel.attach = {mode:?})",
                program.path()
            ));
            continue;
        }
        match attach_program(ebpf, btf, *program) {
            Ok(()) if errors.is_empty() => return Ok(Some(*program)),
            Ok(()) => {
                // Said once at start: why this kernel runs a fallback rather than the first choice.
                tracing::info!(
                    hook = %spec.hook,
                    path = %program.path(),
                    "preferred paths unavailable: {}",
                    errors.join("; ")
                );
                return Ok(Some(*program));
            }
            Err(err) => {
                tracing::debug!(hook = %spec.hook, path = %program.path(), "unavailable: {err:#}");
                errors.push(format!("{}: {err:#}", program.path()));
            }
        }
    }
    let tried = errors.join("; ");
    if spec.required {
        bail!(
            "this kernel cannot run the {} hook (Custos needs Linux 5.17 or later with BTF and \
             tracepoints): {tried}",
            spec.hook
        );
    }
    tracing::warn!(
        hook = %spec.hook,
        "hook unavailable on this kernel ({tried}); continuing without it"
    );
    Ok(None)
}

fn attach_program(ebpf: &mut Ebpf, btf: &Btf, program: Program) -> Result<()> {
    fn get<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
    where
        &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        let program = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the object"))?;
        Ok(program.try_into()?)
    }
    // Loads and attaches a BTF-typed program (LSM, fentry/fexit, tp_btf) on `target`.
    macro_rules! btf_typed {
        ($type:ty, $kind:literal, $name:expr, $target:expr) => {{
            let p: &mut $type = get(ebpf, $name)?;
            p.load($target, btf)
                .with_context(|| format!("loading {}/{}", $kind, $target))?;
            p.attach()
                .with_context(|| format!("attaching {}/{}", $kind, $target))?;
        }};
    }
    match program {
        Program::Lsm(name, hook) => btf_typed!(Lsm, "lsm", name, hook),
        Program::Fentry(name, function) => btf_typed!(FEntry, "fentry", name, function),
        Program::Fexit(name, function) => btf_typed!(FExit, "fexit", name, function),
        Program::TpBtf(name, hook) => btf_typed!(BtfTracePoint, "tp_btf", name, hook),
        Program::SyscallTracepoints(name, syscalls) => {
            mounts::ensure_tracefs()?;
            let p: &mut TracePoint = get(ebpf, name)?;
            p.load()
                .with_context(|| format!("loading tracepoint/syscalls/{name}"))?;
            for syscall in syscalls.iter() {
                let tracepoint = format!("sys_exit_{syscall}");
                if let Err(err) = p.attach("syscalls", &tracepoint) {
                    // All or nothing: the fallback covers every syscall.
                    let _ = p.unload();
                    return Err(anyhow!(err))
                        .with_context(|| format!("attaching tracepoint/syscalls/{tracepoint}"));
                }
            }
        }
        Program::Kprobe(name, function) => {
            let p: &mut KProbe = get(ebpf, name)?;
            p.load()
                .with_context(|| format!("loading kprobe/{function}"))?;
            p.attach(function, 0)
                .with_context(|| format!("attaching kprobe/{function}"))?;
        }
        Program::Tracepoint(name, category, tracepoint) => {
            mounts::ensure_tracefs()?;
            let p: &mut TracePoint = get(ebpf, name)?;
            p.load()
                .with_context(|| format!("loading tracepoint/{category}/{tracepoint}"))?;
            p.attach(category, tracepoint)
                .with_context(|| format!("attaching tracepoint/{category}/{tracepoint}"))?;
        }
        Program::RawTracepoint(name, tracepoint) => {
            let p: &mut RawTracePoint = get(ebpf, name)?;
            p.load()
                .with_context(|| format!("loading raw_tracepoint/{tracepoint}"))?;
            p.attach(tracepoint)
                .with_context(|| format!("attaching raw_tracepoint/{tracepoint}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_count_past_half_the_verifiers_budget_is_warned_of() {
        assert_eq!(
            past_half_the_verifier_budget(None),
            None,
            "an old kernel says none"
        );
        assert_eq!(past_half_the_verifier_budget(Some(62_337)), None);
        assert_eq!(past_half_the_verifier_budget(Some(500_000)), None);
        assert_eq!(past_half_the_verifier_budget(Some(500_001)), Some(500_001));
    }
}
