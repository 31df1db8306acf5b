//! The core and the mock transport care about no runtime: the same driver moves an echo
//! through a client and a server under smol and under tokio.

use std::time::{Duration, Instant};

use bytes::Bytes;
use toxtun_proto::{ClientRule, Endpoint, EndpointConfig, ServerPolicy, TargetRules, Transport};
use toxtun_tests::echo::{run, Role, Sleep};
use toxtun_transport_mock::{MockTransport, Network, RealtimeNetwork};

const PAYLOAD: usize = 1 << 20;

fn payload() -> Bytes {
    (0..PAYLOAD).map(|i| (i * 31 % 251) as u8).collect()
}

struct Setup {
    _net: RealtimeNetwork,
    client: (Endpoint, MockTransport, Role),
    server: (Endpoint, MockTransport),
}

fn setup(seed: u64) -> Setup {
    #[allow(clippy::disallowed_methods)]
    let net = RealtimeNetwork::start(Network::new(seed, Instant::now()));
    let (c, s) = net.with(|n| (n.add_node(), n.add_node()));
    let (tc, ts) = (net.transport(c), net.transport(s));
    let (cid, sid) = (tc.id(), ts.id());
    let mut scfg = EndpointConfig::new(sid.public_key);
    scfg.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: cid.public_key,
            targets: TargetRules::new(vec!["127.0.0.1:7".parse().unwrap()]),
        }],
        ..Default::default()
    });
    let client = Endpoint::new(EndpointConfig::new(cid.public_key), [1; 32]).unwrap();
    let server = Endpoint::new(scfg, [2; 32]).unwrap();
    let role = Role::Client {
        server: sid,
        target: "127.0.0.1:7".parse().unwrap(),
        payload: payload(),
    };
    Setup {
        _net: net,
        client: (client, tc, role),
        server: (server, ts),
    }
}

#[test]
fn echo_under_smol() {
    let sleep: Sleep = |t| {
        Box::pin(async move {
            smol::Timer::at(t).await;
        })
    };
    let s = setup(1);
    let (ce, ct, role) = s.client;
    let (se, st) = s.server;
    let (echo, served) = smol::block_on(async {
        let server = smol::spawn(run(se, st, Role::Server, sleep));
        let client = smol::spawn(run(ce, ct, role, sleep));
        let deadline = smol::Timer::after(Duration::from_secs(60));
        futures_lite::future::or(async { (client.await, server.await) }, async {
            deadline.await;
            (Err("timed out".into()), Err("timed out".into()))
        })
        .await
    });
    assert_eq!(echo.unwrap(), payload());
    assert_eq!(served.unwrap(), payload());
}

#[test]
fn echo_under_tokio() {
    let sleep: Sleep = |t| Box::pin(tokio::time::sleep_until(t.into()));
    let s = setup(2);
    let (ce, ct, role) = s.client;
    let (se, st) = s.server;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (echo, served) = rt.block_on(async {
        let server = tokio::spawn(run(se, st, Role::Server, sleep));
        let client = tokio::spawn(run(ce, ct, role, sleep));
        tokio::time::timeout(Duration::from_secs(60), async {
            (client.await.unwrap(), server.await.unwrap())
        })
        .await
        .expect("echo finished in time")
    });
    assert_eq!(echo.unwrap(), payload());
    assert_eq!(served.unwrap(), payload());
}
