//! The program a process runs, as the process table holds it.
use std::sync::{Arc, LazyLock};

use custos_proto::v1::Process;

use super::{packed::PackedProgram, ExecId};
use crate::text;

/// The program a process runs, packed (see [`PackedProgram`]): an exec's event reports the
/// view it built, and the table keeps only the program for the process's later events, its
/// forked children and, once it exited, its grace period.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Image {
    program: PackedProgram,
    /// The `exec_id` of the process whose execve loaded it (forked children share the image).
    pub exec_id: ExecId,
}

/// A program's paths and arguments as the kernel gives them: bytes, not UTF-8.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    pub binary: Vec<u8>,
    /// The path execve was given, made absolute (empty when unknown).
    pub invoked: Vec<u8>,
    pub args: Vec<Vec<u8>>,
    pub args_truncated: bool,
    pub cwd: Vec<u8>,
    pub path_truncated: bool,
}

impl Program {
    /// Moves the program into `process`'s program fields: readable text, plus the exact bytes
    /// where the text alone would not be exact (see [`crate::text`]).
    pub fn write_into(self, process: &mut Process) {
        let binary = text::from_vec(self.binary);
        let cwd = text::from_vec(self.cwd);
        let invoked = text::from_vec(self.invoked);
        write_args(self.args, process);
        process.binary = binary.text;
        process.binary_raw = binary.raw.unwrap_or_default();
        process.args_truncated = self.args_truncated;
        process.cwd = cwd.text;
        process.cwd_raw = cwd.raw.unwrap_or_default();
        process.path_truncated = self.path_truncated;
        process.invoked_path = invoked.text;
        process.invoked_path_raw = invoked.raw.unwrap_or_default();
    }
}

/// Moves the arguments into `process`: as text, and when any is not valid UTF-8, every one's
/// exact bytes besides.
fn write_args(args: Vec<Vec<u8>>, process: &mut Process) {
    if args.iter().all(|arg| text::is_utf8(arg)) {
        // The common case: each vector becomes its string where it is, with no new vector.
        process.args = args
            .into_iter()
            // SAFETY: every argument was found to be valid UTF-8 just above.
            .map(|arg| unsafe { String::from_utf8_unchecked(arg) })
            .collect();
    } else {
        process.args = args
            .iter()
            .map(|arg| text::escape_invalid_utf8(arg))
            .collect();
        process.args_raw = args;
    }
}

impl Image {
    /// The image of a process seen before its exec, until its parent's is known: one shared
    /// allocation, since most such entries take their parent's at once.
    pub fn unknown() -> Arc<Image> {
        static UNKNOWN: LazyLock<Arc<Image>> = LazyLock::new(Arc::default);
        UNKNOWN.clone()
    }

    /// The image of a program: an exec's, or one whose loading was not seen (a process
    /// found in /proc).
    pub fn of_program(program: &Program, exec_id: ExecId) -> Image {
        Image {
            program: PackedProgram::of_program(program),
            exec_id,
        }
    }

    /// The binary's path, exactly as the kernel gave it.
    pub fn binary(&self) -> &[u8] {
        self.program.binary()
    }

    /// The program's fields as the schema writes them (binary, invoked path, arguments,
    /// working directory, their exact bytes and truncation flags), every other field empty.
    pub fn program_fields(&self) -> Process {
        let mut process = Process::default();
        self.program.unpack().write_into(&mut process);
        process
    }
}
