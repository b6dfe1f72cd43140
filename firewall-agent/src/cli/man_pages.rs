//! `vaultfw man-pages DIR` (hidden): writes the manual pages the packages
//! ship, from the same clap definitions the binary parses with, so there is
//! no second copy to keep in step: vaultfw(8), one page per verb and
//! sub-verb (vaultfw-run(8), vaultfw-network-rule-add(8), ...), and the
//! hand-written vaultfw-policy(5) for the file format.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory};

/// `vaultfw man-pages`.
#[derive(Debug, Args)]
pub struct ManPagesArgs {
    /// Directory the pages are written to (created if missing).
    pub dir: PathBuf,
}

/// The section of the command pages: system administration (the daemon
/// and the CLI that steers it need root).
const COMMAND_SECTION: &str = "8";
/// vaultfw-policy(5), the file format.
const POLICY_PAGE: (&str, &str) = (
    "vaultfw-policy.5",
    include_str!("../../man/vaultfw-policy.5"),
);

/// Runs `vaultfw man-pages`: prints each file written.
pub fn man_pages(args: &ManPagesArgs) -> ExitCode {
    match write_all(&args.dir) {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "vaultfw: writing man pages to {}: {error}",
                args.dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Writes every page into `dir`; returns the files, parents first.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut command = super::Cli::command().disable_help_subcommand(true);
    // Building gives each subcommand its display name (`vaultfw-run`) and
    // its full usage line (`vaultfw network-rule add`).
    command.build();
    let mut files = Vec::new();
    write_tree(&command, dir, &mut files)?;
    let (name, text) = POLICY_PAGE;
    let path = dir.join(name);
    fs::write(&path, text)?;
    files.push(path);
    Ok(files)
}

/// Writes the page of `command`, then those of its visible subcommands.
fn write_tree(command: &clap::Command, dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    let man = clap_mangen::Man::new(command.clone())
        .section(COMMAND_SECTION)
        .source(concat!("vaultfw ", env!("CARGO_PKG_VERSION")))
        .manual("vaultfw");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)?;
    write_see_also(&mut page, command)?;
    fs::write(&path, page)?;
    files.push(path);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub, dir, files)?;
    }
    Ok(())
}

/// A SEE ALSO section: the main page and the policy format from every
/// page, and each verb's page from the main one (clap_mangen lists them
/// under SUBCOMMANDS already).
fn write_see_also(page: &mut Vec<u8>, command: &clap::Command) -> io::Result<()> {
    let name = command.get_display_name().unwrap_or(command.get_name());
    let mut refs = Vec::new();
    if name != "vaultfw" {
        refs.push(format!(".BR vaultfw ({COMMAND_SECTION})"));
    }
    refs.push(".BR vaultfw\\-policy (5)".to_owned());
    writeln!(page, ".SH \"SEE ALSO\"")?;
    writeln!(page, "{}", refs.join(",\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_are_written_for_the_main_command_every_visible_verb_and_the_policy_format() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_all(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in [
            "vaultfw.8",
            "vaultfw-run.8",
            "vaultfw-validate.8",
            "vaultfw-check.8",
            "vaultfw-network-rule.8",
            "vaultfw-network-rule-add.8",
            "vaultfw-completions.8",
            "vaultfw-policy.5",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
        // One page per visible verb: the hidden generator has none.
        let verbs = super::super::Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .count();
        let verb_pages = names
            .iter()
            .filter(|n| n.ends_with(".8") && n.matches('-').count() >= 1)
            .count();
        assert!(
            verb_pages >= verbs,
            "{verb_pages} verb pages for {verbs} verbs"
        );
        assert!(!names.iter().any(|n| n.contains("man-pages")), "{names:?}");

        let run = fs::read_to_string(dir.path().join("vaultfw-run.8")).unwrap();
        assert!(run.contains(".TH vaultfw-run 8"), "{run}");
        assert!(
            run.contains("\\-\\-iface"),
            "the run page documents --iface"
        );
        assert!(
            run.contains("vaultfw\\-policy"),
            "the run page points at the format"
        );
    }
}
