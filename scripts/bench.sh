#!/usr/bin/env bash
# Benchmarks syncmount against its peers on one local S3 server, in one run.
#
#   bash scripts/bench.sh [sync|mount|mount-peer|two-way|all] [--quick]   (default: all)
#
# Server: s3s-fs (the fast, light one; never moto, which keeps objects in
# memory and is slow). Peers: rclone sync (its defaults, and at syncmount's
# concurrency) and aws s3 sync. Every case runs each tool on the same server
# in the same run, so read the ratios, not the absolute times: the server
# shares the machine's two cores with the client.
#
# Cases (issue 2):
#   small-up   10,000 x 4 KiB local -> S3, first sync        (objects/s)
#   noop       the same tree again, nothing to do             (seconds)
#   big-up     one 1 GiB file local -> S3                     (MB/s)
#   big-down   that object S3 -> local                        (MB/s)
#   s3-s3      10,000 objects S3 -> S3 (and the 1 GiB object) (objects/s; bytes through the process)
#   throttle   --bytes-per-second 10 MB/s over a 20 s transfer (achieved rate)
#   diff-rss   peak memory of a 10-million-entry diff (synthetic listings)
#
# Mount cases (issue 3), each for syncmount mount, rclone mount
# (--vfs-cache-mode off, and full) and s3fs, mounted on the same server:
#   m-seq      sequential read of the 1 GiB object, cold (fio, 1 MiB blocks)  (MB/s)
#   m-reread   the same read again, warm                                      (MB/s)
#   m-rand     random 4 KiB reads of that object for 15 s (fio)               (IOPS)
#   m-lslr     ls -lR over the 10,000 objects, fresh mount                     (seconds)
#   m-cpin     cp -r of 1,000 x 16 KiB files into the mount                    (seconds)
#   m-lslr-rcs3  ls -lR again, on `rclone serve s3` (s3fs cannot list s3s-fs),
#              also for syncmount-la: syncmount mount --listing-attributes    (seconds)
#   m-cpin-rcs3  cp -r in again, on `rclone serve s3` (s3fs cannot write to s3s-fs)
# MOUNT_CASES=read runs only m-seq and m-reread (then the rcs3 cases);
# MOUNT_CASES=rcs3 only the rcs3 cases.
#
# Mount-peer cases (issue 12; scripts/lib/bench_mount_peer.sh): syncmount
# mount against mountpoint-s3 (built from its source) on `rclone serve s3`:
# cold sequential read of 1 GiB with the mount's peak RSS, four 1 GiB
# objects read at once, random 4 KiB reads, ls -lR of 10,000 objects written
# by sync; PEER_ROUNDS rounds (default 3). MOUNT_S3=/path/to/mount-s3 uses
# a ready binary; MOUNTPOINT_S3_SRC a local copy of its repository.
#
# Two-way cases (issue 10; scripts/lib/bench_two_way.sh): syncmount sync
# --two-way against rclone bisync over 100,000 small keys (first run, steady
# no-op, 1 % edited on each side; time and peak RSS, both sides checked
# after every run), and the peak RSS of the three-way merge over 10 million
# keys with a real base (examples/three_way_rss.rs). TW_KEYS, TW_DIRS and
# TW_RSS_KEYS override those sizes.
#
# SM_BEFORE=/path/to/another/syncmount adds it as the tool
# `syncmount-before` to the sync cases, in the same run: a change's cost
# (issue 20: every local path through directory descriptors) is its ratio to
# the binary before it.
#
# --quick runs 1,000 files and 128 MiB instead (two-way: 2,000 keys, and
# 100,000 for the merge's RSS), to try the script.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

FILES=10000
BIG_MIB=1024
WHAT=all
for arg in "$@"; do
    case $arg in
        --quick) FILES=1000; BIG_MIB=128; TW_KEYS=2000; TW_DIRS=20; TW_RSS_KEYS=100000 ;;
        sync|mount|mount-peer|two-way|all) WHAT=$arg ;;
        *) echo "usage: bench.sh [sync|mount|mount-peer|two-way|all] [--quick]" >&2; exit 2 ;;
    esac
done
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"

# shellcheck source=scripts/lib/servers.sh
source "$REPO_ROOT/scripts/lib/servers.sh"
KEY=bench-access-key
SECRET=bench-secret-key

# --- tools -------------------------------------------------------------------
sm_install_s3s_fs
sm_install_peers
command -v /usr/bin/time >/dev/null || sm_apt_install time
log "building syncmount (release)"
cargo build --release --quiet --bin syncmount --example diff_rss --example three_way_rss
SM="$TARGET_DIR/release/syncmount"
RCLONE="$SM_BENCH_VENV/bin/rclone"
AWS="$SM_BENCH_VENV/bin/aws"

# --- server ------------------------------------------------------------------
sm_work_dir bench WORK
read -r PORT < <(sm_free_ports 1)
mkdir -p "$WORK/state"
sm_start_s3s_fs "$PORT" "$WORK/s3" "$WORK/s3s.log" "$KEY" "$SECRET"
EP="http://127.0.0.1:$PORT"

export AWS_ACCESS_KEY_ID="$KEY" AWS_SECRET_ACCESS_KEY="$SECRET" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent
# The trailing slash keeps rclone from HEADing the root to see whether it is
# a file: s3s-fs answers 500 for a key that is a directory on its disk, and
# rclone then retries for minutes, which would measure s3s-fs, not rclone.
rc_remote() { echo ":s3,provider=Other,endpoint='$EP',access_key_id=$KEY,secret_access_key=$SECRET:$1/"; }
mb() { "$AWS" --endpoint-url "$EP" s3 mb "s3://$1" >/dev/null; }

# Runs a command, prints "seconds peak_rss_kib io_bytes" (io: rchar+wchar of
# the process tree's main process, sampled until it exits).
measure() {
    python3 - "$@" <<'PY'
import subprocess, sys, time, resource
start = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
io = 0
while p.poll() is None:
    try:
        with open(f"/proc/{p.pid}/io") as f:
            d = dict(l.split(": ") for l in f.read().splitlines())
        io = max(io, int(d["rchar"]) + int(d["wchar"]))
    except OSError:
        pass
    time.sleep(0.02)
secs = time.monotonic() - start
err = p.stderr.read().decode(errors="replace")
if p.returncode != 0:
    sys.stderr.write(f"FAILED ({p.returncode}): {' '.join(sys.argv[1:])}\n{err[-2000:]}\n")
    sys.exit(1)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"{secs:.3f} {rss} {io}")
PY
}

RESULTS="$WORK/results.txt"
: >"$RESULTS"
row() { echo "$*" | tee -a "$RESULTS" >&2; }

# --- data ----------------------------------------------------------------------
make_data() {
log "making $FILES x 4 KiB files and a $BIG_MIB MiB file"
python3 - "$WORK/small" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 500:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        f.write(os.urandom(4096))
PY
mkdir -p "$WORK/big"
head -c "$((BIG_MIB * 1024 * 1024))" /dev/urandom >"$WORK/big/big.bin"
}

SM_ARGS=(--endpoint-url "$EP" --state-dir "$WORK/state")
# rclone's defaults are 4 transfers / 8 checkers; "equal" matches syncmount's 64.
RC_EQ=(--transfers 64 --checkers 64)

# tool name, then the command for: small-up (dest prefix given as $1)
case_small() {
    local tool=$1 bucket=$2
    mb "$bucket"
    case $tool in
        syncmount) set -- "$SM" sync "$WORK/small" "s3://$bucket/t" "${SM_ARGS[@]}" ;;
        syncmount-before) set -- "$SM_BEFORE" sync "$WORK/small" "s3://$bucket/t" "${SM_ARGS[@]}" ;;
        rclone) set -- "$RCLONE" sync "$WORK/small" "$(rc_remote "$bucket/t")" ;;
        rclone-eq) set -- "$RCLONE" sync "$WORK/small" "$(rc_remote "$bucket/t")" "${RC_EQ[@]}" ;;
        aws) set -- "$AWS" --endpoint-url "$EP" s3 sync --only-show-errors "$WORK/small" "s3://$bucket/t" ;;
    esac
    read -r s rss io < <(measure "$@")
    row "small-up $tool seconds=$s objects_per_s=$(python3 -c "print(round($FILES/$s))") rss_kib=$rss"
    read -r s rss io < <(measure "$@")
    row "noop $tool seconds=$s rss_kib=$rss"
    # Steady state: syncmount's pair cache is warm from here on (on s3s-fs,
    # whose listings carry no ETag, the first re-sync still HEADs).
    read -r s rss io < <(measure "$@")
    row "noop-again $tool seconds=$s rss_kib=$rss"
    # The same tree down into an empty directory: a file created, written,
    # given its mode and times and renamed per object.
    local down="$WORK/small-down-$tool"
    case $tool in
        syncmount) set -- "$SM" sync "s3://$bucket/t" "$down" "${SM_ARGS[@]}" ;;
        syncmount-before) set -- "$SM_BEFORE" sync "s3://$bucket/t" "$down" "${SM_ARGS[@]}" ;;
        rclone) set -- "$RCLONE" sync "$(rc_remote "$bucket/t")" "$down" ;;
        rclone-eq) set -- "$RCLONE" sync "$(rc_remote "$bucket/t")" "$down" "${RC_EQ[@]}" ;;
        aws) set -- "$AWS" --endpoint-url "$EP" s3 sync --only-show-errors "s3://$bucket/t" "$down" ;;
    esac
    read -r s rss io < <(measure "$@")
    row "small-down $tool seconds=$s objects_per_s=$(python3 -c "print(round($FILES/$s))") rss_kib=$rss"
    rm -rf "$down"
}

case_big() {
    local tool=$1 bucket=$2
    mb "$bucket"
    local down="$WORK/down-$tool"
    local up down_cmd
    case $tool in
        syncmount)
            up=("$SM" sync "$WORK/big" "s3://$bucket/b" "${SM_ARGS[@]}")
            down_cmd=("$SM" sync "s3://$bucket/b" "$down" "${SM_ARGS[@]}") ;;
        syncmount-before)
            up=("$SM_BEFORE" sync "$WORK/big" "s3://$bucket/b" "${SM_ARGS[@]}")
            down_cmd=("$SM_BEFORE" sync "s3://$bucket/b" "$down" "${SM_ARGS[@]}") ;;
        rclone)
            up=("$RCLONE" sync "$WORK/big" "$(rc_remote "$bucket/b")")
            down_cmd=("$RCLONE" sync "$(rc_remote "$bucket/b")" "$down") ;;
        rclone-eq)
            up=("$RCLONE" sync "$WORK/big" "$(rc_remote "$bucket/b")" "${RC_EQ[@]}" --s3-upload-concurrency 8 --multi-thread-streams 8)
            down_cmd=("$RCLONE" sync "$(rc_remote "$bucket/b")" "$down" "${RC_EQ[@]}" --multi-thread-streams 8) ;;
        aws)
            up=("$AWS" --endpoint-url "$EP" s3 sync --only-show-errors "$WORK/big" "s3://$bucket/b")
            down_cmd=("$AWS" --endpoint-url "$EP" s3 sync --only-show-errors "s3://$bucket/b" "$down") ;;
    esac
    read -r s rss io < <(measure "${up[@]}")
    row "big-up $tool seconds=$s MB_per_s=$(python3 -c "print(round($BIG_MIB*1.048576/$s,1))") rss_kib=$rss"
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    read -r s rss io < <(measure "${down_cmd[@]}")
    row "big-down $tool seconds=$s MB_per_s=$(python3 -c "print(round($BIG_MIB*1.048576/$s,1))") rss_kib=$rss"
    cmp "$WORK/big/big.bin" "$down/big.bin" || { log "big-down $tool: content differs"; exit 1; }
    rm -rf "$down"
}

case_s3s3() {
    local tool=$1 src=$2 dst=$3
    mb "$dst"
    case $tool in
        syncmount) set -- "$SM" sync "s3://$src" "s3://$dst/c" "${SM_ARGS[@]}" ;;
        rclone) set -- "$RCLONE" sync "$(rc_remote "$src")" "$(rc_remote "$dst/c")" ;;
        rclone-eq) set -- "$RCLONE" sync "$(rc_remote "$src")" "$(rc_remote "$dst/c")" "${RC_EQ[@]}" ;;
        aws) set -- "$AWS" --endpoint-url "$EP" s3 sync --only-show-errors "s3://$src" "s3://$dst/c" ;;
    esac
    read -r s rss io < <(measure "$@")
    row "s3-s3 $tool seconds=$s objects_per_s=$(python3 -c "print(round(($FILES+1)/$s))") io_mib=$(python3 -c "print(round($io/1048576,1))") payload_mib=$(python3 -c "print(round($FILES*4/1024+$BIG_MIB,1))") rss_kib=$rss"
}

bench_sync() {
    local tools=(syncmount rclone rclone-eq aws)
    if [ -n "${SM_BEFORE:-}" ]; then
        [ -x "$SM_BEFORE" ] || die "SM_BEFORE=$SM_BEFORE is not an executable"
        tools=(syncmount-before syncmount "${tools[@]:1}")
    fi
    for tool in "${tools[@]}"; do
        log "small files + no-op: $tool"
        case_small "$tool" "small-$tool"
    done
    for tool in "${tools[@]}"; do
        log "1 GiB up/down: $tool"
        case_big "$tool" "big-$tool"
    done
    # S3 -> S3 source: the small tree plus the big object, in one bucket.
    mb s3src
    "$SM" sync "$WORK/small" s3://s3src/small "${SM_ARGS[@]}" >/dev/null 2>&1
    "$SM" sync "$WORK/big" s3://s3src/big "${SM_ARGS[@]}" >/dev/null 2>&1
    for tool in syncmount rclone rclone-eq aws; do
        log "S3 -> S3: $tool"
        case_s3s3 "$tool" s3src "s3s3-$tool"
    done
    log "bandwidth limit: 20 s at 10 MB/s"
    mb throttle
    LIMIT=10000000
    mkdir -p "$WORK/throttle"
    head -c "$((LIMIT * 20))" /dev/urandom >"$WORK/throttle/t.bin"
    read -r s rss io < <(measure "$SM" sync "$WORK/throttle" s3://throttle/t "${SM_ARGS[@]}" --bytes-per-second "$LIMIT")
    row "throttle syncmount seconds=$s limit_Bps=$LIMIT achieved_Bps=$(python3 -c "print(round($LIMIT*20/$s))") deviation_pct=$(python3 -c "print(round(100*(($LIMIT*20/$s)/$LIMIT-1),1))")"

    log "diff of 10 million synthetic entries"
    row "diff-rss syncmount $("$TARGET_DIR/release/examples/diff_rss" 10000000)"
}

source "$REPO_ROOT/scripts/lib/bench_mount.sh"
# shellcheck source=scripts/lib/bench_mount_peer.sh
source "$REPO_ROOT/scripts/lib/bench_mount_peer.sh"
# shellcheck source=scripts/lib/bench_two_way.sh
source "$REPO_ROOT/scripts/lib/bench_two_way.sh"

case $WHAT in
    sync) make_data; bench_sync ;;
    mount) make_data; bench_mount ;;
    mount-peer) make_data; bench_mount_peer ;;
    two-way) bench_two_way ;;
    all) make_data; bench_sync; bench_mount; bench_mount_peer; bench_two_way ;;
esac

echo
case $WHAT in
    two-way) SIZES="$TW_KEYS two-way keys, merge over $TW_RSS_KEYS" ;;
    all) SIZES="$FILES files, $BIG_MIB MiB, $TW_KEYS two-way keys, merge over $TW_RSS_KEYS" ;;
    *) SIZES="$FILES files, $BIG_MIB MiB" ;;
esac
SERVER="s3s-fs 0.14.1"
[ "$WHAT" = mount-peer ] && SERVER="rclone serve s3 ($("$RCLONE" version 2>/dev/null | head -1))"
[ "$WHAT" = all ] && SERVER="s3s-fs 0.14.1 (mount-peer cases: rclone serve s3)"
echo "## Results ($(date -u +%Y-%m-%d), $(nproc) cores, $SERVER on 127.0.0.1, $WHAT: $SIZES)"
echo '```'
cat "$RESULTS"
echo '```'
