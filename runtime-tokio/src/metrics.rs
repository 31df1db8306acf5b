//! Prometheus metrics of a running node (`[metrics] listen` in the server's config): an
//! HTTP endpoint that answers `GET /metrics` with the node's status in the OpenMetrics
//! text format, which Prometheus scrapes. Each scrape asks the node for its status and
//! encodes it afresh, so nothing is kept here between scrapes and nothing can drift.
//!
//! Per peer (label `peer`, the client's key): online, direct path, session, fast path,
//! round trip, congestion window, bytes each way, losses, resends, open streams. Per
//! process: the Tox connection, sessions, and streams, sessions and friend requests by
//! outcome and code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::node::{Node, NodeStatus, PeerStatus};

/// Scrapes served at once; more wait for a slot.
const MAX_CONNECTIONS: usize = 16;
/// How long a scraper may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The OpenMetrics content type, which Prometheus prefers.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// A metrics endpoint serving in the background; it stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::AbortHandle,
}

impl MetricsServer {
    /// Binds `addr` (a clear error if it cannot: the port is taken, the address is not
    /// this machine's) and serves `node`'s metrics there.
    pub async fn start(addr: SocketAddr, node: Node) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of descriptors, most likely: let some close.
                        tracing::warn!("metrics: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let node = node.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let node = node.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&node, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                    drop(permit);
                });
            }
        });
        Ok(MetricsServer {
            addr,
            task: task.abort_handle(),
        })
    }

    /// Where it listens (with the port the system chose, if `:0` was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer<B>(node: &Node, req: Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, kind)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    let text = "text/plain; charset=utf-8";
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            text,
            "not found: try /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, text, "GET only\n".into());
    }
    match node.status().await {
        Ok(status) => reply(StatusCode::OK, CONTENT_TYPE, render(&status)),
        Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, text, format!("{e}\n")),
    }
}

/// The status in the OpenMetrics text format.
pub fn render(status: &NodeStatus) -> String {
    let mut reg = Registry::with_prefix("toxtun");
    process_metrics(&mut reg, status);
    peer_metrics(&mut reg, status);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: f64) {
    let g = FloatGauge::default();
    g.set(v);
    reg.register(name, help, g);
}

/// A counter family labelled `code`, from a map of code → count.
fn by_code(
    reg: &mut Registry,
    name: &str,
    help: &str,
    counts: &std::collections::BTreeMap<u16, u64>,
) {
    let f = Family::<Labels, Counter>::default();
    for (code, n) in counts {
        f.get_or_create(&vec![("code".to_string(), code.to_string())])
            .inc_by(*n);
    }
    reg.register(name, help, f);
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

fn process_metrics(reg: &mut Registry, s: &NodeStatus) {
    let c = &s.counters;
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    gauge(
        reg,
        "tox_connected",
        "Whether the node is connected to the Tox network (DHT or TCP relay)",
        flag(s.tox_connected),
    );
    let live = s
        .peers
        .iter()
        .filter(|p| p.session.as_ref().is_some_and(|s| s.established))
        .count();
    gauge(reg, "sessions", "Sessions established now", live as f64);
    let open: usize = s.peers.iter().map(|p| p.streams.len()).sum();
    gauge(reg, "streams", "Streams open now", open as f64);
    counter(
        reg,
        "sessions_established",
        "Sessions that completed their handshake",
        c.sessions_established,
    );
    by_code(
        reg,
        "sessions_ended",
        "Sessions ended, by session code",
        &c.sessions_ended,
    );
    counter(reg, "streams_opened", "Streams opened", c.streams_opened);
    counter(reg, "flows_opened", "UDP flows opened", c.flows_opened);
    by_code(
        reg,
        "flows_refused",
        "UDP flows refused, by stream code (2001 not allowed, 2020 too many, ...)",
        &c.flows_refused,
    );
    counter(
        reg,
        "udp_dropped",
        "UDP datagrams dropped outside sessions: input queue or socket buffer full",
        c.udp_dropped,
    );
    by_code(
        reg,
        "streams_refused",
        "Streams refused, by stream code (2001 not allowed, 2002 target refused, ...)",
        &c.streams_refused,
    );
    by_code(
        reg,
        "streams_reset",
        "Open streams reset, by stream code",
        &c.streams_reset,
    );
    counter(
        reg,
        "friend_requests_accepted",
        "Friend requests the policy accepted",
        c.friend_requests_accepted,
    );
    by_code(
        reg,
        "friend_requests_refused",
        "Friend requests the policy refused, by session code",
        &c.friend_requests_refused,
    );
}

/// The per-peer gauges: name, help, unit.
const PEER_GAUGES: [(&str, &str, Option<Unit>); 11] = [
    (
        "peer_online",
        "Whether the Tox link to the peer is up",
        None,
    ),
    (
        "peer_direct",
        "Whether the link is direct UDP (0: a TCP relay, or down)",
        None,
    ),
    (
        "peer_session_established",
        "Whether a session with the peer is established",
        None,
    ),
    (
        "peer_fast_path",
        "Whether stream bytes take the fast path now",
        None,
    ),
    (
        "peer_rtt",
        "Smoothed round trip to the peer",
        Some(Unit::Seconds),
    ),
    (
        "peer_min_rtt",
        "Smallest round trip measured",
        Some(Unit::Seconds),
    ),
    (
        "peer_congestion_window",
        "Congestion window",
        Some(Unit::Bytes),
    ),
    (
        "peer_in_flight",
        "Bytes in flight on the fast path",
        Some(Unit::Bytes),
    ),
    (
        "peer_pacing_rate_bytes_per_second",
        "The fast path's pacing rate",
        None,
    ),
    ("peer_open_streams", "Streams open with the peer", None),
    (
        "peer_listeners",
        "-R listeners listening for or on the peer",
        None,
    ),
];

/// The per-peer counters (of the current session): name, help.
const PEER_COUNTERS: [(&str, &str); 8] = [
    (
        "peer_sent_bytes",
        "Stream bytes sent in the current session",
    ),
    (
        "peer_received_bytes",
        "Stream bytes received in the current session",
    ),
    ("peer_resent_bytes", "Stream bytes sent again after a loss"),
    ("peer_lost_packets", "Fast-path packets declared lost"),
    ("peer_frames_resent", "Frames resent after link outages"),
    (
        "peer_datagrams_sent",
        "UDP datagrams sent in the current session",
    ),
    (
        "peer_datagrams_received",
        "UDP datagrams delivered in the current session",
    ),
    (
        "peer_datagrams_dropped",
        "UDP datagrams dropped before sending: the session's queue was full",
    ),
];

/// One peer's values, in the order of [`PEER_GAUGES`] (`None`: not known, left out) and
/// of [`PEER_COUNTERS`] (`None` without a session).
fn peer_values(p: &PeerStatus) -> ([Option<f64>; 11], Option<[u64; 8]>) {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let sess = p.session.as_ref();
    let gauges = [
        Some(flag(p.online)),
        Some(flag(p.online && p.direct)),
        Some(flag(sess.is_some_and(|s| s.established))),
        Some(flag(sess.is_some_and(|s| s.fast_path))),
        sess.and_then(|s| s.rtt_ms).map(|ms| ms / 1000.0),
        sess.and_then(|s| s.min_rtt_ms).map(|ms| ms / 1000.0),
        sess.map(|s| s.congestion_window as f64),
        sess.map(|s| s.bytes_in_flight as f64),
        sess.and_then(|s| s.pacing_rate).map(|r| r as f64),
        Some(p.streams.len() as f64),
        Some(
            p.listeners
                .iter()
                .filter(|l| l.state == "listening")
                .count() as f64,
        ),
    ];
    let counters = sess.map(|s| {
        [
            s.bytes_sent,
            s.bytes_received,
            s.bytes_resent,
            s.packets_lost,
            s.frames_resent,
            s.datagrams_sent,
            s.datagrams_received,
            s.datagrams_dropped,
        ]
    });
    (gauges, counters)
}

fn peer_metrics(reg: &mut Registry, s: &NodeStatus) {
    let gf: Vec<Family<Labels, FloatGauge>> =
        PEER_GAUGES.iter().map(|_| Family::default()).collect();
    let cf: Vec<Family<Labels, Counter>> =
        PEER_COUNTERS.iter().map(|_| Family::default()).collect();
    for p in &s.peers {
        let l = vec![("peer".to_string(), p.key.clone())];
        let (gauges, counters) = peer_values(p);
        for (f, v) in gf.iter().zip(gauges) {
            if let Some(v) = v {
                f.get_or_create(&l).set(v);
            }
        }
        for (f, v) in cf.iter().zip(counters.into_iter().flatten()) {
            f.get_or_create(&l).inc_by(v);
        }
    }
    for ((name, help, unit), f) in PEER_GAUGES.into_iter().zip(gf) {
        match unit {
            Some(u) => reg.register_with_unit(name, help, u, f),
            None => reg.register(name, help, f),
        }
    }
    for ((name, help), f) in PEER_COUNTERS.into_iter().zip(cf) {
        reg.register(name, help, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Counters, SessionReport};

    #[test]
    fn render_names_each_peer_and_code() {
        let counters = Counters {
            streams_opened: 3,
            streams_refused: [(2001, 2)].into(),
            ..Counters::default()
        };
        let status = NodeStatus {
            id: "id".into(),
            tox_connected: true,
            counters,
            peers: vec![PeerStatus {
                key: "AB".repeat(32),
                online: true,
                direct: true,
                session: Some(SessionReport {
                    established: true,
                    suspended: false,
                    fast_path: true,
                    fast_path_negotiated: true,
                    rtt_ms: Some(50.0),
                    min_rtt_ms: Some(49.0),
                    congestion_window: 1000,
                    bytes_in_flight: 10,
                    pacing_rate: Some(2_500_000),
                    bytes_sent: 12345,
                    bytes_received: 678,
                    packets_lost: 1,
                    bytes_resent: 2,
                    frames_resent: 0,
                    ..SessionReport::default()
                }),
                streams: vec![],
                listeners: vec![],
            }],
        };
        let text = render(&status);
        let peer = "AB".repeat(32);
        for line in [
            "toxtun_tox_connected 1.0".to_string(),
            "toxtun_streams_opened_total 3".into(),
            "toxtun_streams_refused_total{code=\"2001\"} 2".into(),
            format!("toxtun_peer_rtt_seconds{{peer=\"{peer}\"}} 0.05"),
            format!("toxtun_peer_sent_bytes_total{{peer=\"{peer}\"}} 12345"),
            format!("toxtun_peer_direct{{peer=\"{peer}\"}} 1.0"),
            format!("toxtun_peer_congestion_window_bytes{{peer=\"{peer}\"}} 1000.0"),
            format!("toxtun_peer_pacing_rate_bytes_per_second{{peer=\"{peer}\"}} 2500000.0"),
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
