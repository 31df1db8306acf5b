//! The emulated WAN: two namespaces, A and B, each with a TUN device, and a userspace
//! forwarder between the devices that runs every packet through the [`Direction`] model of
//! its way (A→B or B→A) and hands it to the other side when the model says it arrives.
//!
//! A is 10.77.0.1 and B is 10.77.0.2 (a /24 on each device, no other route). Programs run
//! in a namespace with [`Wan::command`]; the forwarder's threads live in this process and
//! stop when the `Wan` is dropped, which also deletes the namespaces.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::{read_packet, write_packet, Namespace, NetsimError, Tun};
use crate::path::{Direction, PathConfig, PathStats};

/// Side A's address.
pub const ADDR_A: &str = "10.77.0.1";
/// Side B's address.
pub const ADDR_B: &str = "10.77.0.2";
/// The devices' MTU: an Ethernet path's.
pub const MTU: u32 = 1500;
/// The most packets the forwarder holds on their way in one direction (past it, packets
/// are dropped): far above what any configured delay and rate hold, so that it never
/// decides anything, while memory stays bounded whatever a test sends.
const MAX_IN_FLIGHT: usize = 200_000;

/// One end of the emulated path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// 10.77.0.1.
    A,
    /// 10.77.0.2.
    B,
}

/// Which way packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// From A to B.
    AToB,
    /// From B to A.
    BToA,
}

impl Way {
    fn index(self) -> usize {
        match self {
            Way::AToB => 0,
            Way::BToA => 1,
        }
    }
}

/// Packets on their way in one direction, by arrival time.
#[derive(Debug, Default)]
struct InFlight {
    heap: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    seq: u64,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    /// The path is out (on command).
    outage: AtomicBool,
    /// Outages on a schedule: [start, end).
    scheduled: Mutex<Vec<(Instant, Instant)>>,
    dirs: [Mutex<Direction>; 2],
    flights: [(Mutex<InFlight>, Condvar); 2],
}

impl Shared {
    fn out_at(&self, now: Instant) -> bool {
        self.outage.load(Ordering::Relaxed)
            || self
                .scheduled
                .lock()
                .expect("no panics while held")
                .iter()
                .any(|&(a, b)| a <= now && now < b)
    }
}

/// The emulated WAN (see the module docs).
#[derive(Debug)]
pub struct Wan {
    a: Namespace,
    b: Namespace,
    devices: [String; 2],
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    // Held last: the devices go away with them, after the threads stopped.
    _tuns: [Tun; 2],
}

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

impl Wan {
    /// Makes the namespaces and devices, checks that the namespaces are isolated, and
    /// starts forwarding with `a_to_b` and `b_to_a`. `tag` (a few letters) keeps the names
    /// of concurrent runs apart.
    pub fn start(
        tag: &str,
        a_to_b: PathConfig,
        b_to_a: PathConfig,
        seed: u64,
    ) -> Result<Self, NetsimError> {
        crate::netns::available()?;
        crate::netns::remove_stale();
        let pid = std::process::id();
        let a = Namespace::create(&format!("{}{tag}-{pid}-a", crate::netns::PREFIX))?;
        let b = Namespace::create(&format!("{}{tag}-{pid}-b", crate::netns::PREFIX))?;
        // Device names hold 15 bytes.
        let short = format!("{tag}{}", pid % 100_000);
        let tun_a = Tun::open(&format!("tw{short}a"))?;
        let tun_b = Tun::open(&format!("tw{short}b"))?;
        tun_a.place(&a, &format!("{ADDR_A}/24"), MTU)?;
        tun_b.place(&b, &format!("{ADDR_B}/24"), MTU)?;
        a.check_isolated(tun_a.name())?;
        b.check_isolated(tun_b.name())?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            outage: AtomicBool::new(false),
            scheduled: Mutex::new(Vec::new()),
            dirs: [
                Mutex::new(Direction::new(a_to_b, seed)),
                Mutex::new(Direction::new(b_to_a, seed ^ 0x5A5A_5A5A)),
            ],
            flights: Default::default(),
        });
        let mut threads = Vec::new();
        for (way, from, to) in [(Way::AToB, &tun_a, &tun_b), (Way::BToA, &tun_b, &tun_a)] {
            let (src, dst) = (from.try_clone_fd()?, to.try_clone_fd()?);
            let s = Arc::clone(&shared);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("wan-in-{way:?}"))
                    .spawn(move || take_in(&s, way, &src))
                    .map_err(|e| NetsimError::Io(e.to_string()))?,
            );
            let s = Arc::clone(&shared);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("wan-out-{way:?}"))
                    .spawn(move || hand_out(&s, way, &dst))
                    .map_err(|e| NetsimError::Io(e.to_string()))?,
            );
        }
        let devices = [tun_a.name().to_string(), tun_b.name().to_string()];
        Ok(Wan {
            a,
            b,
            devices,
            shared,
            threads,
            _tuns: [tun_a, tun_b],
        })
    }

    /// The namespace of one side.
    pub fn namespace(&self, side: Side) -> &Namespace {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    /// The address of one side.
    pub fn addr(side: Side) -> &'static str {
        match side {
            Side::A => ADDR_A,
            Side::B => ADDR_B,
        }
    }

    /// A command that runs `program` on one side. Checks the namespace is still isolated
    /// first (a program run earlier could have changed it).
    pub fn command(
        &self,
        side: Side,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<Command, NetsimError> {
        let (ns, dev) = match side {
            Side::A => (&self.a, &self.devices[0]),
            Side::B => (&self.b, &self.devices[1]),
        };
        ns.check_isolated(dev)?;
        Ok(ns.command(program))
    }

    /// Takes the path out (`true`) or brings it back, now.
    pub fn set_outage(&self, out: bool) {
        self.shared.outage.store(out, Ordering::Relaxed);
    }

    /// Takes the path out from `start` for `length`.
    pub fn schedule_outage(&self, start: Instant, length: Duration) {
        self.shared
            .scheduled
            .lock()
            .expect("no panics while held")
            .push((start, start + length));
    }

    /// Changes one direction's configuration from now on.
    pub fn set_path(&self, way: Way, config: PathConfig) {
        self.shared.dirs[way.index()]
            .lock()
            .expect("no panics while held")
            .set_config(config);
    }

    /// What one direction did so far.
    pub fn stats(&self, way: Way) -> PathStats {
        self.shared.dirs[way.index()]
            .lock()
            .expect("no panics while held")
            .stats()
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for (_, cv) in &self.shared.flights {
            cv.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Whether an IP packet is a UDP datagram (IPv4 protocol 17; IPv6 next header 17).
fn is_udp(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(9) == Some(&17),
        Some(6) => packet.get(6) == Some(&17),
        _ => false,
    }
}

/// Reads packets entering the path on one side and schedules their arrival.
fn take_in(shared: &Shared, way: Way, src: &OwnedFd) {
    let mut buf = vec![0u8; 65_536];
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match read_packet(src, &mut buf, 50) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let at = now();
        let out = shared.out_at(at);
        let verdict = shared.dirs[way.index()]
            .lock()
            .expect("no panics while held")
            .on_packet(at, n, is_udp(&buf[..n]), out);
        if let crate::path::Verdict::Deliver(when) = verdict {
            let (lock, cv) = &shared.flights[way.index()];
            let mut f = lock.lock().expect("no panics while held");
            if f.heap.len() < MAX_IN_FLIGHT {
                f.seq += 1;
                let seq = f.seq;
                f.heap.push(Reverse((when, seq, buf[..n].to_vec())));
                cv.notify_one();
            }
        }
    }
}

/// Writes packets to the other side when they arrive. A packet due during an outage that
/// began after it entered is lost too: the path was out when it got there.
fn hand_out(shared: &Shared, way: Way, dst: &OwnedFd) {
    let (lock, cv) = &shared.flights[way.index()];
    let mut f = lock.lock().expect("no panics while held");
    while !shared.stop.load(Ordering::Relaxed) {
        let t = now();
        match f.heap.peek() {
            Some(Reverse((when, _, _))) if *when <= t => {
                let Some(Reverse((_, _, packet))) = f.heap.pop() else {
                    continue;
                };
                drop(f);
                if !shared.out_at(t) {
                    let _ = write_packet(dst, &packet);
                }
                f = lock.lock().expect("no panics while held");
            }
            Some(Reverse((when, _, _))) => {
                let wait = *when - t;
                f = cv.wait_timeout(f, wait).expect("no panics while held").0;
            }
            None => {
                f = cv
                    .wait_timeout(f, Duration::from_millis(50))
                    .expect("no panics while held")
                    .0;
            }
        }
    }
}
