//! `toxtun bootstrap`: a Tox bootstrap node (DHT and TCP relay) for private networks and
//! tests.

use toxtun_transport_tox::{ToxConfig, ToxOptions, ToxTransport};

use crate::Fail;

/// Runs the node until Ctrl-C, after printing the `--bootstrap` line that reaches it.
pub(crate) async fn run(
    port: u16,
    tcp_port: u16,
    lan_discovery: bool,
    public_host: &str,
) -> Result<(), Fail> {
    let t = ToxTransport::start(ToxConfig::new(
        ToxOptions {
            local_discovery: lan_discovery,
            start_port: port,
            end_port: port,
            tcp_port,
            ..ToxOptions::default()
        },
        vec![],
    ))?;
    let node = t
        .as_bootstrap_node(public_host)
        .ok_or_else(|| Fail("UDP is not bound".into()))?;
    println!("{node}");
    eprintln!(
        "toxtun: bootstrap node running (UDP {port}, TCP relay {}); use --bootstrap {node}",
        if tcp_port == 0 {
            "off".to_string()
        } else {
            tcp_port.to_string()
        }
    );
    let sig = super::StopSignals::new().recv().await;
    eprintln!("toxtun: {sig}: bootstrap node stopping");
    drop(t);
    Ok(())
}
