//! The guest's initramfs: an uncompressed cpio `newc` archive (the kernel unpacks it as is),
//! written here without external tools.
//!
//! Contents: busybox (`/bin/busybox`, its applets linked by `/init` with `--install -s`), the
//! kernel modules the tests need with their dependencies, iproute2's `ip` and `tc` and `ethtool`
//! in `/usr/local/bin` (busybox's `ip` cannot create VRFs), vrfd and vrfctl, every shared library
//! those programs load (from `ldd`, with the dynamic loader), `/init` and the test scripts from
//! the repository's `vm/` directory.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufWriter, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::cargo::probe;

/// Modules loaded by `/init`, after their dependencies. The guest has no modprobe set-up, so
/// nothing is loaded on demand: `cls_bpf` is what attaching a tc program through netlink needs
/// before 6.6 (without it: "TC classifier not found"), `sch_ingress` provides clsact.
pub const MODULES: [&str; 4] = ["veth", "vrf", "sch_ingress", "cls_bpf"];
/// Host programs copied to `/usr/local/bin`, ahead of busybox's applets on `PATH`.
const HOST_PROGRAMS: [&str; 3] = ["ip", "tc", "ethtool"];
/// Where the host programs are looked for when `PATH` lacks them.
const SBIN_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// What goes into the archive.
pub struct Contents<'a> {
    /// `lib/modules/<release>` of the guest kernel.
    pub modules_dir: &'a Path,
    /// Holds vrfd and vrfctl.
    pub bin_dir: &'a Path,
    /// The repository's `vm/`: `init`, `lib.sh`, `tests/*.sh`.
    pub vm_dir: &'a Path,
    /// Shell assignments for `/vm/config` (sourced by `/init`).
    pub config: String,
}

/// What [`build`] wrote.
pub struct Built {
    pub bytes: u64,
    pub tests: Vec<String>,
    pub modules: Vec<String>,
}

enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// Writes the initramfs for `contents` to `out`.
pub fn build(out: &Path, contents: &Contents) -> Result<Built> {
    let mut a = Archive::default();
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "usr/local/bin",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "etc",
        "root",
        "var",
        "lib/modules",
    ] {
        a.dir(dir);
    }
    a.insert("var/run", Entry::Symlink("../run".into()));
    a.insert("dev/console", Entry::CharDev { major: 5, minor: 1 });
    a.insert("dev/null", Entry::CharDev { major: 1, minor: 3 });

    let busybox = find_program("busybox")?;
    a.program("bin/busybox", &busybox)?;
    for name in HOST_PROGRAMS {
        a.program(&format!("usr/local/bin/{name}"), &find_program(name)?)?;
    }
    for name in crate::cargo::BINARIES {
        a.program(
            &format!("usr/local/bin/{name}"),
            &contents.bin_dir.join(name),
        )?;
    }

    let modules = module_order(contents.modules_dir, &MODULES)?;
    let mut names = Vec::new();
    for (name, path) in &modules {
        a.file(&format!("lib/modules/{name}.ko"), path, 0o644)?;
        names.push(name.clone());
    }

    let init = contents.vm_dir.join("init");
    a.file("init", &init, 0o755)?;
    a.file("vm/lib.sh", &contents.vm_dir.join("lib.sh"), 0o644)?;
    let tests = test_scripts(&contents.vm_dir.join("tests"))?;
    if tests.is_empty() {
        bail!("no test scripts in {}/tests", contents.vm_dir.display());
    }
    for path in &tests {
        let name = path.file_name().unwrap().to_string_lossy();
        a.file(&format!("vm/tests/{name}"), path, 0o755)?;
    }
    let config = format!("{}MODULES=\"{}\"\n", contents.config, names.join(" "));
    a.data("vm/config", config.into_bytes(), 0o644);

    let bytes = a.write(out)?;
    Ok(Built {
        bytes,
        tests: tests
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect(),
        modules: names,
    })
}

/// `vm/tests/*.sh`, sorted by name.
fn test_scripts(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sh") && path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// A program on `PATH` or in the usual sbin/bin directories.
fn find_program(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "`{name}` not found on PATH or in {SBIN_DIRS:?} (`cargo xtask setup` installs it)"
            )
        })
}

/// The shared libraries `program` loads, with the dynamic loader, as `ldd` lists them.
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let out = probe(Command::new("ldd").arg(program))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!("`ldd {}` failed: {}", program.display(), err.trim());
    }
    parse_ldd(&text).with_context(|| format!("`ldd {}`", program.display()))
}

fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("statically linked") {
            continue;
        }
        let target = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    bail!("{} not found", name.trim());
                }
                target
            }
            None => line,
        };
        // `/path (0x…)`; the vDSO line has no path.
        if let Some(path) = target
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Modules `wanted` and their dependencies (from each `.ko`'s `.modinfo` `depends=`), each after
/// the modules it depends on, as (name, path).
fn module_order(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let mut index = BTreeMap::new();
    index_modules(&modules_dir.join("kernel"), &mut index)?;
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in wanted {
        visit_module(&normalize(name), &index, &mut seen, &mut order, 0)?;
    }
    Ok(order)
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn index_modules(dir: &Path, index: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            index_modules(&path, index)?;
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            for suffix in [".ko", ".ko.xz", ".ko.zst", ".ko.gz"] {
                if let Some(stem) = name.strip_suffix(suffix) {
                    index.insert(normalize(stem), path.clone());
                    break;
                }
            }
        }
    }
    Ok(())
}

fn visit_module(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<(String, PathBuf)>,
    depth: usize,
) -> Result<()> {
    if depth > 32 {
        bail!("module dependencies nest too deep at {name}");
    }
    if !seen.insert(name.to_owned()) {
        return Ok(());
    }
    let path = index.get(name).with_context(|| {
        format!(
            "kernel module {name} is not in the guest kernel (built in? then drop it from MODULES)"
        )
    })?;
    if path.extension().is_none_or(|e| e != "ko") {
        bail!(
            "{} is compressed: only uncompressed modules are supported",
            path.display()
        );
    }
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    for dep in module_depends(&data) {
        visit_module(&normalize(&dep), index, seen, order, depth + 1)?;
    }
    order.push((name.to_owned(), path.clone()));
    Ok(())
}

/// The `depends=a,b` entry of a module's `.modinfo` section (NUL-separated `key=value` strings).
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let value = &ko[at + key.len()..];
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Archive entries by path (no leading `/`); a BTreeMap so that every directory comes before
/// what it holds.
#[derive(Default)]
struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    fn insert(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/');
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Entry::Dir);
            parent = p.parent();
        }
        self.entries.insert(path.to_owned(), entry);
    }

    fn dir(&mut self, path: &str) {
        self.insert(path, Entry::Dir);
    }

    fn data(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.insert(path, Entry::File { data, mode });
    }

    /// Copies `src` (following symlinks); `mode` 0 keeps its permission bits.
    fn file(&mut self, path: &str, src: &Path, mode: u32) -> Result<()> {
        let data = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        let mode = if mode == 0 {
            fs::metadata(src)?.permissions().mode() & 0o7777
        } else {
            mode
        };
        self.data(path, data, mode);
        Ok(())
    }

    /// An executable at `path`, and every shared library it loads at the path `ldd` shows.
    fn program(&mut self, path: &str, src: &Path) -> Result<()> {
        if !src.is_file() {
            bail!("{} does not exist", src.display());
        }
        self.file(path, src, 0o755)?;
        for lib in shared_libraries(src)? {
            let inside = lib.to_string_lossy().into_owned();
            if !self.entries.contains_key(inside.trim_start_matches('/')) {
                self.file(&inside, &lib, 0o755)?;
            }
        }
        Ok(())
    }

    /// Writes the archive; returns its size.
    fn write(&self, out: &Path) -> Result<u64> {
        let tmp = out.with_extension(format!("{}.tmp", std::process::id()));
        let file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = Writer {
            out: BufWriter::new(file),
            written: 0,
        };
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let ino = ino as u32 + 1;
            match entry {
                Entry::Dir => w.entry(ino, path, 0o040755, 0, (0, 0), &[])?,
                Entry::File { data, mode } => {
                    w.entry(ino, path, 0o100000 | mode, 1, (0, 0), data)?
                }
                Entry::Symlink(target) => {
                    w.entry(ino, path, 0o120777, 1, (0, 0), target.as_bytes())?
                }
                Entry::CharDev { major, minor } => {
                    w.entry(ino, path, 0o020600, 1, (*major, *minor), &[])?
                }
            }
        }
        w.entry(0, "TRAILER!!!", 0, 1, (0, 0), &[])?;
        w.out.flush()?;
        drop(w.out);
        fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
        Ok(w.written)
    }
}

struct Writer {
    out: BufWriter<fs::File>,
    written: u64,
}

impl Writer {
    /// One `newc` entry: a 110-byte ASCII header, the NUL-terminated name and the data, each
    /// padded to 4 bytes. mtime 0 and uid/gid 0 keep the archive reproducible.
    fn entry(
        &mut self,
        ino: u32,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<()> {
        let nlink = if mode & 0o170000 == 0o040000 {
            2
        } else {
            nlink
        };
        let size = u32::try_from(data.len()).context("file too large for cpio")?;
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0, 0, 0, 0, 0, rdev.0, rdev.1, name.len() + 1, 0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibmnl.so.0 => /lib/x86_64-linux-gnu/libmnl.so.0 (0x00007f4c)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f4c)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libmnl.so.0"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }

    #[test]
    fn modinfo_depends() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=udp_tunnel,ip6_udp_tunnel\0intree=Y\0";
        assert_eq!(module_depends(ko), vec!["udp_tunnel", "ip6_udp_tunnel"]);
        assert!(module_depends(b"\0depends=\0name=veth\0").is_empty());
        assert!(module_depends(b"nothing").is_empty());
    }

    #[test]
    fn newc_layout() {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("a.cpio");
        let mut a = Archive::default();
        a.data("x/y", b"hello".to_vec(), 0o644);
        let size = a.write(&out).unwrap();
        let bytes = fs::read(&out).unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(size % 4, 0);
        // The parent directory comes first.
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(&bytes[110..112], b"x\0");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("x/y\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
