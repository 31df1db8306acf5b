//! The named paths of the WAN bench (issue 15's table), the same both ways.

use std::time::Duration;

use crate::path::{PathConfig, Reorder};

/// One path to measure on.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Its name in the bench's output.
    pub name: &'static str,
    /// Each direction's configuration (the paths here are symmetric).
    pub path: PathConfig,
    /// Outages to cut into a transfer, one transfer each.
    pub outages: Vec<Duration>,
    /// What it stands for, for the table.
    pub about: &'static str,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const MBIT: u64 = 1_000_000;

/// Every profile, in the bench's order.
pub fn all() -> Vec<Profile> {
    let broadband = PathConfig::delay(ms(25)).with_bottleneck(100 * MBIT, ms(100));
    let mut reordering = PathConfig::delay(ms(15)).with_bottleneck(100 * MBIT, ms(100));
    reordering.reorder = Some(Reorder {
        fraction: 0.01,
        extra: ms(10),
    });
    let mut relay = broadband.clone();
    relay.block_udp = true;
    vec![
        Profile {
            name: "broadband",
            path: broadband.clone(),
            outages: vec![],
            about: "50 ms RTT, no loss, 100 Mbit/s, 100 ms queue",
        },
        Profile {
            name: "lossy-wifi",
            path: broadband.clone().with_loss(0.01),
            outages: vec![],
            about: "50 ms RTT, 1% loss each way, 100 Mbit/s, 100 ms queue",
        },
        Profile {
            name: "intercontinental",
            path: PathConfig::delay(ms(75))
                .with_bottleneck(20 * MBIT, ms(200))
                .with_loss(0.002),
            outages: vec![],
            about: "150 ms RTT, 0.2% loss each way, 20 Mbit/s, 200 ms queue",
        },
        Profile {
            name: "bloated-dsl",
            path: PathConfig::delay(ms(10)).with_bottleneck(10 * MBIT, ms(500)),
            outages: vec![],
            about: "20 ms RTT, no loss, 10 Mbit/s, 500 ms queue",
        },
        Profile {
            name: "reordering",
            path: reordering,
            outages: vec![],
            about: "30 ms RTT, 100 Mbit/s, 1% of packets 10 ms late",
        },
        Profile {
            name: "outage",
            path: broadband,
            outages: vec![Duration::from_secs(8), Duration::from_secs(30)],
            about: "broadband, with outages of 8 s and 30 s mid-transfer",
        },
        Profile {
            name: "relay-only",
            path: relay,
            outages: vec![],
            about: "broadband with UDP blocked: Tox must use the TCP relay",
        },
    ]
}

/// The profile named `name`.
pub fn by_name(name: &str) -> Option<Profile> {
    all().into_iter().find(|p| p.name == name)
}
