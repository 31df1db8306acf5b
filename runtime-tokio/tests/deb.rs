//! The Debian package as `scripts/build-deb` makes it (here from the test build's binary):
//! what it holds, what it depends on, and that what it installs runs.

use std::path::Path;
use std::process::Command;

mod common;
use common::*;

fn dpkg_deb(args: &[&str]) -> String {
    let o = Command::new("dpkg-deb").args(args).output().unwrap();
    assert!(o.status.success(), "dpkg-deb {args:?}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_deb_holds_the_binary_unit_config_pages_and_completions_and_runs() {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        eprintln!("skipped: no dpkg-deb (not Debian)");
        return;
    }
    let out = tmp("deb");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-deb");
    let o = Command::new(&script)
        .arg(&out)
        .env("TOXTUN_BIN", env!("CARGO_BIN_EXE_toxtun"))
        .output()
        .unwrap();
    assert!(o.status.success(), "build-deb: {}", stderr(&o));
    let deb = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(deb.ends_with(".deb") && Path::new(&deb).exists(), "{deb}");

    let listing = dpkg_deb(&["-c", &deb]);
    for path in [
        "./usr/bin/toxtun",
        "./lib/systemd/system/toxtun-server.service",
        "./etc/toxtun/server.toml",
        "./usr/share/man/man1/toxtun.1.gz",
        "./usr/share/man/man1/toxtun-serve.1.gz",
        "./usr/share/man/man1/toxtun-pipe.1.gz",
        "./usr/share/man/man5/toxtun.toml.5.gz",
        "./usr/share/bash-completion/completions/toxtun",
        "./usr/share/zsh/vendor-completions/_toxtun",
        "./usr/share/fish/vendor_completions.d/toxtun.fish",
        "./usr/share/doc/toxtun/copyright",
    ] {
        assert!(
            listing.contains(path),
            "{path} not in the package:\n{listing}"
        );
    }
    let depends = dpkg_deb(&["-f", &deb, "Depends"]);
    assert!(depends.contains("libtoxcore2"), "Depends: {depends}");
    // An edited config survives upgrades.
    let conffiles = dpkg_deb(&["-I", &deb, "conffiles"]);
    assert_eq!(conffiles.trim(), "/etc/toxtun/server.toml");

    // Installed in a scratch root: the binary runs, the config parses, the unit starts
    // the binary the package installs, sandboxed.
    let root = tmp("deb-root");
    dpkg_deb(&["-x", &deb, root.to_str().unwrap()]);
    let v = Command::new(root.join("usr/bin/toxtun"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")));
    toxtun_tokio::config::ServerConfig::load(&root.join("etc/toxtun/server.toml"))
        .expect("the packaged example config is valid");
    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/toxtun-server.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/toxtun serve --config /etc/toxtun/server.toml"),
        "{unit}"
    );
    for hardening in [
        "DynamicUser=yes",
        "StateDirectory=toxtun",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(hardening), "{hardening} missing:\n{unit}");
    }
    // Where systemd itself is installed, it checks the unit too.
    if Path::new("/lib/systemd/system/sysinit.target").exists() {
        let o = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(root.join("lib/systemd/system/toxtun-server.service"))
            .output()
            .unwrap();
        let err = stderr(&o);
        // Only the binary's path is foreign to this machine (it is in the scratch root).
        let real: Vec<&str> = err
            .lines()
            .filter(|l| !l.contains("/usr/bin/toxtun"))
            .collect();
        assert!(real.is_empty(), "systemd-analyze verify: {err}");
    } else {
        eprintln!("systemd-analyze verify skipped: no systemd units on this machine");
    }
}
