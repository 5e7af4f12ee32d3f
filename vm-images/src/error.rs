//! The crate's error type: every variant names what it was working on.

use std::path::PathBuf;

/// Errors of obtaining, caching and assembling boot artefacts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "creating directory".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A host program the crate runs is not installed.
    #[error("`{program}` not found in PATH; install the Debian package `{package}`")]
    ToolMissing {
        /// The program looked for.
        program: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },

    /// A program could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A program ran and failed.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of what it printed on stderr (and stdout when stderr was empty).
        stderr: String,
    },

    /// apt could not verify a suite's Release file with the keyring it was given.
    #[error("apt cannot verify the signature of Debian suite `{suite}` with {keyring}:\n{detail}")]
    Signature {
        /// The suite.
        suite: String,
        /// The keyring used.
        keyring: PathBuf,
        /// apt's messages.
        detail: String,
    },

    /// No trusted keyring is available to start from.
    #[error("no Debian archive keyring at {path}: install the Debian package `debian-archive-keyring` (needed to verify what is downloaded)")]
    NoKeyring {
        /// Where the keyring was expected.
        path: PathBuf,
    },

    /// A package is not known in a suite.
    #[error("package `{package}` has no candidate version in Debian suite `{suite}`")]
    PackageNotFound {
        /// The suite.
        suite: String,
        /// The package.
        package: String,
    },

    /// A package's files do not contain what was expected.
    #[error("{what} not found in {package}: looked for {looked_for}")]
    MissingFromPackage {
        /// What was looked for, e.g. "kernel image".
        what: &'static str,
        /// Package name and version.
        package: String,
        /// The paths tried.
        looked_for: String,
    },

    /// Output of a tool or content of a file could not be understood.
    #[error("cannot parse {what}: {detail}")]
    Parse {
        /// What was parsed.
        what: String,
        /// Why it failed.
        detail: String,
    },

    /// A name given by the caller is not acceptable.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidInput {
        /// What kind of value, e.g. "kernel spec".
        what: &'static str,
        /// The value.
        value: String,
        /// Why it is rejected.
        reason: String,
    },

    /// The request is understood but not implemented yet.
    #[error("{what} `{value}` is not supported yet: {reason}")]
    NotSupported {
        /// What kind of value.
        what: &'static str,
        /// The value.
        value: String,
        /// Details.
        reason: String,
    },

    /// A kernel's configuration lacks what the guest needs.
    #[error("kernel {kernel} cannot run bigbar's guest; its configuration lacks:\n{missing}")]
    KernelUnsuitable {
        /// The kernel (image or build directory).
        kernel: PathBuf,
        /// One line per missing option, with what it is needed for.
        missing: String,
    },

    /// A QEMU binary is unusable for bigbar.
    #[error("QEMU at {binary} (version {version}) is unusable: {reason}")]
    QemuUnusable {
        /// The binary.
        binary: PathBuf,
        /// Its version, as reported.
        version: String,
        /// Why.
        reason: String,
    },

    /// A kernel module needed by the guest is neither a file nor built in.
    #[error("kernel module `{module}` (needed by {needed_by}) not found for kernel {release}")]
    ModuleNotFound {
        /// The module name.
        module: String,
        /// The module that needs it, or "the guest".
        needed_by: String,
        /// The kernel release.
        release: String,
    },

    /// Module dependencies form a cycle.
    #[error("kernel module dependency cycle: {cycle}")]
    ModuleCycle {
        /// The modules in the cycle, arrow separated.
        cycle: String,
    },

    /// A kernel module file could not be read.
    #[error("kernel module {path}: {detail}")]
    Module {
        /// The module file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// A cache entry exists but is not what it should be.
    #[error("cache entry {path} is damaged ({detail}); delete it to fetch again")]
    CacheEntry {
        /// The entry.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// Programs or headers needed to build a kernel are not installed.
    #[error(
        "cannot build a kernel: missing {missing}; install them with `apt-get install {packages}`"
    )]
    BuildToolsMissing {
        /// What is missing, comma separated.
        missing: String,
        /// The Debian packages providing them, space separated.
        packages: String,
    },

    /// Build tools the host lacks cannot be fetched: the host's distribution has no
    /// archive bigbar knows, or that archive is unreachable or lacks them.
    #[error(
        "cannot build a kernel: missing {missing}, and bigbar cannot fetch them ({reason}); install them with `apt-get install {packages}` (or your distribution's equivalent)"
    )]
    BuildToolsUnavailable {
        /// What is missing, comma separated.
        missing: String,
        /// The Debian/Ubuntu packages providing them, space separated.
        packages: String,
        /// Why they cannot be fetched.
        reason: String,
    },

    /// A build tool unpacked into the cache does not run.
    #[error("build tool {tool} unpacked from {package} does not run: {detail}")]
    BuildToolBroken {
        /// The program.
        tool: PathBuf,
        /// The package and version it came from.
        package: String,
        /// What happened.
        detail: String,
    },

    /// A patch of a series does not apply to the kernel source.
    #[error(
        "patch {position}/{count} {} does not apply to {source_version} (the series is based on {based_on}):\n{}",
        patch.display(),
        render_lines(problems)
    )]
    PatchFailed {
        /// The patch file.
        patch: PathBuf,
        /// Its position in the series (from 1).
        position: usize,
        /// How many patches the series has.
        count: usize,
        /// The Debian source package and version patched.
        source_version: String,
        /// The source the series was written against.
        based_on: String,
        /// What failed, hunk by hunk.
        problems: Vec<crate::kernel::patches::PatchProblem>,
    },

    /// A built kernel's `.config` lacks options the fragment requires.
    #[error(
        "kernel configuration {} does not honour {} (a Kconfig dependency is missing, or the option was renamed):\n{}",
        config.display(),
        fragment.display(),
        render_lines(mismatches)
    )]
    KernelConfig {
        /// The `.config` produced.
        config: PathBuf,
        /// The fragment applied.
        fragment: PathBuf,
        /// The options that differ.
        mismatches: Vec<crate::kernel::kconfig::Mismatch>,
    },

    /// A step of a kernel build failed.
    #[error("kernel build failed at `{command}` ({status}); full log {}:\n{tail}", log.display())]
    KernelBuild {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The build log.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },

    /// The kernel's own kselftests did not build (with the project's patches).
    #[error(
        "building {collection} from {source_version} failed at `{command}` ({status}); \
         the project's fixes for it belong in kernel/patches/selftests:\n{tail}"
    )]
    KselftestBuild {
        /// The collection (e.g. `vfio-selftests`).
        collection: String,
        /// The kernel source (`package version`).
        source_version: String,
        /// The make command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of what it printed on stderr.
        tail: String,
    },

    /// A local kernel has no source tree to build its own selftests from.
    #[error("cannot build {subdir} for the kernel {}: {reason}", kernel.display())]
    NoSelftestsTree {
        /// What `--kernel` named.
        kernel: PathBuf,
        /// The selftests directory wanted.
        subdir: String,
        /// What is missing, and what to give instead.
        reason: String,
    },

    /// The initramfs cannot be built from the given spec.
    #[error("initramfs: {0}")]
    Initramfs(String),

    /// No headless Chromium can be fetched for this host (see [`crate::chromium`]).
    #[error("no headless Chromium for this host: {reason}")]
    ChromiumUnavailable {
        /// Why (the host's distribution, an archive without the package).
        reason: String,
    },
}

/// One item per line, indented, for multi-line error messages.
fn render_lines<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| format!("  {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds the path and action to an I/O error.
pub(crate) trait IoContext<T> {
    /// Wraps the error as [`Error::Io`].
    fn at(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            action,
            path: path.into(),
            source,
        })
    }
}
