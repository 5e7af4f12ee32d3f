#!/usr/bin/env bash
# CI step: gather what the run left for upload, whatever happened to it.
#
# Runs after the run step even when it failed (GitHub: `if: always()`, GitLab:
# after_script), because a failed run is when the console log matters most.
# It makes sure the artifact paths exist (a run that died before writing
# anything would otherwise make the upload itself fail and hide the real
# error), puts a copy of results.xml into the out directory so that directory
# alone is a complete record, and prints what will be uploaded. It always
# exits 0: the job's verdict is the run step's, not this one's.
#
# Arguments: the out directory (default bigbar-out) and the JUnit file
# (default results.xml), relative to the current directory.
set -uo pipefail

out=${1:-bigbar-out}
junit=${2:-results.xml}

mkdir -p "$out" || exit 0
if [ -f "$junit" ]; then
    cp "$junit" "$out/" || true
else
    echo "collect: no $junit: the run ended before writing its JUnit report" >&2
fi
if [ ! -f "$out/exit-status" ]; then
    echo "collect: no $out/exit-status: the run step did not finish" >&2
fi
echo "collect: uploading $out:"
(cd "$out" && find . -type f | LC_ALL=C sort | sed 's/^\.\//  /')
exit 0
