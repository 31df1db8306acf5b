//! Network namespaces the emulator makes for itself, and the TUN devices that join them.
//!
//! A namespace here holds nothing but `lo` and the emulator's own TUN device, and has no
//! default route: [`Namespace::check_isolated`] verifies that before anything runs in it,
//! so no test traffic can leave the machine (the project's network rule).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};

/// Why the emulated WAN cannot run here, or stopped.
#[derive(Debug)]
pub enum NetsimError {
    /// Not root, no `ip`, no `/dev/net/tun`, or namespaces are not allowed: the reason.
    Unavailable(String),
    /// A namespace holds more than `lo` and our device, or has a default route.
    NotIsolated(String),
    /// A command or system call failed.
    Io(String),
}

impl std::fmt::Display for NetsimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetsimError::Unavailable(why) => write!(f, "the emulated WAN cannot run here: {why}"),
            NetsimError::NotIsolated(why) => write!(f, "refusing to run: {why}"),
            NetsimError::Io(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for NetsimError {}

/// Runs `ip` with `args`; its error output on failure.
pub(crate) fn ip(args: &[&str]) -> Result<String, NetsimError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetsimError::Unavailable(format!("cannot run ip (iproute2): {e}")))?;
    if !out.status.success() {
        return Err(NetsimError::Io(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this machine can run the emulated WAN: root, `ip`, `/dev/net/tun`, and
/// namespaces. `Err` says why not.
pub fn available() -> Result<(), NetsimError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(NetsimError::Unavailable(
            "it needs root (network namespaces and TUN devices)".into(),
        ));
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(NetsimError::Unavailable("no /dev/net/tun".into()));
    }
    ip(&["-V"])?;
    let probe = format!("toxtun-probe-{}", std::process::id());
    ip(&["netns", "add", &probe])
        .map_err(|e| NetsimError::Unavailable(format!("cannot make a namespace: {e}")))?;
    let _ = ip(&["netns", "del", &probe]);
    Ok(())
}

/// The start of every namespace's name made here: `toxtun-wan-<tag>-<pid>-<side>`.
pub const PREFIX: &str = "toxtun-wan-";

/// Deletes namespaces a run left behind when it was killed (their process is gone), so
/// they do not pile up.
pub(crate) fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A network namespace made here, deleted when dropped.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Makes namespace `name` (deleting a stale one of that name first) with `lo` up and
    /// IPv6 off (so that nothing but our IPv4 addresses exists in it).
    pub fn create(name: &str) -> Result<Self, NetsimError> {
        let _ = ip(&["netns", "del", name]);
        ip(&["netns", "add", name])?;
        let ns = Namespace {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        for key in ["all", "default", "lo"] {
            let _ = Command::new("ip")
                .args(["netns", "exec", name, "sysctl", "-q", "-w"])
                .arg(format!("net.ipv6.conf.{key}.disable_ipv6=1"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <name> args…`.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetsimError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Checks that the namespace holds only `lo` and `device`, and that no route leads
    /// anywhere but the device's own subnet: no default route, IPv4 or IPv6.
    pub fn check_isolated(&self, device: &str) -> Result<(), NetsimError> {
        let links = self.ip(&["-o", "link", "show"])?;
        for line in links.lines() {
            let name = line
                .split(':')
                .nth(1)
                .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
                .unwrap_or_default();
            if name != "lo" && name != device {
                return Err(NetsimError::NotIsolated(format!(
                    "namespace {} has an interface {name:?} besides lo and {device}",
                    self.name
                )));
            }
        }
        for family in ["-4", "-6"] {
            let routes = self.ip(&[family, "route", "show", "default"])?;
            if !routes.trim().is_empty() {
                return Err(NetsimError::NotIsolated(format!(
                    "namespace {} has a default route: {}",
                    self.name,
                    routes.trim()
                )));
            }
        }
        let routes = self.ip(&["-4", "route", "show"])?;
        for line in routes.lines() {
            if !line.contains(&format!("dev {device}")) && !line.contains("dev lo") {
                return Err(NetsimError::NotIsolated(format!(
                    "namespace {} has a route that is not ours: {line}",
                    self.name
                )));
            }
        }
        Ok(())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// A TUN device (IP packets, no header) this process holds open; the device goes away
/// with the last descriptor.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
}

impl Tun {
    /// Opens a new TUN device `name` (at most 15 bytes) in this process's namespace.
    pub fn open(name: &str) -> Result<Self, NetsimError> {
        if name.len() >= libc::IFNAMSIZ {
            return Err(NetsimError::Io(format!("device name {name:?} is too long")));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| NetsimError::Unavailable(format!("cannot open /dev/net/tun: {e}")))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: the descriptor is open; `req` is a valid ifreq that outlives the call,
        // and TUNSETIFF only reads and writes within it.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            return Err(NetsimError::Io(format!(
                "TUNSETIFF {name}: {}",
                io::Error::last_os_error()
            )));
        }
        Ok(Tun {
            file,
            name: name.to_string(),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the device into `ns`, gives it `addr` (CIDR) and brings it up. The descriptor
    /// keeps working across the move.
    pub fn place(&self, ns: &Namespace, addr: &str, mtu: u32) -> Result<(), NetsimError> {
        ip(&["link", "set", &self.name, "netns", ns.name()])?;
        ns.ip(&["addr", "add", addr, "dev", &self.name])?;
        ns.ip(&["link", "set", &self.name, "mtu", &mtu.to_string(), "up"])?;
        Ok(())
    }

    /// A second descriptor of the device, for a thread of its own.
    pub fn try_clone_fd(&self) -> Result<OwnedFd, NetsimError> {
        let f = self
            .file
            .try_clone()
            .map_err(|e| NetsimError::Io(format!("dup of {}: {e}", self.name)))?;
        Ok(OwnedFd::from(f))
    }
}

/// Reads one packet from `fd` into `buf`, waiting at most `timeout_ms`; `Ok(None)` when
/// nothing came.
pub(crate) fn read_packet(
    fd: &OwnedFd,
    buf: &mut [u8],
    timeout_ms: i32,
) -> io::Result<Option<usize>> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd for one descriptor that stays open during the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(None)
        } else {
            Err(e)
        };
    }
    if n == 0 {
        return Ok(None);
    }
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes; the descriptor is open.
    let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(r as usize))
}

/// Writes one packet to `fd`.
pub(crate) fn write_packet(fd: &OwnedFd, packet: &[u8]) -> io::Result<()> {
    // SAFETY: `packet` is valid for reads of its length; the descriptor is open.
    let r = unsafe { libc::write(fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
