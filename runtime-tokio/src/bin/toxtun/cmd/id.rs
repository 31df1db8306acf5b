//! `toxtun id`: create on first use, or show, this machine's Tox identity.

use toxtun_transport_tox::{ToxConfig, ToxOptions, ToxTransport};

use super::data_dir;
use crate::cli::Cli;
use crate::Fail;

/// Prints the server identity's Tox ID (with a QR code unless `no_qr`), or with `client`
/// the client identity's public key.
pub(crate) fn run(cli: &Cli, no_qr: bool, client: bool) -> Result<(), Fail> {
    let dir = data_dir(&cli.data_dir)?;
    let file = if client { "client.tox" } else { "server.tox" };
    let mut cfg = ToxConfig::new(
        ToxOptions {
            udp: false,
            local_discovery: false,
            ..ToxOptions::default()
        },
        vec![],
    );
    cfg.identity = Some(dir.join(file));
    let t = ToxTransport::start(cfg)?;
    let id = toxtun_proto::Transport::id(&t);
    if client {
        // A client is named by its public key: the nospam and checksum of a Tox ID
        // only matter to those who send it friend requests.
        println!("{}", id.public_key);
        eprintln!(
            "(client identity in {}; a server admits it with [[client]] key = \"{}\")",
            dir.join(file).display(),
            id.public_key
        );
        return Ok(());
    }
    println!("{id}");
    eprintln!("(identity in {})", dir.join(file).display());
    if !no_qr {
        if let Ok(code) = qrcode::QrCode::new(id.to_string()) {
            let s = code
                .render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build();
            eprintln!("{s}");
        }
    }
    Ok(())
}
