//! The control socket over the mock transport: pipes attached to a running client node,
//! `status`, `stop`, and every refusal with its code.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use toxtun_proto::{
    ClientRule, Endpoint, EndpointConfig, ListenRules, PeerId, ServerPolicy, TargetRules, ToxId,
    Transport,
};
use toxtun_tokio::control::{
    ask, attach, credential, hold, Attach, Attached, ControlHandle, ControlServer, Reply, Request,
    Role,
};
use toxtun_tokio::{Node, NodeOptions};
use toxtun_transport_mock::{Network, RealtimeNetwork};

struct Setup {
    _net: RealtimeNetwork,
    dir: PathBuf,
    handle: ControlHandle,
    server_id: ToxId,
    _server: Node,
    echo_port: u16,
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("toxtun-ctl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

/// A server admitting the client to an echo port, and the client node serving its
/// control socket in a fresh directory, as `toxtun agent` does.
async fn setup(name: &str, attach_secret: Option<&str>) -> Setup {
    #[allow(clippy::disallowed_methods)]
    let net = RealtimeNetwork::start(Network::new(11, Instant::now()));
    let (c, s) = net.with(|n| (n.add_node(), n.add_node()));
    let tc = net.transport(c);
    let ts = net.transport(s);
    let cid = tc.id();
    let server_id = ts.id();
    let echo_port = echo_server().await;
    let mut scfg = EndpointConfig::new(server_id.public_key);
    scfg.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: cid.public_key,
            targets: TargetRules::new(vec![format!("127.0.0.1:{echo_port}").parse().unwrap()])
                .with_udp(vec!["127.0.0.1:1024-65535".parse().unwrap()]),
        }],
        listen: ListenRules {
            clients: vec![(
                cid.public_key,
                TargetRules::new(vec!["127.0.0.1:1024-65535".parse().unwrap()]),
            )],
            ..Default::default()
        },
        ..Default::default()
    });
    let (server, _) = Node::spawn(
        Endpoint::new(scfg, [2; 32]).unwrap(),
        ts,
        NodeOptions {
            serve: true,
            ..Default::default()
        },
    );
    let (client, _) = Node::spawn(
        Endpoint::new(EndpointConfig::new(cid.public_key), [1; 32]).unwrap(),
        tc,
        NodeOptions::default(),
    );
    let dir = tmp(name);
    let secret = attach_secret.map(|s| toxtun_proto::SharedSecret::new(s).unwrap());
    let handle = ControlServer::bind(&dir, Role::Client).unwrap().serve(
        client,
        Some(Attach {
            credential: credential(secret.as_ref()),
            friend_request: Box::new(|_| b"toxtun/1".to_vec()),
        }),
        [],
    );
    Setup {
        _net: net,
        dir,
        handle,
        server_id,
        _server: server,
        echo_port,
    }
}

fn open(s: &Setup, port: u16, credential: Option<String>) -> Request {
    Request::Open {
        server: s.server_id.to_string(),
        target: format!("127.0.0.1:{port}"),
        credential,
        wait_accepted: false,
    }
}

#[tokio::test]
async fn an_attached_pipe_carries_its_bytes_and_ends_cleanly() {
    let s = setup("echo", None).await;
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let mut output = Vec::new();
    let r = attach(
        &s.dir,
        open(&s, s.echo_port, None),
        std::io::Cursor::new(input.clone()),
        &mut output,
    )
    .await
    .unwrap();
    assert_eq!(r, Attached::Ended(0), "a clean end");
    assert_eq!(output, input, "the echo came back byte for byte");
    // A second one on the same session, as a second ssh would.
    let mut again = Vec::new();
    let r = attach(
        &s.dir,
        open(&s, s.echo_port, None),
        &b"again"[..],
        &mut again,
    )
    .await
    .unwrap();
    assert_eq!((r, again.as_slice()), (Attached::Ended(0), &b"again"[..]));
}

#[tokio::test]
async fn a_refused_target_ends_the_attached_pipe_with_its_code() {
    let s = setup("refused", None).await;
    let mut out = Vec::new();
    let r = attach(&s.dir, open(&s, 9, None), &b"x"[..], &mut out)
        .await
        .unwrap();
    assert_eq!(r, Attached::Ended(2001), "target not allowed");
}

#[tokio::test]
async fn status_shows_the_session_and_the_open_stream() {
    let s = setup("status", None).await;
    // A stream held open: its input never ends while the status is asked.
    let (mut keep, input) = tokio::io::duplex(1024);
    let dir = s.dir.clone();
    let req = open(&s, s.echo_port, None);
    let pipe = tokio::spawn(async move {
        let mut out = Vec::new();
        let r = attach(&dir, req, input, &mut out).await;
        (r, out)
    });
    keep.write_all(b"ping").await.unwrap();
    let target = format!("127.0.0.1:{}", s.echo_port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let Some(Reply::Status { pid, status }) =
            ask(&s.dir, Role::Client, &Request::Status).await.unwrap()
        else {
            panic!("a status reply");
        };
        assert_eq!(pid, std::process::id());
        let peer = status
            .peers
            .iter()
            .find(|p| p.key == s.server_id.public_key.to_string());
        if peer.is_some_and(|p| {
            p.streams.iter().any(|st| st.target == target)
                && p.session.as_ref().is_some_and(|s| s.established)
        }) {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let peer = &status.peers[0];
    let session = peer.session.as_ref().expect("a session");
    assert!(session.established && !session.suspended, "{session:?}");
    assert!(!peer.streams[0].incoming);
    assert!(peer.streams[0].age_secs < 20.0);
    // The JSON form is what `toxtun status --json` prints; it reads back the same.
    let json = serde_json::to_string(&status).unwrap();
    assert_eq!(
        serde_json::from_str::<toxtun_tokio::NodeStatus>(&json).unwrap(),
        status
    );
    assert!(status.render().contains(&target));
    drop(keep);
    let (r, out) = pipe.await.unwrap();
    assert_eq!(
        (r.unwrap(), out.as_slice()),
        (Attached::Ended(0), &b"ping"[..])
    );
}

#[tokio::test]
async fn refusals_have_codes_and_never_stop_the_holder() {
    let s = setup("refusals", Some("the agent's secret")).await;
    let other = toxtun_proto::SharedSecret::new("another secret").unwrap();
    let mut out = Vec::new();
    // Another secret than the holder's: it says so rather than failing at the server.
    let r = attach(
        &s.dir,
        open(&s, s.echo_port, credential(Some(&other))),
        &b""[..],
        &mut out,
    )
    .await
    .unwrap();
    assert!(
        matches!(&r, Attached::Refused { code: 3005, message } if message.contains("toxtun stop")),
        "{r:?}"
    );
    // A bad server ID or target.
    let bad = Request::Open {
        server: "1234".into(),
        target: "127.0.0.1:1".into(),
        credential: credential(Some(
            &toxtun_proto::SharedSecret::new("the agent's secret").unwrap(),
        )),
        wait_accepted: false,
    };
    let r = attach(&s.dir, bad, &b""[..], &mut out).await.unwrap();
    assert!(matches!(r, Attached::Refused { code: 3006, .. }), "{r:?}");
    // Garbage, an unknown op, an endless line: each answered with its code.
    for (raw, code) in [
        (&b"not json\n"[..], 3001),
        (&b"{\"op\":\"format_disk\"}\n"[..], 3001),
        (&[b'x'; 9000][..], 3002),
    ] {
        let mut sock = UnixStream::connect(Role::Client.socket_path(&s.dir))
            .await
            .unwrap();
        sock.write_all(raw).await.unwrap();
        let mut reply = String::new();
        sock.read_to_string(&mut reply).await.unwrap();
        assert!(reply.contains(&format!("\"code\":{code}")), "{reply}");
    }
    // Still serving.
    assert!(matches!(
        ask(&s.dir, Role::Client, &Request::Status).await.unwrap(),
        Some(Reply::Status { .. })
    ));
}

#[tokio::test]
async fn a_server_refuses_to_open_streams_and_no_holder_is_no_holder() {
    let s = setup("server-role", None).await;
    let dir = tmp("server-role-srv");
    #[allow(clippy::disallowed_methods)]
    let net = RealtimeNetwork::start(Network::new(3, Instant::now()));
    let t = net.transport(net.with(|n| n.add_node()));
    let pk = t.id().public_key;
    let (node, _) = Node::spawn(
        Endpoint::new(EndpointConfig::new(pk), [5; 32]).unwrap(),
        t,
        NodeOptions::default(),
    );
    let _handle = ControlServer::bind(&dir, Role::Server).unwrap().serve(
        node,
        None,
        std::iter::empty::<PeerId>(),
    );
    let req = open(&s, s.echo_port, None);
    let reply = ask(&dir, Role::Server, &req).await.unwrap();
    assert!(
        matches!(reply, Some(Reply::Error { code: 3004, .. })),
        "{reply:?}"
    );
    // No client process in that directory: nothing to attach to.
    let r = attach(&dir, req, &b""[..], Vec::new()).await.unwrap();
    assert_eq!(r, Attached::NoHolder);
}

#[tokio::test]
async fn stop_is_heard_and_idleness_counts_from_the_last_pipe() {
    let s = setup("stop", None).await;
    // Idle from the start: a short linger passes.
    tokio::time::timeout(
        Duration::from_secs(5),
        s.handle.idle_for(Duration::from_millis(50)),
    )
    .await
    .expect("idle with no pipe attached");
    // While a pipe is attached, no linger passes.
    let (keep, input) = tokio::io::duplex(1024);
    let dir = s.dir.clone();
    let req = open(&s, s.echo_port, None);
    let pipe = tokio::spawn(async move { attach(&dir, req, input, Vec::new()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::time::timeout(
            Duration::from_millis(500),
            s.handle.idle_for(Duration::from_millis(50))
        )
        .await
        .is_err(),
        "a pipe is attached"
    );
    drop(keep);
    assert_eq!(pipe.await.unwrap().unwrap(), Attached::Ended(0));
    tokio::time::timeout(
        Duration::from_secs(5),
        s.handle.idle_for(Duration::from_millis(50)),
    )
    .await
    .expect("idle again once the pipe ended");
    let reply = ask(&s.dir, Role::Client, &Request::Stop).await.unwrap();
    assert_eq!(
        reply,
        Some(Reply::Stopping {
            pid: std::process::id()
        })
    );
    tokio::time::timeout(Duration::from_secs(5), s.handle.stopped())
        .await
        .expect("the stop request was heard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_is_refused_even_through_an_open_socket() {
    // The socket is mode 0600; the peer's uid is checked as well, for a socket whose mode
    // was widened or a directory shared by mistake. Needs root to act as another user.
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to connect as another user");
        return;
    }
    let s = setup("other-user", None).await;
    let sock = Role::Client.socket_path(&s.dir);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let dir = s.dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_toxtun"))
            .arg("--data-dir")
            .arg(&dir)
            .arg("status")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("uid 65534") && err.contains("3003"), "{err}");
    // The owner still gets its answer.
    assert!(matches!(
        ask(&s.dir, Role::Client, &Request::Status).await.unwrap(),
        Some(Reply::Status { .. })
    ));
}

/// One echo round trip through `port` on loopback, if something answers there.
async fn echoes(port: u16) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut back = [0u8; 4];
    s.write_all(b"ping").await.is_ok()
        && tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .is_ok_and(|r| r.is_ok())
        && &back == b"ping"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_reverse_forward_listens_while_the_hold_lasts() {
    let s = setup("reverse", None).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reverse = vec![(
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{}", s.echo_port),
    )];
    let held = hold(&s.dir, s.server_id.to_string(), None, (reverse, vec![]))
        .await
        .unwrap()
        .expect("the holder answers")
        .expect("held");
    // The server listens on `port`; a connection there reaches the client's echo target.
    let end = Instant::now() + Duration::from_secs(20);
    while !echoes(port).await {
        assert!(Instant::now() < end, "the server never listened on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The hold ends: the server stops listening.
    drop(held);
    let end = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < end,
            "still listening on {port} after the hold ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_udp_forward_carries_datagrams_while_the_hold_lasts() {
    let s = setup("udp", None).await;
    // A UDP echo server on the server's side.
    let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_at = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let udp = vec![(format!("127.0.0.1:{port}"), echo_at.to_string())];
    let held = hold(&s.dir, s.server_id.to_string(), None, (vec![], udp))
        .await
        .unwrap()
        .expect("the holder answers")
        .expect("held");
    // The holder bound `port`: a datagram there comes back from the server's echo.
    let me = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 64];
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        me.send_to(b"ping", ("127.0.0.1", port)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_millis(500), me.recv_from(&mut buf)).await;
        if let Ok(Ok((n, _))) = got {
            assert_eq!(&buf[..n], b"ping");
            break;
        }
        assert!(Instant::now() < end, "no echo through the held -U");
    }
    // The hold ends: the holder closes the port.
    drop(held);
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < end,
            "still bound to {port} after the hold ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
