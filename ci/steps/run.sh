#!/usr/bin/env bash
# CI step: run bigbar on Debian sid's kernel, judged against the known defects.
#
# The options are the README's ("CI verdicts: baselines, compare, flakiness"):
# with --baseline the exit status is 0 unless something the baseline does not
# know happened (a regression, an unknown crash, a hang, an untestable kernel),
# so the job fails exactly then. Run from the repository root; extra arguments
# are passed to the runner (e.g. -v).
#
# Environment:
#   BIGBAR_RUNNER  the runner command (default: cargo run --locked -p runner --).
#                  Tests set it to a stub that writes a fake results.xml, so the
#                  only part of this step they replace is the guest run itself.
set -euo pipefail

if [ -n "${BIGBAR_RUNNER:-}" ]; then
    runner=("$BIGBAR_RUNNER")
else
    runner=(cargo run --locked -p runner --)
fi

# The runner's exit status is the step's; `|| status=$?` keeps set -e from
# ending the script before the status is recorded for the collect step.
status=0
"${runner[@]}" --kernel debian:sid --baseline expectations/debian.toml \
    --junit results.xml --out bigbar-out "$@" || status=$?
mkdir -p bigbar-out
echo "$status" > bigbar-out/exit-status
echo "run: the runner exited $status (see README.md, 'Runner options and exit status')"
exit "$status"
