//! c-toxcore's per-packet `mlock`, and how toxtun's programs skip it.
//!
//! c-toxcore 0.2.18 encrypts and decrypts every packet through two temporary heap buffers
//! that it locks with libsodium's `sodium_mlock` and unlocks with `sodium_munlock`. Each of
//! those is an `madvise` and an `mlock` (or `munlock`) system call that splits, then
//! merges, the heap's memory map under the process's memory-map lock: eight system calls
//! per packet each way. Profiled during a tunnelled download, they were **most of the Tox
//! thread's time** (BENCHMARKS.md, issue 8). Upstream removes these buffers from the packet
//! path (TokTok/c-toxcore issue #3030, pull request #3080).
//!
//! Locking them protects nothing here: they hold a packet's plaintext and ciphertext for a
//! few microseconds, and the same plaintext sits in ordinary memory in toxtun's own stream
//! buffers, and in the kernel's socket buffers, all along. c-toxcore locks nothing else
//! (its keys are not locked). So an executable may export the two functions below, and the
//! dynamic linker then resolves c-toxcore's calls to them rather than to libsodium's:
//! `sodium_mlock` does nothing, `sodium_munlock` only zeroes the buffer (as libsodium's
//! does before unlocking; c-toxcore zeroes it too). Exporting them takes one linker flag,
//! which this crate's build script hands to the build scripts of crates that depend on it
//! as `DEP_TOXCORE_EXPORT_LINK_ARG` (pass it on with `cargo:rustc-link-arg`, as
//! `runtime-tokio/build.rs` does). A program that does not keeps c-toxcore's behaviour,
//! and [`skips_toxcore_mlock`] says which is in force.
//!
//! Setting `TOXTUN_TOXCORE_MLOCK=1` in the environment restores libsodium's functions (the
//! bench uses it to measure stock c-toxcore beside the tunnel). Linux only: elsewhere
//! nothing is replaced.

#[cfg(target_os = "linux")]
use std::ffi::{c_int, c_void};
#[cfg(target_os = "linux")]
use std::sync::OnceLock;

#[cfg(target_os = "linux")]
type LockFn = unsafe extern "C" fn(*mut c_void, usize) -> c_int;

/// libsodium's own functions when `TOXTUN_TOXCORE_MLOCK=1`; `None` to skip locking.
#[cfg(target_os = "linux")]
fn libsodium() -> Option<(LockFn, LockFn)> {
    static REAL: OnceLock<Option<(LockFn, LockFn)>> = OnceLock::new();
    *REAL.get_or_init(|| {
        if std::env::var_os("TOXTUN_TOXCORE_MLOCK").is_none_or(|v| v != "1") {
            return None;
        }
        // SAFETY: dlsym with RTLD_NEXT and NUL-terminated names; a non-null result is the
        // next definition of a function with libsodium's documented signature.
        unsafe {
            let lock = libc::dlsym(libc::RTLD_NEXT, c"sodium_mlock".as_ptr());
            let unlock = libc::dlsym(libc::RTLD_NEXT, c"sodium_munlock".as_ptr());
            if lock.is_null() || unlock.is_null() {
                return None;
            }
            Some((
                std::mem::transmute::<*mut c_void, LockFn>(lock),
                std::mem::transmute::<*mut c_void, LockFn>(unlock),
            ))
        }
    })
}

/// Replaces libsodium's `sodium_mlock` for c-toxcore when the executable exports it: does
/// not lock, and answers -1 ("not locked"; c-toxcore ignores the answer).
///
/// # Safety
///
/// `addr` must point to `len` bytes the caller owns (libsodium's contract).
#[cfg(target_os = "linux")]
#[no_mangle]
pub unsafe extern "C" fn sodium_mlock(addr: *mut c_void, len: usize) -> c_int {
    match libsodium() {
        // SAFETY: libsodium's own function, under the caller's guarantees.
        Some((lock, _)) => unsafe { lock(addr, len) },
        None => -1,
    }
}

/// Replaces libsodium's `sodium_munlock` for c-toxcore when the executable exports it:
/// zeroes the `len` bytes at `addr` (as libsodium's does) and answers 0.
///
/// # Safety
///
/// `addr` must point to `len` writable bytes the caller owns (libsodium's contract).
#[cfg(target_os = "linux")]
#[no_mangle]
pub unsafe extern "C" fn sodium_munlock(addr: *mut c_void, len: usize) -> c_int {
    match libsodium() {
        // SAFETY: libsodium's own function, under the caller's guarantees.
        Some((_, unlock)) => unsafe { unlock(addr, len) },
        None => {
            if !addr.is_null() {
                // SAFETY: the caller owns these bytes; explicit_bzero is not optimized away.
                unsafe { libc::explicit_bzero(addr, len) };
            }
            0
        }
    }
}

/// Whether c-toxcore's calls to `sodium_mlock` reach the function above and skip the lock:
/// the executable exports it (`DEP_TOXCORE_EXPORT_LINK_ARG`) and `TOXTUN_TOXCORE_MLOCK=1`
/// is not set.
#[cfg(target_os = "linux")]
pub fn skips_toxcore_mlock() -> bool {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name.
    let (lock, unlock) = unsafe {
        (
            libc::dlsym(libc::RTLD_DEFAULT, c"sodium_mlock".as_ptr()),
            libc::dlsym(libc::RTLD_DEFAULT, c"sodium_munlock".as_ptr()),
        )
    };
    lock == sodium_mlock as *mut c_void
        && unlock == sodium_munlock as *mut c_void
        && libsodium().is_none()
}

/// Whether c-toxcore's per-packet `mlock` is skipped: never, off Linux.
#[cfg(not(target_os = "linux"))]
pub fn skips_toxcore_mlock() -> bool {
    false
}
