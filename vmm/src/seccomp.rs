//! seccomp filters per thread, as Firecracker confines its threads: the
//! vCPU threads, the device thread and the main thread each get their own
//! allow-list (seccompiler, BPF), installed before the guest runs (vCPU
//! threads: before their first KVM_RUN; the device thread: before its
//! first wait; the main thread: once it has spawned the others). With
//! `--seccomp on` a system call outside the list raises SIGSYS, whose
//! handler names the thread and the call and ends the VMM with SIGSYS;
//! with `log` the kernel logs it and lets it run; `off` installs nothing.

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};
use std::collections::BTreeMap;
use thiserror::Error;

/// `--seccomp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SeccompMode {
    /// Forbidden calls end the VMM (SIGSYS).
    #[default]
    On,
    /// Forbidden calls are logged by the kernel and allowed.
    Log,
    /// No filters.
    Off,
}

/// Which allow-list a thread gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThreadKind {
    /// Runs one vCPU: KVM_RUN and the exits it handles (port and MMIO
    /// devices, the SNP model's GHCB work, conversions).
    Vcpu,
    /// The device event loop: virtio queues, disk and socket I/O.
    Devices,
    /// Waits for the stop, stops the others, writes metrics and evidence.
    Main,
    /// Serves the control API: its socket, /proc reads, metrics files.
    Api,
}

/// Why a filter could not be installed.
#[derive(Debug, Error)]
pub enum SeccompError {
    /// The filter did not compile.
    #[error("cannot build the seccomp filter")]
    Build(#[from] seccompiler::BackendError),
    /// The filter did not compile to BPF.
    #[error("cannot compile the seccomp filter")]
    Compile(#[from] seccompiler::Error),
    /// The kernel refused it.
    #[error("cannot install the seccomp filter")]
    Install(#[source] seccompiler::Error),
}

/// Calls every thread makes (memory, synchronisation, signals, exit).
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_futex,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_read,
    libc::SYS_close,
    libc::SYS_ioctl,
    libc::SYS_fcntl,
    libc::SYS_rseq,
    libc::SYS_prctl,
];

/// A vCPU thread: KVM_RUN and register ioctls, its devices' writes.
/// (fallocate: the SNP model discards the old half of a conversion.)
const VCPU: &[i64] = &[
    libc::SYS_tgkill,
    libc::SYS_pwrite64,
    libc::SYS_pread64,
    libc::SYS_fallocate,
];

/// The device thread: epoll, disk I/O, vsock sockets.
const DEVICES: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_accept4,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    libc::SYS_lseek,
    libc::SYS_fallocate,
];

/// The main thread after start-up: stopping and joining the others,
/// tearing the VM down, writing metrics and evidence files.
const MAIN: &[i64] = &[
    libc::SYS_tgkill,
    // A library caller may run the next VM from the same thread.
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_sched_setaffinity,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_memfd_create,
    libc::SYS_ftruncate,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_socket,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_openat,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_getcwd,
    libc::SYS_fsync,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_epoll_ctl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_rt_sigaction,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_munlock,
    libc::SYS_fchmod,
];

fn program(kind: ThreadKind, mode: SeccompMode) -> Result<BpfProgram, SeccompError> {
    // Threads inherit their creator's filter: the main thread's must also
    // allow what the threads it starts for a later VM need (a library
    // caller may run VM after VM from one thread), and `seccomp` itself
    // for them to add their own.
    let extra: Vec<i64> = match kind {
        ThreadKind::Vcpu => VCPU.to_vec(),
        ThreadKind::Devices => DEVICES.to_vec(),
        ThreadKind::Main => [MAIN, VCPU, DEVICES, &[libc::SYS_seccomp]].concat(),
        ThreadKind::Api => [MAIN, DEVICES, &[libc::SYS_accept]].concat(),
    };
    let rules: BTreeMap<i64, Vec<SeccompRule>> = COMMON
        .iter()
        .chain(&extra)
        .map(|&call| (call, Vec::new()))
        .collect();
    let mismatch = match mode {
        SeccompMode::Log => SeccompAction::Log,
        _ => SeccompAction::Trap,
    };
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)?;
    Ok(filter.try_into()?)
}

thread_local! {
    /// Whether this thread already carries the main thread's filter: a
    /// library caller that runs VM after VM from one thread gets it once
    /// (filters stack, and the kernel bounds their total size).
    static MAIN_CONFINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs `kind`'s filter on the calling thread (nothing with `off`).
pub(crate) fn install(kind: ThreadKind, mode: SeccompMode) -> Result<(), SeccompError> {
    if mode == SeccompMode::Off || (kind == ThreadKind::Main && MAIN_CONFINED.get()) {
        return Ok(());
    }
    let program = program(kind, mode)?;
    seccompiler::apply_filter(&program).map_err(SeccompError::Install)?;
    if kind == ThreadKind::Main {
        MAIN_CONFINED.set(true);
    }
    Ok(())
}

/// The SIGSYS handler: names the thread and the call, then ends the VMM
/// with SIGSYS. Only async-signal-safe calls.
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSYS; `si_syscall`
    // is the int at byte 24 (after si_signo, si_errno, si_code, padding
    // and `_call_addr`), as Firecracker reads it.
    let call = unsafe { *(info as *const i32).add(6) };
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into `name`.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    let mut line = [0u8; 160];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if n < line.len() {
                line[n] = b;
                n += 1;
            }
        }
    };
    put(b"umbra: seccomp: thread '");
    put(name.split(|&b| b == 0).next().unwrap_or(&[]));
    put(b"' made system call ");
    let mut digits = [0u8; 12];
    let mut i = digits.len();
    let mut v = call.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    put(&digits[i..]);
    put(b", which its filter forbids (--seccomp on): stopping the VMM\n");
    // SAFETY: write(2) and the default-action re-raise are
    // async-signal-safe; the buffer is valid for `n` bytes.
    unsafe {
        libc::write(2, line.as_ptr().cast(), n);
        libc::signal(libc::SIGSYS, libc::SIG_DFL);
        libc::raise(libc::SIGSYS);
    }
}

/// Installs the SIGSYS handler (once per process, before any filter).
pub(crate) fn install_sigsys_handler() -> std::io::Result<()> {
    vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, on_sigsys)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

/// For the test of the filters: `UMBRA_SECCOMP_SELFTEST=vcpu` makes each
/// vCPU thread call `uname`, which no filter allows, right after its
/// filter is installed.
pub(crate) fn selftest(kind: ThreadKind) {
    if kind == ThreadKind::Vcpu && std::env::var("UMBRA_SECCOMP_SELFTEST").as_deref() == Ok("vcpu")
    {
        let mut uts = std::mem::MaybeUninit::<libc::utsname>::uninit();
        // SAFETY: uname writes a utsname into the buffer; the result is
        // unused (the filter must stop the process first).
        unsafe { libc::uname(uts.as_mut_ptr()) };
    }
}
