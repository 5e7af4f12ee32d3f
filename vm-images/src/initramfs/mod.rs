//! The guest's initramfs: busybox, the generated `/init`, the modules and the tests,
//! as an uncompressed newc cpio archive (the kernel accepts it as is).

pub mod init_script;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use cpio::newc::{Builder, ModeFileType};

pub use init_script::{EXIT_LINE_PREFIX, GUEST_TESTS_PATH, KTAP_TTY};

use crate::error::{Error, IoContext, Result};
use crate::kselftests::{Collection, GUEST_DIR};

/// What goes into the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitramfsSpec {
    /// A static busybox binary.
    pub busybox: PathBuf,
    /// The static test binary, installed as `/bin/guest-tests`.
    pub guest_tests: PathBuf,
    /// Kernel modules to load, in load order.
    pub modules: Vec<PathBuf>,
    /// Arguments for the test binary.
    pub test_args: Vec<String>,
    /// Start an interactive shell on the console instead of running the tests.
    pub shell: bool,
    /// External kselftest programs, installed as
    /// `/lib/kselftests/<collection>/<program>` (see [`crate::kselftests`]).
    pub kselftests: Vec<Collection>,
}

/// Directories of the image.
const DIRS: [&str; 7] = ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"];
/// `/dev/console`: the kernel opens it for init's stdio before init mounts devtmpfs.
const CONSOLE: (u32, u32) = (5, 1);

/// Writes the initramfs for `spec` to `out` (atomically: a temporary file renamed).
pub fn build(spec: &InitramfsSpec, out: &Path) -> Result<()> {
    let module_paths = module_destinations(&spec.modules)?;
    let script = init_script::generate(&module_paths, &spec.test_args, spec.shell)?;
    write_atomically(out, |archive| {
        base(archive, &spec.busybox, spec.shell, out)?;
        archive
            .file(
                GUEST_TESTS_PATH.trim_start_matches('/'),
                0o755,
                &read(&spec.guest_tests)?,
            )
            .at("writing", out)?;
        add_kselftests(archive, &spec.kselftests)?;
        for (src, dest) in spec.modules.iter().zip(&module_paths) {
            archive
                .file(dest.trim_start_matches('/'), 0o644, &read(src)?)
                .at("writing", out)?;
        }
        archive
            .file("init", 0o755, script.as_bytes())
            .at("writing", out)
    })
}

/// Writes the initramfs of a bare boot to `out`: busybox and an init that
/// powers off at once ([`init_script::poweroff_only`]); no modules, no tests.
pub fn build_poweroff(busybox: &Path, out: &Path) -> Result<()> {
    let script = init_script::poweroff_only();
    write_atomically(out, |archive| {
        base(archive, busybox, false, out)?;
        archive
            .file("init", 0o755, script.as_bytes())
            .at("writing", out)
    })
}

/// What every image holds: the directories, `/dev/console`, busybox and the
/// applets the init script calls.
fn base<W: Write>(archive: &mut Archive<W>, busybox: &Path, shell: bool, out: &Path) -> Result<()> {
    for d in DIRS {
        archive.dir(d).at("writing", out)?;
    }
    archive
        .char_device("dev/console", 0o600, CONSOLE)
        .at("writing", out)?;
    archive
        .file("bin/busybox", 0o755, &read(busybox)?)
        .at("writing", out)?;
    for applet in init_script::applets(shell) {
        archive
            .symlink(&format!("bin/{applet}"), "busybox")
            .at("writing", out)?;
    }
    Ok(())
}

/// Writes the archive `fill` adds to into a temporary file beside `out`, then
/// renames it, so a reader never sees half an image.
fn write_atomically(
    out: &Path,
    fill: impl FnOnce(&mut Archive<BufWriter<&fs::File>>) -> Result<()>,
) -> Result<()> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".initramfs-")
        .tempfile_in(dir)
        .at("creating temporary file in", dir)?;
    let mut archive = Archive::new(BufWriter::new(tmp.as_file()));
    fill(&mut archive)?;
    archive.finish().at("writing", out)?;
    crate::cache::set_readable(tmp.as_file(), tmp.path())?;
    tmp.persist(out).map_err(|e| e.error).at("replacing", out)?;
    Ok(())
}

/// The kselftest install layout: one directory per collection, its programs in
/// it, with the collection's data files beside them (`settings`, the stored
/// `<program>.list` listings).
fn add_kselftests<W: Write>(archive: &mut Archive<W>, collections: &[Collection]) -> Result<()> {
    if collections.is_empty() {
        return Ok(());
    }
    let root = GUEST_DIR.trim_start_matches('/');
    archive.dir(root).at("writing", root)?;
    for c in collections {
        let dir = format!("{root}/{}", c.name);
        archive.dir(&dir).at("writing", &dir)?;
        for program in &c.programs {
            let data = read(&c.dir.join(program))?;
            let dest = format!("{dir}/{program}");
            archive.file(&dest, 0o755, &data).at("writing", &dest)?;
        }
        for file in data_files(c)? {
            let data = read(&c.dir.join(&file))?;
            let dest = format!("{dir}/{file}");
            archive.file(&dest, 0o644, &data).at("writing", &dest)?;
        }
    }
    Ok(())
}

/// The regular files of a collection's directory that are not its programs.
fn data_files(c: &Collection) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(&c.dir).at("reading", &c.dir)? {
        let p = e.at("reading", &c.dir)?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if p.is_file() && !c.programs.contains(&name) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// `/lib/modules/<file name>` for each module; names must be distinct.
fn module_destinations(modules: &[PathBuf]) -> Result<Vec<String>> {
    let mut seen = BTreeSet::new();
    modules
        .iter()
        .map(|m| {
            let name = m
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::Initramfs(format!("bad module path {}", m.display())))?;
            if !seen.insert(name.to_owned()) {
                return Err(Error::Initramfs(format!("two modules named {name}")));
            }
            Ok(format!("/lib/modules/{name}"))
        })
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).at("reading initramfs input", path)
}

/// A newc writer that numbers inodes.
struct Archive<W: Write> {
    out: W,
    next_ino: u32,
}

impl<W: Write> Archive<W> {
    fn new(out: W) -> Self {
        Self { out, next_ino: 1 }
    }

    fn entry(&mut self, name: &str, mode: u32, kind: ModeFileType) -> Builder {
        let ino = self.next_ino;
        self.next_ino += 1;
        Builder::new(name)
            .ino(ino)
            .mode(mode)
            .set_mode_file_type(kind)
            .nlink(if mode & 0o040000 != 0 { 2 } else { 1 })
    }

    fn write(&mut self, builder: Builder, data: &[u8]) -> std::io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| std::io::Error::other("file larger than 4 GiB"))?;
        let mut writer = builder.write(&mut self.out, size);
        writer.write_all(data)?;
        writer.finish()?;
        Ok(())
    }

    fn dir(&mut self, name: &str) -> std::io::Result<()> {
        let b = self.entry(name, 0o755, ModeFileType::Directory).nlink(2);
        self.write(b, &[])
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        let b = self.entry(name, mode, ModeFileType::Regular);
        self.write(b, data)
    }

    fn symlink(&mut self, name: &str, target: &str) -> std::io::Result<()> {
        let b = self.entry(name, 0o777, ModeFileType::Symlink);
        self.write(b, target.as_bytes())
    }

    fn char_device(
        &mut self,
        name: &str,
        mode: u32,
        (major, minor): (u32, u32),
    ) -> std::io::Result<()> {
        let b = self
            .entry(name, mode, ModeFileType::Char)
            .rdev_major(major)
            .rdev_minor(minor);
        self.write(b, &[])
    }

    fn finish(mut self) -> std::io::Result<()> {
        cpio::newc::trailer(&mut self.out)?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::fs::File;
    use std::io::Read;

    /// One entry read back: mode, data, rdev.
    type Entries = BTreeMap<String, (u32, Vec<u8>, (u32, u32))>;

    fn read_back(path: &Path) -> Entries {
        let mut entries = Entries::new();
        let mut input = std::io::BufReader::new(File::open(path).unwrap());
        loop {
            let mut reader = cpio::NewcReader::new(input).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            let e = reader.entry().clone();
            let mut data = Vec::new();
            reader.read_to_end(&mut data).unwrap();
            let old = entries.insert(
                e.name().to_owned(),
                (e.mode(), data, (e.rdev_major(), e.rdev_minor())),
            );
            assert!(old.is_none(), "duplicate entry {}", e.name());
            input = reader.finish().unwrap();
        }
        entries
    }

    fn spec(tmp: &Path, shell: bool) -> InitramfsSpec {
        let w = |name: &str, data: &[u8]| {
            let p = tmp.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, data).unwrap();
            p
        };
        InitramfsSpec {
            busybox: w("bb", b"BUSYBOX"),
            guest_tests: w("gt", b"TESTS"),
            modules: vec![w("a/vfio.ko.xz", b"M1"), w("b/vfio-pci.ko.xz", b"M2")],
            test_args: vec!["--list".into()],
            shell,
            kselftests: Vec::new(),
        }
    }

    #[test]
    fn archive_holds_everything_with_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("initramfs.cpio");
        build(&spec(tmp.path(), false), &out).unwrap();
        let e = read_back(&out);
        assert_eq!(e["init"].0, 0o100755);
        let init = String::from_utf8(e["init"].1.clone()).unwrap();
        assert!(init.contains("/bin/guest-tests --list >/dev/ttyS1 2>/dev/console"));
        assert!(init.find("vfio.ko.xz").unwrap() < init.find("vfio-pci.ko.xz").unwrap());
        assert_eq!(e["bin/busybox"], (0o100755, b"BUSYBOX".to_vec(), (0, 0)));
        assert_eq!(e["bin/guest-tests"], (0o100755, b"TESTS".to_vec(), (0, 0)));
        assert_eq!(
            e["lib/modules/vfio.ko.xz"],
            (0o100644, b"M1".to_vec(), (0, 0))
        );
        assert_eq!(e["lib/modules/vfio-pci.ko.xz"].1, b"M2");
        assert_eq!(e["dev/console"], (0o020600, vec![], (5, 1)));
        for applet in ["sh", "mount", "insmod", "poweroff", "reboot"] {
            assert_eq!(
                e[&format!("bin/{applet}")],
                (0o120777, b"busybox".to_vec(), (0, 0))
            );
        }
        for d in DIRS {
            assert_eq!(e[d].0, 0o040755, "{d}");
        }
        assert!(!e.contains_key("bin/cttyhack"));
        // Only the output file is left: the temporary file was renamed.
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".initramfs-"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn bare_boot_image_holds_busybox_and_an_init_that_powers_off() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path(), false);
        let out = tmp.path().join("bare.cpio");
        build_poweroff(&spec.busybox, &out).unwrap();
        let e = read_back(&out);
        assert_eq!(e["bin/busybox"], (0o100755, b"BUSYBOX".to_vec(), (0, 0)));
        assert_eq!(e["bin/poweroff"].1, b"busybox");
        assert_eq!(e["dev/console"], (0o020600, vec![], (5, 1)));
        let init = String::from_utf8(e["init"].1.clone()).unwrap();
        assert_eq!(init, init_script::poweroff_only());
        assert!(!e.contains_key("bin/guest-tests"));
        assert!(!e.keys().any(|k| k.starts_with("lib/modules/")), "{e:?}");
    }

    #[test]
    fn kselftests_go_into_the_install_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let built = tmp.path().join("entry/repro");
        fs::create_dir_all(&built).unwrap();
        fs::write(built.join("x_test"), b"ELF").unwrap();
        fs::write(built.join("x_test.list"), b"# FIXTURE").unwrap();
        let mut s = spec(tmp.path(), false);
        s.kselftests.push(Collection {
            name: "repro".into(),
            dir: built,
            programs: vec!["x_test".into()],
            source: "linux-source-7.2 7.2.13-1".into(),
        });
        let out = tmp.path().join("k.cpio");
        build(&s, &out).unwrap();
        let e = read_back(&out);
        assert_eq!(e["lib/kselftests"].0, 0o040755);
        assert_eq!(e["lib/kselftests/repro"].0, 0o040755);
        assert_eq!(
            e["lib/kselftests/repro/x_test"],
            (0o100755, b"ELF".to_vec(), (0, 0))
        );
        assert_eq!(e["lib/kselftests/repro/x_test.list"].0, 0o100644);
    }

    #[test]
    fn shell_archive_has_shell_applets() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("shell.cpio");
        build(&spec(tmp.path(), true), &out).unwrap();
        let e = read_back(&out);
        assert!(e.contains_key("bin/cttyhack") && e.contains_key("bin/setsid"));
        assert!(String::from_utf8_lossy(&e["init"].1).contains("setsid cttyhack sh"));
    }

    #[test]
    fn duplicate_module_names_and_missing_inputs_fail() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = spec(tmp.path(), false);
        s.modules.push(tmp.path().join("a/vfio.ko.xz"));
        let err = build(&s, &tmp.path().join("x")).unwrap_err().to_string();
        assert!(err.contains("two modules named vfio.ko.xz"), "{err}");
        let mut s = spec(tmp.path(), false);
        s.guest_tests = tmp.path().join("absent");
        let err = build(&s, &tmp.path().join("x")).unwrap_err().to_string();
        assert!(err.contains("absent"), "{err}");
        assert!(!tmp.path().join("x").exists());
    }
}
