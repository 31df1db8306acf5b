//! `toxtun status`, `toxtun stop` and `toxtun reload`: asking the running processes of a data directory
//! (the client identity's holder and the server's) over their control sockets.

use std::time::Duration;

use toxtun_tokio::control::{ask, Reply, Request, Role};

use super::data_dir;
use crate::cli::Cli;
use crate::Fail;

const ROLES: [Role; 2] = [Role::Client, Role::Server];

/// Prints each running process's peers, links, sessions and streams (`--json`: one JSON
/// object per process).
pub(crate) async fn status(cli: &Cli) -> Result<(), Fail> {
    let dir = data_dir(&cli.data_dir)?;
    let mut found = false;
    for role in ROLES {
        match ask(&dir, role, &Request::Status).await? {
            None => continue,
            Some(Reply::Status { pid, status }) => {
                if cli.json {
                    let v =
                        serde_json::json!({"role": role.to_string(), "pid": pid, "status": status});
                    println!("{v}");
                } else {
                    if found {
                        println!();
                    }
                    println!("{role} (pid {pid})\n{}", status.render());
                }
                found = true;
            }
            Some(Reply::Error { message, .. }) => return Err(Fail(message)),
            Some(other) => return Err(Fail(format!("unexpected reply {other:?}"))),
        }
    }
    if found {
        Ok(())
    } else {
        Err(Fail(format!(
            "no toxtun process runs for {} (none listens on its control sockets)",
            dir.display()
        )))
    }
}

/// Asks each running process to stop, and waits until it is gone.
pub(crate) async fn stop(cli: &Cli) -> Result<(), Fail> {
    let dir = data_dir(&cli.data_dir)?;
    let mut stopped = Vec::new();
    for role in ROLES {
        match ask(&dir, role, &Request::Stop).await? {
            None => continue,
            Some(Reply::Stopping { pid }) => {
                eprintln!("toxtun: stopping the {role} (pid {pid})");
                stopped.push(role);
            }
            Some(Reply::Error { message, .. }) => return Err(Fail(message)),
            Some(other) => return Err(Fail(format!("unexpected reply {other:?}"))),
        }
    }
    if stopped.is_empty() {
        return Err(Fail(format!(
            "no toxtun process runs for {}",
            dir.display()
        )));
    }
    // Gone once nothing answers on its socket (it closes its sessions first).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for role in stopped {
        let path = role.socket_path(&dir);
        while tokio::net::UnixStream::connect(&path).await.is_ok() {
            if tokio::time::Instant::now() > deadline {
                return Err(Fail(format!("the {role} has not stopped within 10 s")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Asks the running server to reread its configuration; prints what changed (`--json`:
/// the report as one JSON object).
pub(crate) async fn reload(cli: &Cli) -> Result<(), Fail> {
    let dir = data_dir(&cli.data_dir)?;
    match ask(&dir, Role::Server, &Request::Reload).await? {
        None => Err(Fail(format!(
            "no toxtun server runs for {} (nothing listens on its control socket)",
            dir.display()
        ))),
        Some(Reply::Reloaded { pid, report }) => {
            if cli.json {
                println!("{}", serde_json::json!({"pid": pid, "reload": report}));
            } else {
                eprintln!("toxtun: the server (pid {pid}) reloaded its configuration");
                for line in report.lines() {
                    println!("{line}");
                }
            }
            Ok(())
        }
        Some(Reply::Error { message, .. }) => Err(Fail(message)),
        Some(other) => Err(Fail(format!("unexpected reply {other:?}"))),
    }
}
