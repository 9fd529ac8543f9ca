#!/usr/bin/env bash
# Runs syncmount's whole test suite against real local S3 servers.
#
#   bash scripts/test.sh [ARGS...]     # ARGS are passed to `cargo test`
#
# What it does:
#   1. installs what the tests need, each piece only if it is missing (cached
#      between runs under $SYNCMOUNT_TEST_CACHE, default ~/.cache/syncmount-test):
#        - fuse3 (fusermount3) from Debian's packages, for the mount tests;
#        - systemd-analyze (Debian package systemd), to verify the units in systemd/;
#        - rsync from Debian's packages, used by the mount tests as a shell
#          user would (cp, tar, find, du and python3 are already there);
#        - moto server (Python, from PyPI) in a venv: STS, several accounts,
#          tagging, hostile keys;
#        - s3s-fs (Rust, from crates.io): the most faithful S3 data path here;
#        - prometheus_client (Python, from PyPI, same venv): its parser checks
#          the metrics exposition.
#   2. starts both servers on free loopback ports, with their data and logs in a
#      temporary directory that is removed on exit (the servers are stopped too);
#   3. exports their addresses and credentials as SYNCMOUNT_TEST_* variables,
#      which tests/common/mod.rs reads, and runs `cargo test --no-fail-fast`.
#
# Nothing here relies on a tool installed by hand: a fresh Debian 12 machine
# (as root) with the Rust toolchain, python3 and access to the package
# registries is enough. See shared/TESTING.md for the servers' quirks.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
# shellcheck source=scripts/lib/servers.sh
source "$REPO_ROOT/scripts/lib/servers.sh"

# s3s-fs wants an access key of at least 8 characters.
S3S_ACCESS_KEY='syncmount-test-key'
S3S_SECRET_KEY='syncmount-test-secret'

# --- 1. Dependencies ---------------------------------------------------------
sm_install_fuse
sm_install_tool systemd-analyze systemd
sm_install_tool rsync
sm_install_test_tools
sm_install_s3s_fs

# --- 2. Start the servers ----------------------------------------------------
read -r MOTO_PORT S3S_PORT MOTO_IAM_PORT < <(sm_free_ports 3)
sm_work_dir test WORK_DIR
sm_start_moto "$MOTO_PORT" "$WORK_DIR/moto.log"
# A second moto for the access tests: they switch its IAM enforcement on,
# which would refuse every other test's requests on a shared server.
sm_start_moto "$MOTO_IAM_PORT" "$WORK_DIR/moto-iam.log"
sm_start_s3s_fs "$S3S_PORT" "$WORK_DIR/s3s-data" "$WORK_DIR/s3s-fs.log" "$S3S_ACCESS_KEY" "$S3S_SECRET_KEY"

# --- 3. Run the tests --------------------------------------------------------
export SYNCMOUNT_TEST_MOTO_URL="http://127.0.0.1:$MOTO_PORT"
export SYNCMOUNT_TEST_MOTO_IAM_URL="http://127.0.0.1:$MOTO_IAM_PORT"
export SYNCMOUNT_TEST_S3S_URL="http://127.0.0.1:$S3S_PORT"
export SYNCMOUNT_TEST_S3S_ACCESS_KEY="$S3S_ACCESS_KEY"
export SYNCMOUNT_TEST_S3S_SECRET_KEY="$S3S_SECRET_KEY"
export SYNCMOUNT_TEST_PYTHON="$SM_VENV/bin/python"

status=0
if [ $# -gt 0 ]; then
    log "running: cargo test --no-fail-fast $*"
    cargo test --no-fail-fast "$@" || status=$?
else
    # The tests of a binary run as threads of one process, so a child one
    # test starts inherits (until it execs) the descriptors another test has
    # open on a mount, and closing them flushes - uploads - that test's open
    # files at a moment it does not expect. The binaries whose tests hold
    # files open through mounts run one test at a time; the rest in parallel.
    serial=() parallel=()
    for f in tests/*.rs; do
        name=$(basename "$f" .rs)
        case $name in
            mount_* | daemon_mounts | local_links_outside_root) serial+=(--test "$name") ;;
            *) parallel+=(--test "$name") ;;
        esac
    done
    log "running: cargo test --no-fail-fast --lib --bins --examples ${parallel[*]}"
    cargo test --no-fail-fast --lib --bins --examples "${parallel[@]}" || status=$?
    log "running: cargo test --no-fail-fast ${serial[*]} -- --test-threads=1"
    cargo test --no-fail-fast "${serial[@]}" -- --test-threads=1 || status=$?
fi
log "cargo test exited with status $status"
exit "$status"
