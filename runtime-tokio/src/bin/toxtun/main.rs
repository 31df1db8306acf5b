//! `toxtun`: TCP tunnels over the Tox network. See `toxtun --help` and the README.
//!
//! `cli.rs` holds the command line, `cmd/` one file per subcommand, `report.rs` the log
//! and `--json` lines; the lib's `settings.rs` turns flags and the config file into the
//! node's configuration.

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};

mod cli;
mod cmd;
mod report;

use cli::{Cli, Command};

/// An error for people: what went wrong and, where possible, what to do.
#[derive(Debug)]
pub(crate) struct Fail(pub(crate) String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}

/// `--version`: toxtun's, c-toxcore's, and whether c-toxcore's per-packet `mlock` is
/// skipped (`toxtun_transport_tox::crypto_buffers`; `TOXTUN_TOXCORE_MLOCK=1` keeps it).
fn long_version() -> String {
    format!(
        "{} (c-toxcore {}; its per-packet mlock {})",
        env!("CARGO_PKG_VERSION"),
        toxtun_transport_tox::toxcore_version(),
        if toxtun_transport_tox::skips_toxcore_mlock() {
            "skipped"
        } else {
            "kept"
        }
    )
}

fn main() -> ExitCode {
    let matches = Cli::command().version(long_version()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logs(cli.verbose, cli.quiet());
    // One thread: the driver task and its streams' tasks wake each other for every chunk,
    // and on one thread that is a queue push, not a futex and a cross-core wake-up; the
    // Tox instance has its own thread anyway. Measured over real Tox on loopback, a 400 MiB
    // download's plateau was 150-185 MB/s against 132-179 with tokio's multi-thread
    // runtime (BENCHMARKS.md).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("toxtun: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // Do not wait for blocking reads that can never finish (stdin in `pipe` while the
    // other side ended): they would keep the process alive after its work is done.
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg)) => {
            eprintln!("toxtun: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(verbose: u8, quiet: bool) {
    let default = match verbose {
        0 if quiet => "warn",
        0 => "warn,toxtun=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a terminal: the agent's log is a file.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Runs the subcommand.
async fn run(cli: Cli) -> Result<(), Fail> {
    match &cli.command {
        Command::Id { no_qr, client } => cmd::id::run(&cli, *no_qr, *client),
        Command::Serve { config, net } => cmd::serve::run(&cli, config, net).await,
        Command::Forward {
            local,
            dynamic,
            remote,
            udp,
            server,
            secret,
            net,
        } => {
            let specs = cmd::forward::Specs {
                local,
                dynamic,
                remote,
                udp,
            };
            cmd::forward::run(&cli, &specs, server, secret, net).await
        }
        Command::Pipe {
            server,
            target,
            persist,
            secret,
            net,
        } => cmd::pipe::run(&cli, server, target, *persist, secret, net).await,
        Command::Agent {
            persist,
            secret,
            net,
        } => cmd::agent::run(&cli, *persist, secret, net).await,
        Command::Status => cmd::status::status(&cli).await,
        Command::Stop => cmd::status::stop(&cli).await,
        Command::Reload => cmd::status::reload(&cli).await,
        Command::Bootstrap {
            port,
            tcp_port,
            lan_discovery,
            public_host,
        } => cmd::bootstrap::run(*port, *tcp_port, *lan_discovery, public_host).await,
        Command::Demo { mib } => cmd::demo::run(*mib, cli.json).await,
        Command::Completions { shell } => cmd::docs::completions(*shell),
        Command::Manpages { dir } => cmd::docs::manpages(dir),
    }
}
