//! One UDP flow (`forward -U`): its state, its datagram numbers, the datagrams held until
//! the server opens it, and the reassembly of fragmented datagrams with duplicates
//! dropped. The session (`session/flows.rs`) owns the flows and moves their frames.
//!
//! UDP is unreliable and unordered, and so is a flow: a datagram arrives whole once, or
//! not at all. Nothing here waits for a lost fragment: an incomplete datagram is given up
//! when [`MAX_PARTIALS`] newer ones are being assembled in the session, as IP reassembly gives up.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::frame::Fragment;
use crate::target::Target;

/// The largest datagram a flow carries: the largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// Datagrams a client holds for a flow whose UOPEN is not answered yet (a DNS client's
/// first query comes before the flow can open); more are dropped and counted.
pub(crate) const MAX_HELD: usize = 32;
/// Datagrams assembled at once per session; an older incomplete one is given up for a
/// newer. With [`MAX_DATAGRAM`], this bounds reassembly to 1 MiB per peer.
pub(crate) const MAX_PARTIALS: usize = 16;
/// How far behind the newest datagram number one may arrive and still be delivered;
/// older ones, and any number delivered before, are dropped (a lossy packet may come
/// twice; a datagram must not).
const REPLAY_WINDOW: u32 = 128;

/// Where a flow stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlowState {
    /// Client: UOPEN not sent yet (no session yet, or it is being set up).
    Waiting,
    /// Client: UOPEN sent; datagrams are held until UOPEN_OK.
    Asked,
    /// Server: the application was asked to open it (`FlowRequested`).
    Requested,
    /// Datagrams go both ways.
    Open,
}

/// Datagram numbers seen: the newest, and which of the [`REPLAY_WINDOW`] before it.
#[derive(Debug, Default)]
pub(crate) struct ReplayWindow {
    /// One past the newest number seen (0: none yet).
    top: u64,
    /// Bit `i`: number `top - 1 - i` was seen.
    seen: u128,
}

impl ReplayWindow {
    /// Whether `seq` is new: not seen, and not too old to tell. Records it.
    pub(crate) fn accept(&mut self, seq: u32) -> bool {
        let seq = u64::from(seq);
        if seq >= self.top {
            let shift = seq + 1 - self.top;
            self.seen = if shift >= 128 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.top = seq + 1;
            return true;
        }
        let behind = self.top - 1 - seq;
        if behind >= u64::from(REPLAY_WINDOW) {
            return false;
        }
        let bit = 1u128 << behind;
        let new = self.seen & bit == 0;
        self.seen |= bit;
        new
    }

    /// Whether `seq` was delivered already, or is too old to tell (without recording it).
    pub(crate) fn is_stale(&self, seq: u32) -> bool {
        let seq = u64::from(seq);
        if seq >= self.top {
            return false;
        }
        let behind = self.top - 1 - seq;
        behind >= u64::from(REPLAY_WINDOW) || self.seen & (1u128 << behind) != 0
    }
}

/// A fragmented datagram being assembled.
#[derive(Debug)]
struct Partial {
    flow: u32,
    seq: u32,
    parts: Vec<Option<Bytes>>,
    missing: usize,
    bytes: usize,
}

/// What became of a fragment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Assembled {
    /// A whole datagram, new.
    Datagram(Bytes),
    /// A fragment kept; the datagram is not whole yet.
    Kept,
    /// A datagram seen already, or a fragment that contradicts its datagram's others or
    /// makes it larger than a datagram can be.
    Dropped,
    /// The fragment was kept, and pushed an older incomplete datagram out.
    GaveUp,
}

/// The session's datagrams being assembled, at most [`MAX_PARTIALS`] of them across all
/// its flows, each at most [`MAX_DATAGRAM`] bytes: a peer sending first fragments only
/// holds a bounded amount of memory here.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    partials: VecDeque<Partial>,
}

impl Reassembly {
    /// A fragment of a datagram of the flow whose numbers `rx` records arrived: a whole
    /// new datagram comes out when its last piece is in.
    pub(crate) fn on_fragment(
        &mut self,
        rx: &mut ReplayWindow,
        f: Fragment,
        max_datagram: usize,
    ) -> Assembled {
        if rx.is_stale(f.seq) || f.payload.len() > max_datagram {
            return Assembled::Dropped;
        }
        if f.count == 1 {
            return if rx.accept(f.seq) {
                Assembled::Datagram(f.payload)
            } else {
                Assembled::Dropped
            };
        }
        let mut gave_up = false;
        let i = match self
            .partials
            .iter()
            .position(|p| p.flow == f.flow && p.seq == f.seq)
        {
            Some(i) => i,
            None => {
                if self.partials.len() >= MAX_PARTIALS {
                    self.partials.pop_front();
                    gave_up = true;
                }
                self.partials.push_back(Partial {
                    flow: f.flow,
                    seq: f.seq,
                    parts: vec![None; usize::from(f.count)],
                    missing: usize::from(f.count),
                    bytes: 0,
                });
                self.partials.len() - 1
            }
        };
        match self.fill(i, rx, f, max_datagram) {
            Assembled::Kept if gave_up => Assembled::GaveUp,
            other => other,
        }
    }

    fn fill(
        &mut self,
        i: usize,
        rx: &mut ReplayWindow,
        f: Fragment,
        max_datagram: usize,
    ) -> Assembled {
        let p = &mut self.partials[i];
        let index = usize::from(f.index);
        if p.parts.len() != usize::from(f.count) || p.parts[index].is_some() {
            return Assembled::Dropped; // a repeat, or contradicts the first fragment
        }
        p.bytes += f.payload.len();
        if p.bytes > max_datagram {
            self.partials.remove(i);
            return Assembled::Dropped;
        }
        p.parts[index] = Some(f.payload);
        p.missing -= 1;
        if p.missing > 0 {
            return Assembled::Kept;
        }
        let p = self.partials.remove(i).expect("present");
        if !rx.accept(p.seq) {
            return Assembled::Dropped;
        }
        let mut out = BytesMut::with_capacity(p.bytes);
        for part in p.parts.into_iter().flatten() {
            out.extend_from_slice(&part);
        }
        Assembled::Datagram(out.freeze())
    }

    /// Forgets the datagrams of a flow that ended.
    pub(crate) fn forget(&mut self, flow: u32) {
        self.partials.retain(|p| p.flow != flow);
    }

    /// Forgets everything (the session ended).
    pub(crate) fn clear(&mut self) {
        self.partials.clear();
    }
}

/// One UDP flow.
#[derive(Debug)]
pub(crate) struct Flow {
    pub target: Target,
    pub state: FlowState,
    /// When a datagram last went either way (or the flow was opened).
    pub last_active: Instant,
    /// The next datagram number we send.
    pub tx_seq: u32,
    /// Client: datagrams written before UOPEN_OK, oldest first.
    pub held: VecDeque<Bytes>,
    /// The peer's datagram numbers seen.
    pub rx: ReplayWindow,
}

impl Flow {
    pub(crate) fn new(target: Target, state: FlowState, now: Instant) -> Self {
        Flow {
            target,
            state,
            last_active: now,
            tx_seq: 0,
            held: VecDeque::new(),
            rx: ReplayWindow::default(),
        }
    }
}

/// Cuts `payload` into the fragments of datagram `seq` of `flow`, each at most
/// `max_fragment` bytes. `None` if it would take more than 255 (a fragment count is one byte;
/// [`MAX_DATAGRAM`] takes 49 at the largest packet size, 246 at the smallest).
pub(crate) fn fragments(
    flow: u32,
    seq: u32,
    payload: &Bytes,
    max_fragment: usize,
) -> Option<Vec<Fragment>> {
    let count = payload.len().div_ceil(max_fragment).max(1);
    let count = u8::try_from(count).ok()?;
    Some(
        (0..count)
            .map(|index| {
                let start = usize::from(index) * max_fragment;
                let end = (start + max_fragment).min(payload.len());
                Fragment {
                    flow,
                    seq,
                    index,
                    count,
                    payload: payload.slice(start..end),
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(r: &mut Reassembly, w: &mut ReplayWindow, f: &Fragment) -> Assembled {
        r.on_fragment(w, f.clone(), MAX_DATAGRAM)
    }

    #[test]
    fn replay_window_delivers_each_number_once_and_refuses_the_too_old() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(0));
        assert!(!w.accept(0));
        assert!(w.accept(5));
        assert!(w.accept(3), "late but within the window");
        assert!(!w.accept(3));
        assert!(w.accept(1000));
        assert!(!w.accept(5), "too old to tell: dropped");
        assert!(w.accept(1000 - 127));
        assert!(!w.accept(1000 - 128));
        assert!(w.accept(u32::MAX));
        assert!(!w.accept(u32::MAX));
    }

    #[test]
    fn fragments_reassemble_in_any_order_once() {
        let data = Bytes::from((0..5000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let frags = fragments(7, 9, &data, 1362).unwrap();
        assert_eq!(frags.len(), 4);
        let (mut r, mut w) = (Reassembly::default(), ReplayWindow::default());
        let mut out = Vec::new();
        for frag in frags.iter().rev().chain(frags.iter()) {
            match assemble(&mut r, &mut w, frag) {
                Assembled::Datagram(d) => out.push(d),
                Assembled::Kept | Assembled::Dropped => {}
                Assembled::GaveUp => panic!("nothing to give up"),
            }
        }
        assert_eq!(
            out,
            vec![data],
            "whole once, though every fragment came twice"
        );
    }

    #[test]
    fn an_incomplete_datagram_is_given_up_for_newer_ones() {
        let data = Bytes::from(vec![1u8; 3000]);
        let (mut r, mut w) = (Reassembly::default(), ReplayWindow::default());
        let mut gave_up = 0;
        for seq in 0..(MAX_PARTIALS as u32 + 2) {
            let first = fragments(1, seq, &data, 1362).unwrap().remove(0);
            if assemble(&mut r, &mut w, &first) == Assembled::GaveUp {
                gave_up += 1;
            }
        }
        assert_eq!(gave_up, 2);
        assert_eq!(r.partials.len(), MAX_PARTIALS);
        r.forget(1);
        assert!(r.partials.is_empty());
    }

    #[test]
    fn contradicting_fragments_and_oversized_datagrams_are_dropped() {
        let (mut r, mut w) = (Reassembly::default(), ReplayWindow::default());
        let a = Fragment {
            flow: 1,
            seq: 1,
            index: 0,
            count: 2,
            payload: Bytes::from_static(b"ab"),
        };
        assert_eq!(r.on_fragment(&mut w, a.clone(), 3), Assembled::Kept);
        let liar = Fragment {
            count: 3,
            index: 2,
            ..a.clone()
        };
        assert_eq!(r.on_fragment(&mut w, liar, 3), Assembled::Dropped);
        let b = Fragment { index: 1, ..a };
        assert_eq!(
            r.on_fragment(&mut w, b, 3),
            Assembled::Dropped,
            "4 bytes > 3"
        );
        assert!(r.partials.is_empty(), "the oversized datagram is gone");
    }

    #[test]
    fn an_empty_datagram_is_one_fragment() {
        let frags = fragments(1, 0, &Bytes::new(), 100).unwrap();
        assert_eq!(frags.len(), 1);
        assert!(fragments(1, 0, &Bytes::from(vec![0; 256 * 10]), 10).is_none());
    }
}
