//! Man pages and shell completions, generated from the clap definitions in [`crate::cli`]
//! (`vrfctl generate …`, hidden; `cargo xtask dist` calls it).
use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use clap::{CommandFactory, Subcommand, ValueEnum};
use clap_complete::Shell;
use clap_mangen::roff::{italic, roman, Roff};

use crate::cli::{VrfctlArgs, VrfdArgs};

/// What to generate.
#[derive(Subcommand, Debug)]
pub enum Generate {
    /// Man pages (roff, section 8): `vrfctl generate man vrfd > vrfd.8`, or with --out-dir
    /// the program's page and one per subcommand (vrfctl-show.8, ...) written into DIR.
    Man {
        #[arg(value_enum)]
        program: Program,
        /// Write PROGRAM.8 and PROGRAM-SUBCOMMAND.8 into DIR (and print their paths).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// A shell completion script, on stdout: `vrfctl generate completions bash vrfctl`.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
        #[arg(value_enum)]
        program: Program,
    },
}

/// The programs whose command lines are documented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Program {
    Vrfd,
    Vrfctl,
}

impl Program {
    pub fn name(self) -> &'static str {
        match self {
            Program::Vrfd => "vrfd",
            Program::Vrfctl => "vrfctl",
        }
    }

    fn command(self) -> clap::Command {
        let cmd = match self {
            Program::Vrfd => VrfdArgs::command(),
            Program::Vrfctl => VrfctlArgs::command(),
        };
        cmd.name(self.name()).bin_name(self.name())
    }

    /// Man pages end with these sections: (title, paragraphs of (term, text)).
    fn extra_sections(self) -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
        let files = match self {
            Program::Vrfd => vec![
                (
                    "/etc/vrf-xdp.toml",
                    "The configuration vrfd.service passes with --config: VRFs declared for \
                     kernels without vrf.ko. The installed example explains every key.",
                ),
                (
                    "/sys/fs/bpf/vrf-xdp",
                    "The maps vrfd pins for vrfctl (--pin-path), removed when vrfd exits.",
                ),
                (
                    "/etc/systemd/system/vrfd.service",
                    "The systemd unit (Type=notify): vrfd signals READY=1 once the VRFs are \
                     mirrored and XDP is attached.",
                ),
            ],
            Program::Vrfctl => vec![(
                "/sys/fs/bpf/vrf-xdp",
                "Where a running vrfd pinned its maps (--pin-path); vrfctl reads them, and \
                 answers nothing without a running vrfd.",
            )],
        };
        let see_also = match self {
            Program::Vrfd => "vrfctl(8), ip-rule(8), ip-route(8), systemd.service(5)",
            Program::Vrfctl => "vrfd(8), ip-rule(8), ip-route(8)",
        };
        vec![("FILES", files), ("SEE ALSO", vec![("", see_also)])]
    }
}

/// Writes what `what` asks for: to `out`, or into the directory given.
pub fn generate(what: &Generate, out: &mut dyn Write) -> Result<()> {
    match what {
        Generate::Man {
            program,
            out_dir: None,
        } => man(*program, out),
        Generate::Man {
            program,
            out_dir: Some(dir),
        } => {
            for path in man_pages(*program, dir)? {
                writeln!(out, "{}", path.display())?;
            }
            Ok(())
        }
        Generate::Completions { shell, program } => {
            let mut cmd = without_hidden_subcommands(program.command(), program.name());
            clap_complete::generate(*shell, &mut cmd, program.name(), out);
            Ok(())
        }
    }
}

/// `cmd` minus its hidden subcommands (`generate`), which the completion generators would
/// offer otherwise: the same arguments, about text and visible subcommands.
fn without_hidden_subcommands(cmd: clap::Command, name: &'static str) -> clap::Command {
    let mut out = clap::Command::new(name)
        .bin_name(name)
        .version(env!("CARGO_PKG_VERSION"))
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    out
}

/// The man page of `program`, section 8 (system administration).
pub fn man(program: Program, out: &mut dyn Write) -> Result<()> {
    render(program.command().disable_help_subcommand(true), out)
        .with_context(|| format!("rendering the man page of {}", program.name()))?;
    let mut roff = Roff::new();
    for (title, paragraphs) in program.extra_sections() {
        roff.control("SH", [title]);
        for (term, text) in paragraphs {
            if !term.is_empty() {
                roff.control("TP", []).text([italic(term)]);
            }
            roff.text([roman(text)]);
        }
    }
    roff.to_writer(out)?;
    Ok(())
}

/// `program`.8 and one page per visible subcommand (`vrfctl-show.8`, …) in `dir`.
pub fn man_pages(program: Program, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let mut write = |name: String, render: &dyn Fn(&mut dyn Write) -> Result<()>| {
        let path = dir.join(format!("{name}.8"));
        let mut bytes = Vec::new();
        render(&mut bytes)?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
        Ok::<_, anyhow::Error>(())
    };
    write(program.name().to_owned(), &|out| man(program, out))?;
    let mut cmd = program.command().disable_help_subcommand(true);
    cmd.build();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{}-{}", program.name(), sub.get_name());
        write(name, &|out| render(sub.clone(), out))?;
    }
    Ok(written)
}

fn render(cmd: clap::Command, out: &mut dyn Write) -> Result<()> {
    clap_mangen::Man::new(cmd)
        .section("8")
        .source(concat!("vrf-xdp ", env!("CARGO_PKG_VERSION")))
        .manual("vrf-xdp")
        .render(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(what: Generate) -> String {
        let mut out = Vec::new();
        generate(&what, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn man_pages_name_their_program_and_options() {
        let vrfd = text(Generate::Man {
            program: Program::Vrfd,
            out_dir: None,
        });
        assert!(vrfd.starts_with(".ie"), "{vrfd}");
        assert!(vrfd.contains(".TH vrfd 8"), "{vrfd}");
        assert!(vrfd.contains("config"));
        assert!(vrfd.contains("/etc/vrf\\-xdp.toml"), "{vrfd}");
        let vrfctl = text(Generate::Man {
            program: Program::Vrfctl,
            out_dir: None,
        });
        assert!(vrfctl.contains(".TH vrfctl 8"), "{vrfctl}");
        assert!(vrfctl.contains("vrfctl\\-lookup(8)"), "{vrfctl}");
        assert!(
            !vrfctl.contains("generate"),
            "the hidden subcommand is documented"
        );
        assert!(!vrfctl.contains("vrfctl\\-help"), "{vrfctl}");
    }

    #[test]
    fn one_page_per_subcommand() {
        let dir = std::env::temp_dir().join(format!("vrf-xdp-man-{}", std::process::id()));
        let pages = man_pages(Program::Vrfctl, &dir).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"vrfctl.8".to_owned()), "{names:?}");
        assert!(names.contains(&"vrfctl-lookup.8".to_owned()), "{names:?}");
        assert!(!names
            .iter()
            .any(|n| n.contains("generate") || n.contains("help")));
        let lookup = std::fs::read_to_string(dir.join("vrfctl-lookup.8")).unwrap();
        assert!(lookup.contains("pin\\-path"), "{lookup}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn completions_for_every_shell() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            for program in [Program::Vrfd, Program::Vrfctl] {
                let s = text(Generate::Completions { shell, program });
                assert!(s.contains(program.name()), "{shell} {program:?}");
                assert!(
                    !s.contains("generate"),
                    "{shell} {program:?} offers `generate`"
                );
            }
            let vrfctl = text(Generate::Completions {
                shell,
                program: Program::Vrfctl,
            });
            for word in ["lookup", "stats", "pin-path", "interfaces"] {
                assert!(vrfctl.contains(word), "{shell}: no {word}");
            }
            let vrfd = text(Generate::Completions {
                shell,
                program: Program::Vrfd,
            });
            assert!(vrfd.contains("config"), "{shell}");
        }
    }
}
