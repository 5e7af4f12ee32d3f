#!/usr/bin/env bash
# CI step: make /dev/kvm usable by the job's user where the runner has KVM.
#
# GitHub's ubuntu runners have /dev/kvm, but owned by root:kvm with mode 0660
# and the job's user outside the kvm group, so QEMU could not open it and the
# run would fall back to TCG (several times slower). The documented fix is a
# udev rule giving the device mode 0666. Where /dev/kvm is missing (most
# GitLab shared runners) this step does nothing: the runner probes KVM itself
# and uses TCG, so a missing KVM is never an error here.
#
# Environment:
#   BIGBAR_KVM_DEV  the device to check (default /dev/kvm); tests point it at
#                   a scratch file to take each branch
#   BIGBAR_DRY_RUN  when 1, print the privileged commands instead of running
#                   them (tests, and a reviewer wanting to see what it does)
set -euo pipefail

dev=${BIGBAR_KVM_DEV:-/dev/kvm}
dry=${BIGBAR_DRY_RUN:-0}

# Runs a command, as root when we are not already; or prints it in a dry run.
as_root() {
    if [ "$dry" = 1 ]; then
        echo "dry run: $*"
    elif [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

if [ ! -e "$dev" ]; then
    echo "enable-kvm: no $dev on this runner: bigbar will use TCG"
    exit 0
fi
if [ -r "$dev" ] && [ -w "$dev" ]; then
    echo "enable-kvm: $dev is already usable"
    exit 0
fi

echo "enable-kvm: $dev is not usable by $(id -un); adding a udev rule"
rule='KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"'
if [ "$dry" = 1 ]; then
    echo "dry run: echo '$rule' > /etc/udev/rules.d/99-kvm4all.rules"
else
    echo "$rule" | as_root tee /etc/udev/rules.d/99-kvm4all.rules >/dev/null
fi
as_root udevadm control --reload-rules
as_root udevadm trigger --name-match=kvm
# Not fatal: the runner falls back to TCG, and says why, if KVM stays closed.
if [ "$dry" != 1 ] && ! { [ -r "$dev" ] && [ -w "$dev" ]; }; then
    echo "enable-kvm: $dev is still not usable; bigbar will use TCG"
fi
