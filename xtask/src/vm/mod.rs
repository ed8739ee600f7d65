//! The VM lane: vrf-xdp as a Debian package on a small Debian 12 router (systemd, ifupdown2,
//! OpenVPN, FRR, BIRD) with real kernel VRF devices (`vrf.ko`) on the oldest kernel it
//! supports, Debian 12's 6.1, booted under QEMU (TCG).
//!
//! 1. [`image`]: the mmdebstrap root file system with Debian's kernel, built once and cached
//!    outside the clone (`/var/cache/vrf-xdp/vm/<suite>-<recipe hash>/`);
//! 2. [`crate::deb`]: `vrf-xdp_<version>_amd64.deb`, checked by lintian;
//! 3. the payload: a tar archive of the package, `vm/init`, `vm/lib.sh`, `vm/tests/*.sh` and
//!    `examples/`, attached as the guest's second disk;
//! 4. [`qemu`]: boot it; the image's `vmtest.service` unpacks the payload and runs `/vm/init`,
//!    which installs the package with `dpkg -i`, runs every script and prints on the serial
//!    console `VMTEST <name> PASS|FAIL <reason>` per script and `VMTEST-SUMMARY N passed, N
//!    failed`, then powers off;
//! 5. here: parse those lines, print the results, fail unless every script passed.

mod image;
mod qemu;

use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{
    cargo::{build_binaries, root, run, target_dir},
    deb, setup,
};

const DEFAULT_TIMEOUT: u64 = 1500;
const DEFAULT_SCRIPT_TIMEOUT: u64 = 300;

/// Options of `cargo xtask vm-test`.
#[derive(Args, Clone)]
pub struct VmArgs {
    /// Only run the test scripts whose name contains one of these (e.g. `02`, `systemd`).
    #[arg(value_name = "FILTER")]
    pub filters: Vec<String>,

    /// Kill the VM after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT)]
    pub timeout: u64,

    /// Fail a test script still running after this many seconds (inside the VM).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_SCRIPT_TIMEOUT)]
    pub script_timeout: u64,

    /// Print every script's output, not only that of the failing ones.
    #[arg(long)]
    pub show_output: bool,
}

impl Default for VmArgs {
    fn default() -> Self {
        Self {
            filters: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            script_timeout: DEFAULT_SCRIPT_TIMEOUT,
            show_output: false,
        }
    }
}

impl VmArgs {
    fn check(&self) -> Result<()> {
        // They end up in a shell file and a `case` pattern inside the guest.
        if let Some(f) = self.filters.iter().find(|f| {
            f.is_empty()
                || !f
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        }) {
            bail!("filter {f:?}: use letters, digits, `-`, `_` and `.` only");
        }
        Ok(())
    }
}

/// `cargo xtask vm-test`: setup, build the release binaries, run the lane.
pub fn vm_test(args: &VmArgs) -> Result<()> {
    args.check()?;
    let tc = setup::ensure(true)?;
    let bin_dir = build_binaries(&tc, true)?;
    run_lane(&bin_dir, args)
}

/// Packs vrfd and vrfctl from `bin_dir` into the .deb, boots the image with it and runs the test
/// scripts; fails unless every one passed.
pub fn run_lane(bin_dir: &Path, args: &VmArgs) -> Result<()> {
    args.check()?;
    let started = Instant::now();
    let t = Instant::now();
    let image = image::ensure().context("getting the VM image")?;
    let image_time = t.elapsed();

    let t = Instant::now();
    let package = deb::build(bin_dir).context("building the .deb")?;
    deb::lintian(&package)?;
    let deb_time = t.elapsed();

    let payload = target_dir().join("vm/payload.tar");
    let config = format!(
        "SCRIPT_TIMEOUT={}\nONLY=\"{}\"\nSHOW_OUTPUT={}\n",
        args.script_timeout,
        args.filters.join(" "),
        u8::from(args.show_output)
    );
    let tests = pack_payload(&payload, &package, &config)?;
    let selected: Vec<&String> = tests
        .iter()
        .filter(|t| args.filters.is_empty() || args.filters.iter().any(|f| t.contains(f.as_str())))
        .collect();
    if selected.is_empty() {
        bail!(
            "no VM test matches {:?} (tests: {})",
            args.filters,
            tests.join(", ")
        );
    }
    eprintln!(
        "vm-test: image {} (kernel {}, {}, {:.1} s), package {} ({:.1} s), {} test(s)",
        image.dir.display(),
        image.kernel_release,
        if image.built { "built" } else { "cached" },
        image_time.as_secs_f64(),
        package.file_name().unwrap().to_string_lossy(),
        deb_time.as_secs_f64(),
        selected.len()
    );

    let vm = qemu::Vm {
        kernel: image.vmlinuz.clone(),
        initrd: image.initrd.clone(),
        disk: image.disk.clone(),
        payload,
        cpus: 2,
        memory_mb: 1536,
        timeout: Duration::from_secs(args.timeout),
    };
    let boot = Instant::now();
    let mut report = Report::default();
    let end = vm.run(|line| {
        eprintln!("vm| {line}");
        if report.booted.is_none() && line.contains("VMTEST-BOOT") {
            report.booted = Some(boot.elapsed());
        }
        report.parse(line);
    })?;
    let ran = boot.elapsed();

    for r in &report.results {
        let verdict = if r.passed { "PASS" } else { "FAIL" };
        println!("vm-test: {verdict} {} {}", r.name, r.detail);
    }
    let booted = report
        .booted
        .map_or("-".to_owned(), |b| format!("{:.1} s", b.as_secs_f64()));
    eprintln!(
        "vm-test: boot {booted}, VM total {:.1} s, lane total {:.1} s",
        ran.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    report.verdict(end, &selected, args.timeout)
}

/// Writes the payload archive: `vrf-xdp.deb`, `config`, `init`, `lib.sh`, `tests/*.sh` and
/// `examples/`; returns the test names (script names without `.sh`), sorted.
fn pack_payload(out: &Path, package: &Path, config: &str) -> Result<Vec<String>> {
    let vm_dir = root().join("vm");
    let stage = target_dir().join("vm/payload");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    fs::create_dir_all(stage.join("tests"))?;
    fs::copy(package, stage.join("vrf-xdp.deb"))?;
    fs::write(stage.join("config"), config)?;
    fs::copy(vm_dir.join("init"), stage.join("init"))?;
    fs::copy(vm_dir.join("lib.sh"), stage.join("lib.sh"))?;
    let mut tests = Vec::new();
    for entry in fs::read_dir(vm_dir.join("tests"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sh") && path.is_file() {
            let name = path.file_name().unwrap();
            fs::copy(&path, stage.join("tests").join(name))?;
            tests.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    tests.sort();
    if tests.is_empty() {
        bail!("no test scripts in {}/tests", vm_dir.display());
    }
    run(Command::new("cp")
        .arg("-r")
        .arg(root().join("examples"))
        .arg(stage.join("examples")))?;
    // A tar archive read straight from the block device: no file system needed in the guest.
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(out)
        .arg("-C")
        .arg(&stage)
        .arg("."))?;
    Ok(tests)
}

#[derive(Default)]
struct Report {
    booted: Option<Duration>,
    results: Vec<TestResult>,
    /// (passed, failed) from `VMTEST-SUMMARY`.
    summary: Option<(usize, usize)>,
}

struct TestResult {
    name: String,
    passed: bool,
    /// The rest of the line: the reason of a failure, how long it took.
    detail: String,
}

impl Report {
    fn parse(&mut self, line: &str) {
        let Some(at) = line.find("VMTEST") else {
            return;
        };
        let line = &line[at..];
        if let Some(rest) = line.strip_prefix("VMTEST-SUMMARY ") {
            self.summary = parse_summary(rest);
            return;
        }
        let Some(rest) = line.strip_prefix("VMTEST ") else {
            return;
        };
        let mut words = rest.splitn(3, ' ');
        let (Some(name), Some(verdict)) = (words.next(), words.next()) else {
            return;
        };
        let passed = match verdict {
            "PASS" => true,
            "FAIL" => false,
            _ => return,
        };
        self.results.push(TestResult {
            name: name.to_owned(),
            passed,
            detail: words.next().unwrap_or("").trim().to_owned(),
        });
    }

    fn verdict(&self, end: qemu::End, selected: &[&String], timeout: u64) -> Result<()> {
        let passed = self.results.iter().filter(|r| r.passed).count();
        let failed = self.results.len() - passed;
        let missing: Vec<&str> = selected
            .iter()
            .filter(|t| !self.results.iter().any(|r| r.name == ***t))
            .map(|t| t.as_str())
            .collect();
        // The closing line CI reads.
        println!("vm-test: {passed} passed, {failed} failed");
        match end {
            qemu::End::TimedOut => bail!(
                "VM lane timed out after {timeout} s; no result from: {}",
                missing.join(", ")
            ),
            qemu::End::Exited(status) if !status.success() => {
                bail!("qemu exited with {status}")
            }
            qemu::End::Exited(_) => {}
        }
        if failed > 0 {
            let names: Vec<&str> = self
                .results
                .iter()
                .filter(|r| !r.passed)
                .map(|r| r.name.as_str())
                .collect();
            bail!("VM tests failed: {}", names.join(", "));
        }
        let Some(summary) = self.summary else {
            bail!("the VM powered off without its VMTEST-SUMMARY line (see the console above)");
        };
        if summary != (passed, failed) {
            bail!(
                "VMTEST-SUMMARY says {} passed, {} failed, but {passed} PASS and {failed} FAIL lines were seen",
                summary.0,
                summary.1
            );
        }
        if !missing.is_empty() {
            bail!("no result from VM test(s): {}", missing.join(", "));
        }
        Ok(())
    }
}

/// `3 passed, 1 failed` → (3, 1).
fn parse_summary(s: &str) -> Option<(usize, usize)> {
    let (p, f) = s.trim().split_once(',')?;
    let passed = p.trim().strip_suffix(" passed")?.trim().parse().ok()?;
    let failed = f.trim().strip_suffix(" failed")?.trim().parse().ok()?;
    Some((passed, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_results() {
        let mut r = Report::default();
        for line in [
            "VMTEST-BOOT 6.1.0-56-cloud-amd64",
            "VMTEST 01-discover PASS",
            "[   12.1] noise VMTEST 02-forward FAIL ping red: 100% packet loss",
            "VMTEST 03-live BOGUS",
            "VMTEST-SUMMARY 1 passed, 1 failed",
        ] {
            r.parse(line);
        }
        assert_eq!(r.results.len(), 2);
        assert_eq!(r.results[0].name, "01-discover");
        assert!(r.results[0].passed);
        assert!(!r.results[1].passed);
        assert_eq!(r.results[1].detail, "ping red: 100% packet loss");
        assert_eq!(r.summary, Some((1, 1)));
        assert_eq!(parse_summary("x passed, 1 failed"), None);
    }
}
