//! The program a process runs, as the process table holds it.
use std::sync::{Arc, LazyLock};

use custos_proto::v1::Process;

use super::{packed::PackedProgram, ExecId};
use crate::text;

/// The program a process runs. While the process whose execve loaded it may still have
/// events, it is held as that process's own view, which its events report rather than a copy;
/// once they are written, as the program alone (see [`Image::compact`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Image {
    pub(super) form: ImageForm,
    /// The `exec_id` of the process whose execve loaded it (forked children share the image).
    pub exec_id: ExecId,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum ImageForm {
    /// The schema's view of the process whose execve loaded the image, as its exec record saw
    /// it (thread, name, cgroup). Other processes running the image (its forked children)
    /// take only the program's fields from it.
    View(Arc<Process>),
    /// The program alone, packed: a process found in /proc, or an exited one whose view
    /// nothing else holds any more.
    Packed(PackedProgram),
}

impl Default for ImageForm {
    fn default() -> Self {
        ImageForm::Packed(PackedProgram::default())
    }
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
        let args: Vec<_> = self.args.into_iter().map(text::from_vec).collect();
        if args.iter().any(|arg| arg.raw.is_some()) {
            process.args_raw = args.iter().map(|arg| arg.bytes().to_vec()).collect();
        }
        process.args = args.into_iter().map(|arg| arg.text).collect();
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

/// A copy of the program's fields of `view` (binary, invoked path, arguments, working
/// directory, their exact bytes and truncation flags), every other field left empty.
fn program_fields(view: &Process) -> Process {
    Process {
        binary: view.binary.clone(),
        binary_raw: view.binary_raw.clone(),
        args: view.args.clone(),
        args_raw: view.args_raw.clone(),
        args_truncated: view.args_truncated,
        cwd: view.cwd.clone(),
        cwd_raw: view.cwd_raw.clone(),
        path_truncated: view.path_truncated,
        invoked_path: view.invoked_path.clone(),
        invoked_path_raw: view.invoked_path_raw.clone(),
        ..Process::default()
    }
}

impl Image {
    /// The image of a process seen before its exec, until its parent's is known: one shared
    /// allocation, since most such entries take their parent's at once.
    pub fn unknown() -> Arc<Image> {
        static UNKNOWN: LazyLock<Arc<Image>> = LazyLock::new(Arc::default);
        UNKNOWN.clone()
    }

    /// The image an exec loaded, held as the view of the process that ran the exec.
    pub fn of_exec(view: Arc<Process>, exec_id: ExecId) -> Image {
        Image {
            form: ImageForm::View(view),
            exec_id,
        }
    }

    /// The image of a program whose loading was not seen (a process found in /proc).
    pub fn of_program(program: Program, exec_id: ExecId) -> Image {
        Image {
            form: ImageForm::Packed(PackedProgram::of_program(&program)),
            exec_id,
        }
    }

    /// The binary's path, exactly as the kernel gave it.
    pub fn binary(&self) -> &[u8] {
        match &self.form {
            ImageForm::View(view) => text::exact(&view.binary, &view.binary_raw),
            ImageForm::Packed(program) => program.binary(),
        }
    }

    /// The program's fields as the schema writes them (binary, invoked path, arguments,
    /// working directory, their exact bytes and truncation flags), every other field empty.
    pub fn program_fields(&self) -> Process {
        match &self.form {
            ImageForm::View(view) => program_fields(view),
            ImageForm::Packed(program) => {
                let mut process = Process::default();
                program.unpack().write_into(&mut process);
                process
            }
        }
    }

    /// Holds the program alone, packed, instead of the exec's view, once nothing else holds
    /// either (the process exited and its events are written): the view goes while it is
    /// still in the cache, and the program is kept in one block. An exited process is kept
    /// for seconds, and a busy host has thousands. Both forms give the same program, so this
    /// can happen at any time. True when an event still holds the view, to
    /// be tried again; an image a child shares stays as it is, with the child.
    pub(super) fn compact(image: &mut Arc<Image>) -> bool {
        let Some(image) = Arc::get_mut(image) else {
            return false;
        };
        let ImageForm::View(view) = &mut image.form else {
            return false;
        };
        let Some(view) = Arc::get_mut(view) else {
            return true;
        };
        image.form = ImageForm::Packed(PackedProgram::of_view(view));
        false
    }
}
