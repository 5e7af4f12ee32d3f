//! The guest's QEMU and kernel command lines: the runner's settings on top of
//! `vm_images::launch::QemuArgs`, the builder every boot shares.

use super::GuestConfig;
use std::path::{Path, PathBuf};
use vm_images::launch::{QemuArgs, SerialPort, SerialSink};

/// The kernel command line for a run.
pub fn kernel_cmdline(cfg: &GuestConfig) -> String {
    launch_args(cfg, SerialSink::Stdio { signal: true }, None).kernel_cmdline()
}

/// The kernel's own hang detectors, set to report within the runner's 30 s
/// progress limit, so that a hung guest's last console lines say why: soft
/// lockups after the default 2 × 10 s (a shorter threshold reports a vCPU that a
/// loaded host did not schedule under TCG), RCU stalls after 20 s (21 s), tasks
/// blocked for 20 s, checked every 20 s (120 s). `softlockup_panic=0`:
/// a lockup under TCG on a loaded host may be transient, and the runner, not
/// the kernel, decides when a guest is dead. Kernels without a detector (the
/// project's own configurations have only the RCU one) ignore its parameter;
/// `sysctl.` parameters need 5.8 or later.
pub const HANG_DETECTORS: &str = "softlockup_panic=0 \
     rcupdate.rcu_cpu_stall_timeout=20 sysctl.kernel.hung_task_timeout_secs=20";

/// The socket in `dir` the runner listens on for `port`.
pub(super) fn serial_socket(dir: &Path, port: SerialPort) -> PathBuf {
    dir.join(format!("{}.sock", port.id()))
}

/// The guest of `cfg` with its serial ports on `console` and `ktap`.
pub(super) fn launch_args(
    cfg: &GuestConfig,
    console: SerialSink,
    ktap: Option<SerialSink>,
) -> QemuArgs {
    // no_timer_check: under TCG on a loaded host the IO-APIC timer check can miss
    // its ticks and panic ("timer doesn't work through Interrupt-remapped IO-APIC").
    let append = format!(
        "printk.time=1 no_timer_check {HANG_DETECTORS} {}",
        cfg.append
    );
    QemuArgs {
        memory_mib: cfg.memory_mib,
        cpus: cfg.cpus,
        phys_bits: Some(cfg.phys_bits),
        pci_hole64: Some(cfg.pci_hole64),
        iommu: cfg.iommu,
        initramfs: Some(cfg.initramfs.clone()),
        append: append.trim_end().to_string(),
        ktap,
        vfio_user_socket: Some(cfg.device_socket.clone()),
        extra: cfg.extra_qemu_args.clone(),
        ..QemuArgs::new(cfg.accel, &cfg.kernel, console)
    }
}

/// QEMU's arguments (after the prefix) for a run whose serial sockets are in `dir`.
pub fn qemu_args(cfg: &GuestConfig, dir: &Path) -> Vec<String> {
    let console = SerialSink::Socket(serial_socket(dir, SerialPort::Console));
    let ktap = SerialSink::Socket(serial_socket(dir, SerialPort::Ktap));
    launch_args(cfg, console, Some(ktap)).args()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vm_images::launch::Accel;

    fn cfg() -> GuestConfig {
        GuestConfig {
            kernel: "/k".into(),
            initramfs: "/i".into(),
            append: "quiet".into(),
            accel: Accel::Tcg,
            iommu: true,
            pci_hole64: 1 << 36,
            phys_bits: 40,
            device_socket: "/d/dev.sock".into(),
            memory_mib: 1024,
            cpus: 1,
            timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            progress_timeout: Duration::from_secs(1),
            echo_console: false,
            extra_qemu_args: vec!["-s".into()],
        }
    }

    #[test]
    fn iommu_precedes_the_device_and_serials_are_separate() {
        let a = qemu_args(&cfg(), Path::new("/run"));
        let iommu = a.iter().position(|s| s.starts_with("intel-iommu")).unwrap();
        let dev = a.iter().position(|s| s.contains("vfio-user-pci")).unwrap();
        assert!(iommu < dev);
        assert!(a.contains(&"chardev:console".to_string()));
        assert!(a.contains(&"chardev:ktap".to_string()));
        assert!(a.contains(&"socket,id=ktap,path=/run/ktap.sock".to_string()));
        assert!(a.contains(&"max,phys-bits=40".to_string()));
        let dev_json: serde_json::Value = serde_json::from_str(&a[dev]).unwrap();
        assert_eq!(dev_json["socket"]["path"], "/d/dev.sock");
    }

    #[test]
    fn cmdline_has_console_iommu_and_extra() {
        let c = kernel_cmdline(&cfg());
        assert!(c.starts_with("console=ttyS0"));
        assert!(c.contains("intel_iommu=on"));
        assert!(!c.contains("watchdog_thresh"), "{c}");
        assert!(
            c.contains(" sysctl.kernel.hung_task_timeout_secs=20"),
            "{c}"
        );
        assert!(c.ends_with(" quiet"));
        let mut no = cfg();
        no.iommu = false;
        assert!(!kernel_cmdline(&no).contains("intel_iommu"));
    }
}
