//! ssh and scp through `toxtun pipe` as ProxyCommand, the way people use toxtun most:
//! to an sshd of the test's own, through a server on loopback over real Tox (our own
//! bootstrap node, LAN discovery off). Pipes after the first attach to the background
//! agent the first one started.

use std::path::Path;
use std::process::Stdio;

mod common;
use common::*;

fn proxy_command(cdir: &Path, secret: &Path, boot: &str, server_id: &str) -> String {
    format!(
        "'{exe}' --data-dir '{dir}' pipe --persist 60s --secret-file '{secret}' \
         --lan-discovery false --bootstrap {boot} {server_id} %h:%p",
        exe = env!("CARGO_BIN_EXE_toxtun"),
        dir = cdir.display(),
        secret = secret.display(),
    )
}

#[test]
fn ssh_and_scp_go_through_toxtun_pipe_and_later_sessions_share_its_agent() {
    let (_boot, boot) = bootstrap();
    let work = tmp("ssh");
    let sshd = Sshd::start(&work);
    let sdir = tmp("ssh-serve");
    let cdir = tmp("ssh-client");
    let (_server, server_id) = serve(&sdir, sshd.port, &boot);
    let secret = work.join("secret");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&secret)
            .unwrap();
        f.write_all(b"a shared test secret").unwrap();
    }
    let _agent = StopOnDrop(cdir.clone());
    let proxy = proxy_command(&cdir, &secret, &boot, &server_id);
    let login = format!("{}@127.0.0.1", sshd.user);

    // The first session starts the agent; the second attaches to it.
    for word in ["first", "second"] {
        let o = sshd
            .command("ssh", Some(&proxy))
            .arg(&login)
            .arg(format!("echo {word} session over tox"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "ssh failed: {}", stderr(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("{word} session over tox\n")
        );
        // ProxyCommand writes into the user's terminal: nothing, when all is well.
        assert_eq!(stderr(&o), "", "ssh's terminal got toxtun's output");
    }
    let log = std::fs::read_to_string(cdir.join("agent.log")).unwrap();
    assert_eq!(log.matches("agent for").count(), 1, "one agent: {log}");

    // scp of a file, byte for byte.
    let src = work.join("payload");
    let body: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&src, &body).unwrap();
    let dst = work.join("copy");
    let o = sshd
        .command("scp", Some(&proxy))
        .arg(format!("{login}:{}", src.display()))
        .arg(&dst)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "scp failed: {}", stderr(&o));
    assert!(
        std::fs::read(&dst).unwrap() == body,
        "scp copied the file byte for byte"
    );

    // Twenty sessions at once through the one agent.
    let sessions: Vec<_> = (0..20)
        .map(|i| {
            sshd.command("ssh", Some(&proxy))
                .arg(&login)
                .arg(format!("echo session {i}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, s) in sessions.into_iter().enumerate() {
        let o = s.wait_with_output().unwrap();
        assert!(o.status.success(), "session {i}: {}", stderr(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), format!("session {i}\n"));
    }
}
