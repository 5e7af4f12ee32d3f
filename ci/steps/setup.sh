#!/usr/bin/env bash
# CI step: check the host has what bigbar needs, and install nothing.
#
# bigbar fetches QEMU, the Debian kernel and busybox into its store
# ($BIGBAR_CACHE, else ~/.cache/bigbar) itself (with apt-get download and
# dpkg-deb into it, never onto the host), so the job needs no `apt-get install`: only a Rust toolchain, gcc and make,
# which GitHub's ubuntu images and the rust Docker image both have. Checking
# them first turns a missing tool into one clear line instead of a failure deep
# in a build.
set -euo pipefail

missing=()
for tool in cargo rustc gcc make; do
    if command -v "$tool" >/dev/null 2>&1; then
        echo "setup: $tool: $("$tool" --version 2>&1 | head -n 1)"
    else
        missing+=("$tool")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: missing on this runner: ${missing[*]} (bigbar needs a Rust toolchain, gcc and make)" >&2
    exit 1
fi
