//! What the bottleneck tests (`congestion.rs`, `wan_profiles.rs`) share: a client and a
//! server admitting it, both running one congestion controller, connected over a direct
//! link through the pair's emulated bottleneck.

use std::time::Duration;

use toxtun_proto::pair::{LossyLink, Pair};
use toxtun_proto::{
    ClientRule, CongestionControl, EndpointConfig, PeerId, ServerPolicy, TargetRules,
};

pub const CLIENT: PeerId = PeerId([0xC1; 32]);
pub const SERVER: PeerId = PeerId([0x5E; 32]);
pub const STEPS: usize = 50_000_000;

/// A pair running `cc` on both sides, its session up over a direct link with one-way
/// `delay` and the lossy lane `link`.
pub fn on_bottleneck(cc: CongestionControl, delay: Duration, link: LossyLink, seed: u64) -> Pair {
    let mut c = EndpointConfig::new(CLIENT);
    c.congestion = cc;
    let mut s = EndpointConfig::new(SERVER);
    s.congestion = cc;
    s.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: CLIENT,
            targets: TargetRules::new(vec!["*:*".parse().unwrap()]),
        }],
        ..Default::default()
    });
    let mut p = Pair::new(c, s, seed);
    p.latency = delay;
    p.establish(STEPS).unwrap();
    p.lossy = link;
    p.set_direct(true);
    p
}
