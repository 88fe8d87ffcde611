//! `become-root PROGRAM [ARGS...]`: a stand-in for sudo in the tests. Installed set-user-id
//! root by a test, it makes every user id root (`setresuid(0, 0, 0)`) and execs PROGRAM.
use std::os::unix::process::CommandExt;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: become-root PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    // SAFETY: setresuid has no memory preconditions.
    if unsafe { libc::setresuid(0, 0, 0) } != 0 {
        eprintln!("setresuid: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    let err = std::process::Command::new(&program).args(args).exec();
    eprintln!("exec {}: {err}", program.to_string_lossy());
    std::process::exit(127);
}
