//! What the daemon knows about each live process: its image (binary, args, cwd) and lineage.
//!
//! Filled from /proc at start-up, then kept current by exec, fork and exit records. Exited
//! processes linger for a grace period so that late events (a child's exec naming a parent that
//! just exited) can still be enriched.
mod image;
mod packed;

pub use image::{Image, Program};

use crate::{credentials::Credentials, families::IdentityView, privilege_chain::ChainState};
use custos_proto::v1::Process;
use foldhash::{HashMap, HashMapExt};
use std::{
    cell::OnceCell,
    collections::{hash_map::Entry, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

/// A process's `exec_id` as the table holds it: shared by its entry, its image, its children's
/// entries and its events' lookups, so that a busy host does not format and copy it per record.
pub type ExecId = Arc<str>;

#[derive(Clone, Debug)]
pub struct ProcessEntry {
    pub pid: u32,
    pub ppid: u32,
    pub start_boottime_ns: u64,
    pub exec_id: ExecId,
    pub parent_exec_id: ExecId,
    pub image: Arc<Image>,
    /// The schema's view of this process, built on first use and shared by its events, with
    /// its part id (see [`crate::sinks::PartIds`]).
    pub schema: OnceCell<(Arc<Process>, u64)>,
    /// That view completed for the thread its last event came from.
    pub last_thread: Option<ThreadView>,
    /// The identity its last event carried; shared with the children forked since, which
    /// start with it.
    pub last_identity: Option<Arc<IdentityView>>,
    /// Its credentials as last seen (exec, fork, credential change); `None` when unknown.
    pub credentials: Option<Credentials>,
    /// Its audit session id as last seen (`u32::MAX` when unset).
    pub session_id: u32,
    /// The changes of effective user that led to its current one since the login.
    pub chain: ChainState,
    exited_at: Option<Instant>,
}

/// A process's schema view completed with one thread's id, name and cgroup. A process's
/// events mostly come from the thread that sent the one before, so the completed view is kept
/// and reused while that thread's facts stay the same.
#[derive(Clone, Debug)]
pub struct ThreadView {
    pub tid: u32,
    pub comm: [u8; sensor_common::COMM_LEN],
    pub cgroup_id: u64,
    /// Shared with the events that report it, which hold it rather than a copy.
    pub process: Arc<Process>,
    /// Its part id: the encoders reuse its encoding by this id without comparing it.
    pub part_id: u64,
}

impl ProcessEntry {
    /// The process exec'd `image`: the views built of the old one go.
    pub fn load_image(&mut self, image: Arc<Image>) {
        self.image = image;
        self.schema = OnceCell::new();
        self.last_thread = None;
    }

    pub fn new(
        pid: u32,
        ppid: u32,
        start_boottime_ns: u64,
        exec_id: ExecId,
        parent_exec_id: ExecId,
        image: Arc<Image>,
    ) -> Self {
        Self {
            pid,
            ppid,
            start_boottime_ns,
            exec_id,
            parent_exec_id,
            image,
            schema: OnceCell::new(),
            last_thread: None,
            last_identity: None,
            credentials: None,
            session_id: u32::MAX,
            chain: ChainState::default(),
            exited_at: None,
        }
    }
}

pub struct ProcessTable {
    /// Hashed with foldhash: it is looked up several times per record, and pids are the
    /// kernel's to give, not an input a sender could aim at one bucket.
    /// Boxed: a busy host replaces thousands of entries a second, and the table's own slots
    /// stay small, so growing or tidying it moves pointers rather than whole entries.
    by_pid: HashMap<u32, Box<ProcessEntry>>,
    grace: Duration,
    /// Exited processes in the order they exited: the sweep visits only those past their
    /// grace period, not the whole table.
    exited: VecDeque<Exited>,
    /// Boxes of swept entries, reused for new processes: a busy host replaces thousands of
    /// entries a second, and allocating each anew took the allocator's slow path.
    spare: SpareBoxes,
}

/// Swept boxes kept for reuse: about a second of a busy host's new processes.
const SPARE_ENTRIES: usize = 2048;

/// A process in its grace period.
struct Exited {
    pid: u32,
    at: Instant,
    /// The address of its entry's box. The sweep tells the entry from a later process of the
    /// same pid by it, without reading the entry, which is out of the cache ten seconds on: a
    /// new process never takes over an exited one's box while that box is on the table (see
    /// [`ProcessTable::upsert`]), and a box leaves the table only when its exit is swept.
    entry: usize,
}

/// Whether `held` is `asked`. Most lookups ask with the table's own id (a clone of the entry's,
/// or a borrow of it), which is known equal by its address without comparing its bytes: a
/// record takes several lookups, each of which compared the whole id.
fn is_exec_id(held: &ExecId, asked: &str) -> bool {
    (std::ptr::eq(held.as_ptr(), asked.as_ptr()) && held.len() == asked.len()) || **held == *asked
}

fn address_of(entry: &ProcessEntry) -> usize {
    std::ptr::from_ref(entry) as usize
}

impl ProcessTable {
    pub fn new(grace: Duration) -> Self {
        Self {
            by_pid: HashMap::new(),
            grace,
            exited: VecDeque::new(),
            spare: SpareBoxes::default(),
        }
    }

    /// How many processes the table holds (live ones and those in their grace period).
    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    /// Records a process (new, or re-exec'd), replacing any older entry of the same pid. An
    /// exec replaces its own fork's entry: in place, so the two cost one allocation.
    pub fn upsert(&mut self, entry: ProcessEntry) {
        match self.by_pid.entry(entry.pid) {
            Entry::Occupied(mut occupied) if occupied.get().exited_at.is_none() => {
                **occupied.get_mut() = entry;
            }
            // A new process with the pid of one in its grace period: a box of its own.
            Entry::Occupied(mut occupied) => {
                let boxed = self.spare.boxed(entry);
                let exited = std::mem::replace(occupied.get_mut(), boxed);
                self.spare.keep(exited);
            }
            Entry::Vacant(vacant) => {
                vacant.insert(self.spare.boxed(entry));
            }
        }
    }

    /// The entry for this exact process (pid and exec_id must both match, so a reused pid is
    /// never mistaken for the process that had it before).
    pub fn get(&self, pid: u32, exec_id: &str) -> Option<&ProcessEntry> {
        self.latest(pid).filter(|e| is_exec_id(&e.exec_id, exec_id))
    }

    /// The entry of pid `pid`, whichever process has it now (or had it last).
    pub fn latest(&self, pid: u32) -> Option<&ProcessEntry> {
        self.by_pid.get(&pid).map(Box::as_ref)
    }

    /// [`Self::get`], for updating.
    pub fn get_mut(&mut self, pid: u32, exec_id: &str) -> Option<&mut ProcessEntry> {
        self.by_pid
            .get_mut(&pid)
            .map(Box::as_mut)
            .filter(|e| is_exec_id(&e.exec_id, exec_id))
    }

    /// A forked child starts with its parent's image, privilege chain (with any change the
    /// parent has not committed yet: the child holds the same credentials) and identity.
    pub fn inherit(&mut self, mut child: ProcessEntry) {
        // Set on the entry where it is: an entry is a few hundred bytes, and a busy host
        // forks thousands of times a second.
        (child.image, child.chain, child.last_identity) = self
            .get(child.ppid, &child.parent_exec_id)
            .map(|parent| {
                let identity = parent.last_identity.clone();
                (parent.image.clone(), parent.chain.clone(), identity)
            })
            .unwrap_or_default();
        child.schema = OnceCell::new();
        child.last_thread = None;
        self.upsert(child);
    }

    /// A process the table forgot, seen again in a late record: its lineage as a fork gives
    /// it, its program unknown (it may have exec'd since its fork), held as exited so that it
    /// is forgotten again after the grace period. A process given its pid since keeps the
    /// pid's entry: the forgotten one's records are then built from themselves alone.
    pub fn recall(&mut self, process: ProcessEntry) {
        if self.by_pid.contains_key(&process.pid) {
            return;
        }
        let (pid, exec_id) = (process.pid, process.exec_id.clone());
        self.inherit(process);
        if let Some(entry) = self.get_mut(pid, &exec_id) {
            entry.image = Image::unknown();
        }
        self.mark_exited(pid, &exec_id);
    }

    /// `pid` and its known ancestors while they belong to `session_id`, the process itself
    /// first; the last one is the session's leader as far as the table knows.
    pub fn session_members(&self, pid: u32, exec_id: &str, session_id: u32) -> Vec<&ProcessEntry> {
        let mut members = Vec::new();
        let mut next = self.get(pid, exec_id);
        while let Some(entry) = next {
            if entry.session_id != session_id || members.len() >= 64 {
                break;
            }
            members.push(entry);
            next = self.get(entry.ppid, &entry.parent_exec_id);
        }
        members
    }

    /// Marks the process as exited; it is forgotten after the grace period. Its built views
    /// go at once: a busy host holds seconds' worth of exited processes, which rarely have a
    /// late event, and such an event builds them again.
    pub fn mark_exited(&mut self, pid: u32, exec_id: &str) {
        let Some(entry) = self
            .by_pid
            .get_mut(&pid)
            .filter(|e| is_exec_id(&e.exec_id, exec_id))
        else {
            return;
        };
        if entry.exited_at.is_some() {
            return;
        }
        let now = Instant::now();
        entry.exited_at = Some(now);
        entry.schema = OnceCell::new();
        entry.last_thread = None;
        entry.last_identity = None;
        self.exited.push_back(Exited {
            pid,
            at: now,
            entry: address_of(entry),
        });
    }

    /// Forgets processes that exited more than the grace period ago. A pid reused since its
    /// process exited holds the new process, which stays.
    pub fn sweep(&mut self) {
        let now = Instant::now();
        while let Some(exited) = self.exited.front() {
            if now.duration_since(exited.at) < self.grace {
                break;
            }
            let Some(exited) = self.exited.pop_front() else {
                break;
            };
            let Entry::Occupied(occupied) = self.by_pid.entry(exited.pid) else {
                continue;
            };
            if address_of(occupied.get()) == exited.entry {
                debug_assert_eq!(occupied.get().exited_at, Some(exited.at));
                self.spare.keep(occupied.remove());
            }
        }
    }
}

/// Boxes off the table, kept for the next new processes, up to [`SPARE_ENTRIES`].
#[derive(Default)]
struct SpareBoxes(
    #[allow(
        clippy::vec_box,
        reason = "the boxes, not their contents, are what is reused"
    )]
    Vec<Box<ProcessEntry>>,
);

impl SpareBoxes {
    /// `entry` in a box, a spare one when there is one.
    fn boxed(&mut self, entry: ProcessEntry) -> Box<ProcessEntry> {
        match self.0.pop() {
            Some(mut boxed) => {
                *boxed = entry;
                boxed
            }
            None => Box::new(entry),
        }
    }

    fn keep(&mut self, entry: Box<ProcessEntry>) {
        if self.0.len() < SPARE_ENTRIES {
            self.0.push(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: u32, ppid: u32, binary: &[u8]) -> ProcessEntry {
        ProcessEntry::new(
            pid,
            ppid,
            0,
            format!("id-{pid}").into(),
            format!("id-{ppid}").into(),
            Arc::new(Image::of_program(
                &Program {
                    binary: binary.to_vec(),
                    ..Program::default()
                },
                "".into(),
            )),
        )
    }

    #[test]
    fn an_exec_id_is_told_by_its_bytes_wherever_it_is_held() {
        let held: ExecId = "boot:100:42".into();
        assert!(is_exec_id(&held, &held));
        assert!(is_exec_id(&held, &String::from("boot:100:42")));
        // The same address with another length is another id.
        assert!(!is_exec_id(&held, &held[..8]));
        assert!(!is_exec_id(&held, "boot:100:43"));
    }

    #[test]
    fn children_inherit_the_parent_image_and_reused_pids_do_not_match() {
        let mut table = ProcessTable::new(Duration::from_secs(5));
        table.upsert(entry(10, 1, b"/bin/bash"));
        table.inherit(entry(11, 10, b""));
        assert_eq!(table.get(11, "id-11").unwrap().image.binary(), b"/bin/bash");
        assert!(table.get(11, "id-other").is_none());
    }

    #[test]
    fn an_image_gives_its_programs_fields_exactly_while_live_and_once_exited() {
        let program = Program {
            binary: b"/bin/odd\xff".to_vec(),
            invoked: b"/bin/odd\xff".to_vec(),
            args: vec![b"odd".to_vec(), b"a".to_vec(), b"b\xfe".to_vec()],
            args_truncated: true,
            cwd: b"/tmp".to_vec(),
            path_truncated: false,
        };
        let mut view = Process::default();
        program.clone().write_into(&mut view);
        let mut table = ProcessTable::new(Duration::from_secs(10));
        let mut exec = entry(10, 1, b"");
        exec.image = Arc::new(Image::of_program(&program, exec.exec_id.clone()));
        table.upsert(exec);
        table.inherit(entry(11, 10, b""));
        table.mark_exited(10, "id-10");
        for pid in [10, 11] {
            let image = &table.get(pid, &format!("id-{pid}")).unwrap().image;
            assert_eq!(image.program_fields(), view, "the exec's program, exactly");
            assert_eq!(image.binary(), b"/bin/odd\xff");
        }
        assert_eq!(view.binary, "/bin/odd\\xff");
        assert_eq!(view.args_raw.len(), 3);
    }

    #[test]
    fn a_recalled_process_is_held_as_exited_and_never_displaces_its_pids_new_process() {
        let mut table = ProcessTable::new(Duration::ZERO);
        table.upsert(entry(10, 1, b"/bin/sh"));
        table.recall(entry(11, 10, b"/bin/ignored"));
        let recalled = table.get(11, "id-11").expect("recalled");
        assert_eq!(recalled.image.binary(), b"", "its program is not known");
        table.sweep();
        assert!(table.get(11, "id-11").is_none(), "forgotten again");
        // Pid 12 belongs to a new process now; a late record of its old one changes nothing.
        table.upsert(entry(12, 1, b"/bin/new"));
        let mut old = entry(12, 10, b"");
        old.exec_id = "id-12-old".into();
        table.recall(old);
        assert!(table.get(12, "id-12-old").is_none());
        assert_eq!(table.get(12, "id-12").unwrap().image.binary(), b"/bin/new");
        table.sweep();
        assert!(table.get(12, "id-12").is_some(), "still live");
    }

    #[test]
    fn exited_processes_are_swept_after_the_grace_period() {
        let mut table = ProcessTable::new(Duration::ZERO);
        table.upsert(entry(10, 1, b"/bin/a"));
        table.upsert(entry(11, 1, b"/bin/b"));
        table.mark_exited(10, "id-10");
        table.sweep();
        assert!(table.get(10, "id-10").is_none());
        assert!(table.get(11, "id-11").is_some());
    }

    #[test]
    fn a_box_given_to_another_process_is_not_swept_for_its_old_one() {
        let mut table = ProcessTable::new(Duration::ZERO);
        table.upsert(entry(10, 1, b"/bin/old"));
        table.mark_exited(10, "id-10");
        table.mark_exited(10, "id-10");
        // Pid 10 goes to a new process before the sweep: the exited one's box goes spare,
        // and serves pid 11, which runs on when pid 10's exit is swept.
        let mut reused = entry(10, 1, b"/bin/new");
        reused.exec_id = "id-10-again".into();
        table.upsert(reused);
        table.upsert(entry(11, 1, b"/bin/next"));
        table.sweep();
        assert!(
            table.get(10, "id-10-again").is_some(),
            "pid 10's new process"
        );
        assert!(
            table.get(11, "id-11").is_some(),
            "the process in the spare box"
        );
        table.mark_exited(11, "id-11");
        table.sweep();
        assert!(table.get(11, "id-11").is_none(), "swept at its own exit");
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_pid_reused_within_the_grace_period_keeps_its_new_process() {
        let mut table = ProcessTable::new(Duration::from_millis(50));
        table.upsert(entry(10, 1, b"/bin/old"));
        table.mark_exited(10, "id-10");
        let mut reused = entry(10, 1, b"/bin/new");
        reused.exec_id = "id-10-again".into();
        table.upsert(reused);
        table.upsert(entry(12, 1, b"/bin/c"));
        table.mark_exited(12, "id-12");
        table.sweep();
        assert!(table.get(12, "id-12").is_some(), "within its grace period");
        std::thread::sleep(Duration::from_millis(60));
        table.sweep();
        assert!(table.get(12, "id-12").is_none(), "past its grace period");
        let kept = table.get(10, "id-10-again").expect("the new process stays");
        assert_eq!(kept.image.binary(), b"/bin/new");
        // The swept box serves the next new process.
        table.upsert(entry(13, 1, b"/bin/d"));
        assert_eq!(table.get(13, "id-13").unwrap().image.binary(), b"/bin/d");
        assert_eq!(table.len(), 2);
    }
}
