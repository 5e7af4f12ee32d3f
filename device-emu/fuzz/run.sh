#!/bin/sh
# Bounded, repeatable fuzz run of device-emu's vfio-user message handling.
#
#   device-emu/fuzz/run.sh [SECONDS] [-- extra libFuzzer flags]
#
# Runs the `messages` target for SECONDS (default 600) on one core, starting
# from the committed seed corpus (QEMU traffic, read-only) and a working
# corpus in fuzz/corpus/messages (not committed). Prints libFuzzer's final
# statistics; a crash leaves its input in fuzz/artifacts/messages and makes
# the script fail. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-600}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
cd "$here"
mkdir -p corpus/messages
# -rss_limit_mb: a session holds at most a 1 MiB message buffer and 12 MiB of
# BAR memory; -timeout: no single input may take more than 10 s.
exec cargo +nightly fuzz run messages corpus/messages seeds/messages -- \
    -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 \
    -max_len=65536 -print_final_stats=1 "$@"
