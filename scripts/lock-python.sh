#!/usr/bin/env bash
# Regenerates the Python lock files from their .in files:
#
#   bash scripts/lock-python.sh [PIP_COMPILE_ARGS...]
#
# makes scripts/requirements-{lock-tools,test,bench}.txt. A pin already in a
# .txt is kept unless its .in asks for another version, or unless asked:
# `--upgrade` takes PyPI's newest of everything, `--upgrade-package moto`
# of one package. Then run scripts/test.sh: the new lock's hash names a new venv, so the
# suite installs exactly what the lock says. Commit the .in and .txt together.
# pip-tools runs from a throwaway venv, installed from its own lock
# (requirements-lock-tools.txt, hashes included), which this script keeps
# up to date too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
tools="$(mktemp -d "${TMPDIR:-/tmp}/syncmount-lock.XXXXXX")"
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools"
"$tools/bin/pip" install --quiet --disable-pip-version-check \
    --require-hashes --no-deps --only-binary=:all: -r requirements-lock-tools.txt
for name in requirements-lock-tools requirements-test requirements-bench; do
    echo "lock-python.sh: $name.in -> $name.txt" >&2
    # PIP_FIND_LINKS of this machine is no part of the lock.
    PIP_FIND_LINKS='' "$tools/bin/pip-compile" --quiet --generate-hashes --allow-unsafe \
        --strip-extras --no-emit-index-url --no-emit-find-links \
        "$@" --output-file "$name.txt" "$name.in"
done
