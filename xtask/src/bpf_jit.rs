//! Where a loaded eBPF program's machine code is and which of its instructions each piece came
//! from, asked of the kernel with bpf(2): the address and length of each of its functions, and
//! for each line-info record the address its code starts at and its instruction's index in the
//! program as the verifier left it (the index `bpftool prog dump xlated` prints).
//!
//! `perf annotate` and `bpftool prog dump jited` need the disassembler libraries Debian's
//! builds of them leave out; these two lists are all a sample's address needs.
//!
//! Also which programs a process holds (by its `fdinfo`) and how long each has run, for the
//! benchmark that compares two daemons attached at once.
use std::{
    os::fd::{FromRawFd as _, OwnedFd},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `struct bpf_prog_info` up to `run_cnt` (the kernel fills as much as it is given room for).
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
    ifindex: u32,
    gpl_compatible: u32,
    netns_dev: u64,
    netns_ino: u64,
    nr_jited_ksyms: u32,
    nr_jited_func_lens: u32,
    jited_ksyms: u64,
    jited_func_lens: u64,
    btf_id: u32,
    func_info_rec_size: u32,
    func_info: u64,
    nr_func_info: u32,
    nr_line_info: u32,
    line_info: u64,
    jited_line_info: u64,
    nr_jited_line_info: u32,
    line_info_rec_size: u32,
    jited_line_info_rec_size: u32,
    nr_prog_tags: u32,
    prog_tags: u64,
    run_time_ns: u64,
    run_cnt: u64,
}

/// `struct bpf_line_info`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct LineInfo {
    insn_off: u32,
    file_name_off: u32,
    line_off: u32,
    line_col: u32,
}

/// One loaded program's machine code, as addresses.
#[derive(Debug, Default)]
pub struct ProgramCode {
    pub id: u32,
    /// When it was loaded, in CLOCK_BOOTTIME nanoseconds.
    pub loaded_at_ns: u64,
    /// Each function's first address and length in bytes.
    pub functions: Vec<(u64, u64)>,
    /// (address, instruction index) of each line-info record, by address.
    pub lines: Vec<(u64, u32)>,
}

impl ProgramCode {
    /// True when `address` is in one of the program's functions.
    pub fn holds(&self, address: u64) -> bool {
        self.function_of(address).is_some()
    }

    /// The index of the instruction whose code holds `address`: that of the last line-info
    /// record at or before it in the same function.
    pub fn instruction_at(&self, address: u64) -> Option<u32> {
        let (start, _) = self.function_of(address)?;
        let after = self.lines.partition_point(|(at, _)| *at <= address);
        let (at, insn) = *self.lines.get(after.checked_sub(1)?)?;
        (at >= start).then_some(insn)
    }

    fn function_of(&self, address: u64) -> Option<(u64, u64)> {
        self.functions
            .iter()
            .copied()
            .find(|(start, len)| (*start..start + len).contains(&address))
    }
}

/// CLOCK_BOOTTIME now, in nanoseconds: the clock of [`ProgramCode::loaded_at_ns`].
pub fn boottime_ns() -> Result<u64> {
    let now = crate::bench::clock_now(libc::CLOCK_BOOTTIME)
        .map_err(|err| anyhow::anyhow!("reading CLOCK_BOOTTIME: {err}"))?;
    Ok(now.as_nanos() as u64)
}

/// The ids of every loaded program.
pub fn program_ids() -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    let mut id = 0u32;
    loop {
        // `union bpf_attr` for GET_NEXT_ID: start_id, then next_id.
        let mut attr = [id, 0u32, 0, 0];
        match bpf(BPF_PROG_GET_NEXT_ID, attr.as_mut_ptr().cast(), 16) {
            Ok(_) => {
                id = attr[1];
                ids.push(id);
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(ids),
            Err(err) => bail!("listing the loaded eBPF programs: {err}"),
        }
    }
}

/// A descriptor of program `id`; `None` when it is gone.
fn open_program(id: u32) -> Result<Option<OwnedFd>> {
    let mut attr = [id, 0u32, 0, 0];
    match bpf(BPF_PROG_GET_FD_BY_ID, attr.as_mut_ptr().cast(), 16) {
        // SAFETY: bpf(2) returned a new descriptor that nothing else owns.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(err) => bail!("opening eBPF program {id}: {err}"),
    }
}

/// How long program `id` has run in all, from the kernel's statistics (which count only while
/// some process has them on, as the daemon does); `None` when it is gone.
pub fn program_run_time(id: u32) -> Result<Option<Duration>> {
    let Some(fd) = open_program(id)? else {
        return Ok(None);
    };
    let mut info = ProgInfo::default();
    info_by_fd(&fd, &mut info)?;
    Ok(Some(Duration::from_nanos(info.run_time_ns)))
}

/// The ids of the programs process `pid` holds a descriptor of, from its `fdinfo`.
pub fn programs_held_by(pid: u32) -> Result<Vec<u32>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        // A descriptor closed meanwhile has no fdinfo left: it is no program of the daemon's.
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        ids.extend(program_id_in_fdinfo(&text));
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The `prog_id` an fdinfo text names, if it describes an eBPF program.
fn program_id_in_fdinfo(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|line| line.strip_prefix("prog_id:"))
        .and_then(|id| id.trim().parse().ok())
}

/// Program `id`'s functions and line records; `None` when it is gone or has no line info.
pub fn program_code(id: u32) -> Result<Option<ProgramCode>> {
    let Some(fd) = open_program(id)? else {
        return Ok(None);
    };
    let mut counts = ProgInfo::default();
    info_by_fd(&fd, &mut counts)?;
    let functions = counts.nr_jited_ksyms as usize;
    let records = counts.nr_jited_line_info as usize;
    if functions == 0 || records == 0 || counts.nr_line_info as usize != records {
        return Ok(None);
    }
    let mut starts = vec![0u64; functions];
    let mut lens = vec![0u32; counts.nr_jited_func_lens as usize];
    let mut line_infos = vec![LineInfo::default(); records];
    let mut addresses = vec![0u64; records];
    let mut info = ProgInfo {
        nr_jited_ksyms: starts.len() as u32,
        jited_ksyms: starts.as_mut_ptr() as u64,
        nr_jited_func_lens: lens.len() as u32,
        jited_func_lens: lens.as_mut_ptr() as u64,
        nr_line_info: records as u32,
        line_info_rec_size: std::mem::size_of::<LineInfo>() as u32,
        line_info: line_infos.as_mut_ptr() as u64,
        nr_jited_line_info: records as u32,
        jited_line_info_rec_size: 8,
        jited_line_info: addresses.as_mut_ptr() as u64,
        ..ProgInfo::default()
    };
    info_by_fd(&fd, &mut info)?;
    let mut lines: Vec<(u64, u32)> = addresses
        .into_iter()
        .zip(line_infos.iter().map(|l| l.insn_off))
        .collect();
    lines.sort_unstable();
    Ok(Some(ProgramCode {
        id,
        loaded_at_ns: counts.load_time,
        functions: starts
            .into_iter()
            .zip(lens.into_iter().map(u64::from))
            .collect(),
        lines,
    }))
}

fn info_by_fd(fd: &OwnedFd, info: &mut ProgInfo) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    // `union bpf_attr` for OBJ_GET_INFO_BY_FD: bpf_fd, info_len, then the info's address.
    #[repr(C)]
    struct InfoAttr {
        fd: u32,
        len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        fd: fd.as_raw_fd() as u32,
        len: std::mem::size_of::<ProgInfo>() as u32,
        info: info as *mut ProgInfo as u64,
    };
    let size = std::mem::size_of::<InfoAttr>() as u32;
    bpf(
        BPF_OBJ_GET_INFO_BY_FD,
        (&mut attr as *mut InfoAttr).cast(),
        size,
    )
    .map(|_| ())
    .map_err(|err| anyhow::anyhow!("reading eBPF program info: {err}"))
}

fn bpf(command: libc::c_long, attr: *mut libc::c_void, size: u32) -> std::io::Result<i32> {
    // SAFETY: `attr` points to `size` bytes laid out as the command's part of `union
    // bpf_attr`, and every address inside it points to a buffer of the length given beside it.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, command, attr, size) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_maps_to_the_last_line_at_or_before_it_in_its_own_function() {
        let code = ProgramCode {
            id: 1,
            loaded_at_ns: 0,
            functions: vec![(1000, 100), (2000, 50)],
            lines: vec![(1000, 0), (1010, 4), (1060, 9), (2000, 30), (2020, 33)],
        };
        assert_eq!(code.instruction_at(1000), Some(0));
        assert_eq!(code.instruction_at(1009), Some(0));
        assert_eq!(code.instruction_at(1010), Some(4));
        assert_eq!(code.instruction_at(1099), Some(9));
        assert_eq!(code.instruction_at(2049), Some(33));
        // Between the functions, and past the last one.
        assert_eq!(code.instruction_at(1500), None);
        assert_eq!(code.instruction_at(2050), None);
        assert!(code.holds(2001) && !code.holds(999));
    }

    #[test]
    fn only_a_program_descriptor_names_a_program_id() {
        let program = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2071\n\
                       prog_type:\t26\nprog_jited:\t1\nprog_tag:\t8065b1b0b22200e6\n\
                       memlock:\t4096\nprog_id:\t45624\nrun_time_ns:\t26780\nrun_cnt:\t2\n";
        assert_eq!(program_id_in_fdinfo(program), Some(45624));
        let map = "pos:\t0\nflags:\t02000002\nmap_type:\t2\nmap_id:\t117985\n";
        assert_eq!(program_id_in_fdinfo(map), None);
        assert_eq!(program_id_in_fdinfo("pos:\t0\nflags:\t02\n"), None);
    }
}
