//! Turning kernel refusals into messages that say what to do.
use std::io;

/// Explains a load/attach failure whose root cause is `errno`, if it is one we recognise.
pub fn explain(errno: Option<i32>) -> Option<&'static str> {
    match errno? {
        libc::EPERM | libc::EACCES => Some(
            "permission denied by the kernel: run custos as root, or with CAP_BPF, CAP_PERFMON \
             and CAP_SYS_RESOURCE (kernels before 5.8 need CAP_SYS_ADMIN)",
        ),
        libc::ENOMEM => Some(
            "the kernel could not allocate BPF memory: raise the memlock limit \
             (LimitMEMLOCK=infinity in the unit) or use a kernel >= 5.11",
        ),
        libc::ENOSYS => Some("this kernel has no bpf(2) syscall (CONFIG_BPF_SYSCALL is off)"),
        _ => None,
    }
}

/// Finds the first OS error in an error chain.
pub fn root_errno(err: &anyhow::Error) -> Option<i32> {
    err.chain().find_map(|e| {
        e.downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
    })
}

/// Lifts the memlock limit for kernels that still account BPF memory there (before 5.11). Newer
/// kernels account to the cgroup, so a refusal is only worth a debug line.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11",
            io::Error::last_os_error()
        );
    }
}
