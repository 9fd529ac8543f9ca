#!/usr/bin/env bash
# Runs syncmount's whole test suite against real local S3 servers.
#
#   bash scripts/test.sh [ARGS...]     # ARGS are passed to `cargo test`
#
# What it does:
#   1. installs what the tests need, each piece only if it is missing (cached
#      between runs under $SYNCMOUNT_TEST_CACHE, default ~/.cache/syncmount-test):
#        - fuse3 (fusermount3) from Debian's packages, for the mount tests;
#        - moto server (Python, from PyPI) in a venv: STS, several accounts,
#          tagging, hostile keys;
#        - s3s-fs (Rust, from crates.io): the most faithful S3 data path here.
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

CACHE="${SYNCMOUNT_TEST_CACHE:-$HOME/.cache/syncmount-test}"
MOTO_SPEC='moto[server]>=5,<6'
S3S_FS_VERSION='0.14.1' # newer releases need a newer rustc than this machine's
VENV="$CACHE/venv"
MOTO_SERVER="$VENV/bin/moto_server"
S3S_FS_ROOT="$CACHE/s3s-fs"
S3S_FS="$S3S_FS_ROOT/bin/s3s-fs"
# s3s-fs wants an access key of at least 8 characters.
S3S_ACCESS_KEY='syncmount-test-key'
S3S_SECRET_KEY='syncmount-test-secret'
SERVER_START_TIMEOUT=30 # seconds

log() { echo "test.sh: $*"; }
die() {
    echo "test.sh: error: $*" >&2
    exit 1
}

# Runs a command as root (directly, or through sudo when we are not root).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $*"
    fi
}

mkdir -p "$CACHE"

# --- 1. Dependencies ---------------------------------------------------------

if command -v fusermount3 >/dev/null 2>&1; then
    log "fuse3: already installed ($(command -v fusermount3))"
else
    log "fuse3: installing with apt-get (for the FUSE mount tests)"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y fuse3
fi

if [ -x "$MOTO_SERVER" ]; then
    log "moto server: already installed in $VENV"
else
    log "moto server: creating a venv at $VENV and installing '$MOTO_SPEC' from PyPI"
    if ! python3 -m venv "$VENV"; then
        # Debian's own python3 ships venv support separately.
        log "moto server: python3 -m venv failed, installing python3-venv with apt-get"
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$MOTO_SPEC"
    [ -x "$MOTO_SERVER" ] || die "moto server: $MOTO_SERVER missing after pip install"
fi

if [ -x "$S3S_FS" ]; then
    log "s3s-fs: already installed at $S3S_FS"
else
    log "s3s-fs: building s3s-fs@$S3S_FS_VERSION with cargo install (takes a few minutes)"
    cargo install "s3s-fs@$S3S_FS_VERSION" --locked --features binary --root "$S3S_FS_ROOT"
    [ -x "$S3S_FS" ] || die "s3s-fs: $S3S_FS missing after cargo install"
fi

# --- 2. Start the servers ----------------------------------------------------

# Two distinct free TCP ports on 127.0.0.1 (both sockets are held open together
# so the kernel cannot hand out the same port twice).
read -r MOTO_PORT S3S_PORT < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/syncmount-test.XXXXXX")"
S3S_DATA="$WORK_DIR/s3s-data"
mkdir -p "$S3S_DATA"
MOTO_LOG="$WORK_DIR/moto.log"
S3S_LOG="$WORK_DIR/s3s-fs.log"
MOTO_PID=""
S3S_PID=""

# On any exit (success, failure, Ctrl-C): stop the servers we started and
# remove their data and logs.
cleanup() {
    local pid
    for pid in "$MOTO_PID" "$S3S_PID"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$WORK_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits until the server answers HTTP at URL (any status code will do: an
# anonymous request may well get 403). Prints the log and exits on timeout.
wait_for_http() {
    local name="$1" url="$2" pid="$3" logfile="$4"
    local deadline=$((SECONDS + SERVER_START_TIMEOUT))
    while ! curl --silent --output /dev/null --max-time 2 "$url"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "---- $name log ($logfile) ----" >&2
            cat "$logfile" >&2 || true
            die "$name exited before answering at $url"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "---- $name log ($logfile) ----" >&2
            cat "$logfile" >&2 || true
            die "$name did not answer HTTP at $url within ${SERVER_START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    log "$name: ready at $url"
}

log "moto server: starting on 127.0.0.1:$MOTO_PORT (log: $MOTO_LOG)"
"$MOTO_SERVER" -H 127.0.0.1 -p "$MOTO_PORT" >"$MOTO_LOG" 2>&1 </dev/null &
MOTO_PID=$!

log "s3s-fs: starting on 127.0.0.1:$S3S_PORT, data in $S3S_DATA (log: $S3S_LOG)"
"$S3S_FS" --host 127.0.0.1 --port "$S3S_PORT" \
    --access-key "$S3S_ACCESS_KEY" --secret-key "$S3S_SECRET_KEY" \
    "$S3S_DATA" >"$S3S_LOG" 2>&1 </dev/null &
S3S_PID=$!

wait_for_http "moto server" "http://127.0.0.1:$MOTO_PORT/" "$MOTO_PID" "$MOTO_LOG"
wait_for_http "s3s-fs" "http://127.0.0.1:$S3S_PORT/" "$S3S_PID" "$S3S_LOG"

# --- 3. Run the tests --------------------------------------------------------

export SYNCMOUNT_TEST_MOTO_URL="http://127.0.0.1:$MOTO_PORT"
export SYNCMOUNT_TEST_S3S_URL="http://127.0.0.1:$S3S_PORT"
export SYNCMOUNT_TEST_S3S_ACCESS_KEY="$S3S_ACCESS_KEY"
export SYNCMOUNT_TEST_S3S_SECRET_KEY="$S3S_SECRET_KEY"

log "running: cargo test --no-fail-fast $*"
status=0
cargo test --no-fail-fast "$@" || status=$?
log "cargo test exited with status $status"
exit "$status"
