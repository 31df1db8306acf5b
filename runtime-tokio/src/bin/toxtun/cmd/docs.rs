//! `toxtun completions` and `toxtun manpages`: shell completions and manual pages made
//! from the clap definitions themselves, so they never disagree with `--help`.

use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::Fail;

/// The config file's page, written by hand: clap knows the flags, not the file.
const TOXTUN_TOML_5: &str = include_str!("../../../../doc/toxtun.toml.5");

/// Prints the completion script for `shell` on standard output (a closed pipe, as with
/// `| head`, is no error of ours).
pub(crate) fn completions(shell: clap_complete::Shell) -> Result<(), Fail> {
    use std::io::Write;
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "toxtun", &mut out);
    match std::io::stdout().write_all(&out) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Fail(e.to_string())),
        _ => Ok(()),
    }
}

/// Writes `toxtun.1`, `toxtun-<sub>.1` for each visible subcommand, and `toxtun.toml.5`.
pub(crate) fn manpages(dir: &Path) -> Result<(), Fail> {
    let io = |e: std::io::Error| Fail(format!("man pages in {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    let mut pages = vec![("toxtun.1".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("toxtun-{}", sub.get_name());
        // Titled toxtun-pipe(1), as git's pages are; its synopsis says `toxtun pipe`.
        let page = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("toxtun {}", sub.get_name()))
            .version(env!("CARGO_PKG_VERSION"));
        pages.push((format!("{name}.1"), page));
    }
    for (file, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out).map_err(io)?;
        std::fs::write(dir.join(&file), out).map_err(io)?;
    }
    std::fs::write(dir.join("toxtun.toml.5"), TOXTUN_TOML_5).map_err(io)?;
    Ok(())
}
