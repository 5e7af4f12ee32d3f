//! The QEMU command line of a bigbar guest, built in one place for every boot:
//! the runner's test boots and shell, its KVM probe, and the `boot` example.
//!
//! The guest's serial ports have fixed roles ([`SerialPort`]): the kernel
//! console on `ttyS0`, the KTAP stream of the test binary (with its
//! heartbeats) alone on `ttyS1`, so printk lines can never corrupt KTAP. The
//! init script writes to [`SerialPort::Ktap`]'s device, the runner reads each
//! port from the sink this builder connects it to.

use std::path::PathBuf;

/// A serial port of the guest, by role; its number is its place in QEMU's
/// `-serial` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SerialPort {
    /// `ttyS0`: the kernel console (and the init script's messages).
    Console,
    /// `ttyS1`: the test binary's KTAP output and heartbeats, nothing else.
    Ktap,
}

impl SerialPort {
    /// Every port, in `-serial` order.
    pub const ALL: [SerialPort; 2] = [SerialPort::Console, SerialPort::Ktap];

    /// QEMU's chardev id, also the stem of the runner's socket for the port.
    pub const fn id(self) -> &'static str {
        match self {
            Self::Console => "console",
            Self::Ktap => "ktap",
        }
    }

    /// The guest's name of the port (for `console=`).
    pub const fn tty(self) -> &'static str {
        match self {
            Self::Console => "ttyS0",
            Self::Ktap => "ttyS1",
        }
    }

    /// The guest's device file of the port.
    pub const fn device(self) -> &'static str {
        match self {
            Self::Console => "/dev/ttyS0",
            Self::Ktap => "/dev/ttyS1",
        }
    }
}

/// Where QEMU connects a serial port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialSink {
    /// A Unix socket someone already listens on (QEMU connects to it).
    Socket(PathBuf),
    /// A file QEMU writes.
    File(PathBuf),
    /// QEMU's standard input and output; `signal` says whether Ctrl-C stops
    /// QEMU (off for an interactive shell, where it belongs to the guest).
    Stdio {
        /// Whether QEMU takes Ctrl-C for itself.
        signal: bool,
    },
}

impl SerialSink {
    fn chardev(&self, id: &str) -> String {
        match self {
            Self::Socket(p) => format!("socket,id={id},path={}", p.display()),
            Self::File(p) => format!("file,id={id},path={}", p.display()),
            Self::Stdio { signal } => {
                format!(
                    "stdio,id={id},signal={}",
                    if *signal { "on" } else { "off" }
                )
            }
        }
    }
}

/// The accelerator QEMU runs the guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's emulator: works everywhere, slowly.
    Tcg,
    /// The host's hypervisor: fast where `/dev/kvm` really runs a guest.
    Kvm,
}

impl Accel {
    /// QEMU's name of it (`-accel`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tcg => "tcg",
            Self::Kvm => "kvm",
        }
    }

    /// The accelerator QEMU calls `name`, if bigbar boots with it.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Tcg, Self::Kvm]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

/// One guest's QEMU arguments (after the binary and its data-directory
/// prefix, see [`crate::Qemu::command`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuArgs {
    /// The accelerator.
    pub accel: Accel,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs. Under TCG more than one runs multi-threaded (one host
    /// thread per vCPU), so guest threads on two vCPUs do run at the same time.
    pub cpus: u32,
    /// Guest physical address bits, when the default (40 under TCG) is not
    /// enough for the BARs.
    pub phys_bits: Option<u32>,
    /// Size of the 64-bit PCI window, when QEMU's default is not enough.
    pub pci_hole64: Option<u64>,
    /// An emulated Intel IOMMU (and `intel_iommu=on`).
    pub iommu: bool,
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs, if any.
    pub initramfs: Option<PathBuf>,
    /// Kernel parameters after the builder's own (`console=`, `panic=-1`,
    /// `intel_iommu=on`).
    pub append: String,
    /// The console port's sink.
    pub console: SerialSink,
    /// The KTAP port's sink; without one the guest has only the console.
    pub ktap: Option<SerialSink>,
    /// The vfio-user socket of the emulated device, if the guest has it.
    pub vfio_user_socket: Option<PathBuf>,
    /// Arguments passed through as they are, last.
    pub extra: Vec<String>,
}

impl QemuArgs {
    /// A guest of 1 GiB booting `kernel` with its console on `console`, and
    /// nothing else.
    pub fn new(accel: Accel, kernel: impl Into<PathBuf>, console: SerialSink) -> Self {
        Self {
            accel,
            memory_mib: 1024,
            cpus: 1,
            phys_bits: None,
            pci_hole64: None,
            iommu: false,
            kernel: kernel.into(),
            initramfs: None,
            append: String::new(),
            console,
            ktap: None,
            vfio_user_socket: None,
            extra: Vec::new(),
        }
    }

    /// The kernel command line.
    pub fn kernel_cmdline(&self) -> String {
        // panic=-1 reboots at once on panic, and -no-reboot turns that into
        // QEMU's exit.
        let mut s = format!("console={},115200 panic=-1", SerialPort::Console.tty());
        if self.accel == Accel::Tcg {
            // An emulated CPU has no speculation to defend against, and the
            // mitigations (retpolines, return thunks, buffer clearing on every
            // kernel exit) cost a Debian kernel's tests about a tenth of their time
            // under TCG. Nothing the tests judge depends on them; an `append`
            // of `mitigations=auto` turns them back on (the last one counts).
            s.push_str(" mitigations=off");
        }
        if self.iommu {
            s.push_str(" intel_iommu=on");
        }
        if !self.append.is_empty() {
            s.push(' ');
            s.push_str(&self.append);
        }
        s
    }

    /// The arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        let kvm = self.accel == Accel::Kvm;
        let machine = if kvm && self.iommu {
            // KVM's in-kernel irqchip cannot do interrupt remapping for the IOMMU.
            "q35,kernel-irqchip=split"
        } else {
            "q35"
        };
        let mut cpu = String::from(if kvm { "host" } else { "max" });
        if let Some(bits) = self.phys_bits {
            cpu.push_str(&format!(",phys-bits={bits}"));
        }
        let mem = self.memory_mib.to_string();
        let accel = match self.accel {
            // Stated, not left to QEMU's default: a race needs parallel vCPUs.
            Accel::Tcg if self.cpus > 1 => "tcg,thread=multi",
            a => a.name(),
        };
        let cpus = self.cpus.max(1).to_string();
        push(&["-machine", machine, "-accel", accel, "-cpu", &cpu]);
        push(&["-smp", &cpus, "-m", &mem, "-nodefaults", "-no-user-config"]);
        push(&["-display", "none", "-no-reboot"]);
        if let Some(size) = self.pci_hole64 {
            push(&["-global", &format!("q35-pcihost.pci-hole64-size={size}")]);
        }
        push(&["-kernel", &self.kernel.display().to_string()]);
        if let Some(initrd) = &self.initramfs {
            push(&["-initrd", &initrd.display().to_string()]);
        }
        push(&["-append", &self.kernel_cmdline()]);
        let ports = [
            (SerialPort::Console, Some(&self.console)),
            (SerialPort::Ktap, self.ktap.as_ref()),
        ];
        for (port, sink) in ports {
            let Some(sink) = sink else { continue };
            let id = port.id();
            push(&[
                "-chardev",
                &sink.chardev(id),
                "-serial",
                &format!("chardev:{id}"),
            ]);
        }
        if self.iommu {
            // Before the device, so that it sits behind the IOMMU.
            push(&["-device", "intel-iommu,caching-mode=on"]);
        }
        if let Some(socket) = &self.vfio_user_socket {
            let dev = serde_json::json!({
                "driver": "vfio-user-pci",
                "socket": {"type": "unix", "path": socket},
            });
            push(&["-device", &dev.to_string()]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// The runner's test guest.
    fn test_guest(accel: Accel, iommu: bool) -> QemuArgs {
        QemuArgs {
            memory_mib: 2048,
            phys_bits: Some(44),
            pci_hole64: Some(1 << 36),
            iommu,
            initramfs: Some("/i".into()),
            append: "quiet".into(),
            ktap: Some(SerialSink::Socket("/run/ktap.sock".into())),
            vfio_user_socket: Some("/d/dev.sock".into()),
            extra: vec!["-s".into()],
            ..QemuArgs::new(accel, "/k", SerialSink::Socket("/run/console.sock".into()))
        }
    }

    const DEVICE: &str =
        r#"{"driver":"vfio-user-pci","socket":{"path":"/d/dev.sock","type":"unix"}}"#;

    #[rstest]
    #[case::tcg_with_iommu(
        test_guest(Accel::Tcg, true),
        "-machine q35 -accel tcg -cpu max,phys-bits=44 -smp 1 -m 2048 -nodefaults -no-user-config \
         -display none -no-reboot -global q35-pcihost.pci-hole64-size=68719476736 -kernel /k -initrd /i \
         -append CMDLINE -chardev socket,id=console,path=/run/console.sock -serial chardev:console \
         -chardev socket,id=ktap,path=/run/ktap.sock -serial chardev:ktap \
         -device intel-iommu,caching-mode=on -device DEVICE -s",
        "console=ttyS0,115200 panic=-1 mitigations=off intel_iommu=on quiet"
    )]
    #[case::kvm_with_iommu_splits_the_irqchip(
        test_guest(Accel::Kvm, true),
        "-machine q35,kernel-irqchip=split -accel kvm -cpu host,phys-bits=44 -smp 1 -m 2048 -nodefaults \
         -no-user-config -display none -no-reboot -global q35-pcihost.pci-hole64-size=68719476736 \
         -kernel /k -initrd /i -append CMDLINE -chardev socket,id=console,path=/run/console.sock \
         -serial chardev:console -chardev socket,id=ktap,path=/run/ktap.sock -serial chardev:ktap \
         -device intel-iommu,caching-mode=on -device DEVICE -s",
        "console=ttyS0,115200 panic=-1 intel_iommu=on quiet"
    )]
    #[case::kvm_without_iommu(
        test_guest(Accel::Kvm, false),
        "-machine q35 -accel kvm -cpu host,phys-bits=44 -smp 1 -m 2048 -nodefaults -no-user-config \
         -display none -no-reboot -global q35-pcihost.pci-hole64-size=68719476736 -kernel /k -initrd /i \
         -append CMDLINE -chardev socket,id=console,path=/run/console.sock -serial chardev:console \
         -chardev socket,id=ktap,path=/run/ktap.sock -serial chardev:ktap -device DEVICE -s",
        "console=ttyS0,115200 panic=-1 quiet"
    )]
    #[case::kvm_probe(
        QemuArgs { memory_mib: 256, ..QemuArgs::new(Accel::Kvm, "/k", SerialSink::Stdio { signal: true }) },
        "-machine q35 -accel kvm -cpu host -smp 1 -m 256 -nodefaults -no-user-config -display none \
         -no-reboot -kernel /k -append CMDLINE -chardev stdio,id=console,signal=on -serial chardev:console",
        "console=ttyS0,115200 panic=-1"
    )]
    #[case::interactive_shell(
        QemuArgs {
            console: SerialSink::Stdio { signal: false },
            ktap: Some(SerialSink::File("/run/ktap.log".into())),
            ..test_guest(Accel::Tcg, false)
        },
        "-machine q35 -accel tcg -cpu max,phys-bits=44 -smp 1 -m 2048 -nodefaults -no-user-config \
         -display none -no-reboot -global q35-pcihost.pci-hole64-size=68719476736 -kernel /k -initrd /i \
         -append CMDLINE -chardev stdio,id=console,signal=off -serial chardev:console \
         -chardev file,id=ktap,path=/run/ktap.log -serial chardev:ktap -device DEVICE -s",
        "console=ttyS0,115200 panic=-1 mitigations=off quiet"
    )]
    fn argv(#[case] guest: QemuArgs, #[case] want: &str, #[case] cmdline: &str) {
        let want: Vec<String> = words(want)
            .into_iter()
            .map(|w| match w.as_str() {
                "CMDLINE" => cmdline.to_string(),
                "DEVICE" => DEVICE.to_string(),
                _ => w,
            })
            .collect();
        assert_eq!(guest.kernel_cmdline(), cmdline);
        assert_eq!(guest.args(), want);
    }

    #[test]
    fn accelerators_by_name() {
        for a in [Accel::Tcg, Accel::Kvm] {
            assert_eq!(Accel::from_name(a.name()), Some(a));
        }
        assert_eq!(Accel::from_name("hvf"), None);
    }

    #[test]
    fn ports_are_numbered_by_their_place() {
        for (i, port) in SerialPort::ALL.iter().enumerate() {
            assert_eq!(port.tty(), format!("ttyS{i}"));
            assert_eq!(port.device(), format!("/dev/ttyS{i}"));
        }
    }
}
