//! Performs exactly the opens an integration test asks for, so the test knows what the sensor
//! must report. Paths are taken as raw bytes (any byte but NUL).
//!
//!   opener read PATH                 open(PATH, O_RDONLY)
//!   opener create PATH               open(PATH, O_WRONLY|O_CREAT|O_TRUNC, 0644)
//!   opener chdir DIR REL             chdir(DIR), then open(REL, O_RDONLY)
//!   opener dirfd DIR REL             openat(open(DIR), REL, O_RDONLY)
//!   opener repeat N PATH             N times open(PATH, O_RDONLY) and close
//!   opener uring PATH                IORING_OP_OPENAT(AT_FDCWD, PATH, O_RDONLY) through io_uring
//!
//! Exit status: 0 if every open succeeded, 1 if one failed (the tests expect some to), 2 on
//! bad usage.
use std::{
    ffi::{CString, OsString},
    os::unix::ffi::OsStringExt,
};

fn c(arg: OsString) -> CString {
    CString::new(arg.into_vec()).expect("argument without NUL")
}

fn check(fd: i32) -> bool {
    if fd >= 0 {
        // SAFETY: closing a descriptor this process just opened.
        unsafe { libc::close(fd) };
        true
    } else {
        false
    }
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let command = args
        .next()
        .and_then(|a| a.into_string().ok())
        .unwrap_or_default();
    let mut next = || c(args.next().unwrap_or_else(|| std::process::exit(2)));
    // SAFETY: plain libc calls with valid NUL-terminated strings.
    let ok = unsafe {
        match command.as_str() {
            "read" => check(libc::open(next().as_ptr(), libc::O_RDONLY)),
            "create" => check(libc::open(
                next().as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                0o644,
            )),
            "chdir" => {
                let dir = next();
                let rel = next();
                libc::chdir(dir.as_ptr()) == 0 && check(libc::open(rel.as_ptr(), libc::O_RDONLY))
            }
            "dirfd" => {
                let dir = libc::open(next().as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
                let rel = next();
                let ok = dir >= 0 && check(libc::openat(dir, rel.as_ptr(), libc::O_RDONLY));
                libc::close(dir);
                ok
            }
            "repeat" => {
                let n: usize = next()
                    .to_str()
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let path = next();
                (0..n).all(|_| check(libc::open(path.as_ptr(), libc::O_RDONLY)))
            }
            "uring" => uring_open(&next()),
            _ => std::process::exit(2),
        }
    };
    std::process::exit(if ok { 0 } else { 1 });
}

/// One open through io_uring; true if it produced a descriptor.
fn uring_open(path: &CString) -> bool {
    let Ok(mut ring) = io_uring::IoUring::new(8) else {
        return false;
    };
    let open = io_uring::opcode::OpenAt::new(io_uring::types::Fd(libc::AT_FDCWD), path.as_ptr())
        .flags(libc::O_RDONLY)
        .build()
        .user_data(1);
    // SAFETY: `path` outlives the request, which completes before this function returns.
    if unsafe { ring.submission().push(&open) }.is_err() || ring.submit_and_wait(1).is_err() {
        return false;
    }
    let result = ring.completion().next().map(|cqe| cqe.result());
    result.is_some_and(check)
}
