#!/usr/bin/env bash
# Regenerates the Python lock files from their .in files:
#
#   bash scripts/lock-python.sh            # scripts/requirements-{test,bench}.txt
#
# Edit the .in file (a version there, or nothing to take PyPI's newest), run
# this, then run scripts/test.sh: the new lock's hash names a new venv, so the
# suite installs exactly what the lock says. Commit the .in and .txt together.
# pip-tools runs from a throwaway venv at a fixed version.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PIP_TOOLS='pip-tools==7.7.0'
tools="$(mktemp -d "${TMPDIR:-/tmp}/syncmount-lock.XXXXXX")"
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools"
"$tools/bin/pip" install --quiet --disable-pip-version-check "$PIP_TOOLS"
for name in requirements-test requirements-bench; do
    echo "lock-python.sh: $name.in -> $name.txt" >&2
    # PIP_FIND_LINKS of this machine is no part of the lock.
    PIP_FIND_LINKS='' "$tools/bin/pip-compile" --quiet --generate-hashes --allow-unsafe \
        --strip-extras --no-emit-index-url --no-emit-find-links \
        --output-file "$name.txt" "$name.in"
done
