# shellcheck shell=bash
# The read-speed cases of issue 12 (sourced by scripts/bench.sh: uses its SM,
# RCLONE, AWS, KEY, SECRET, WORK, BIG_MIB, FILES, SM_ARGS and its helpers
# row/measure, and scripts/lib/bench_mount.sh's mount helpers):
# syncmount mount (defaults) against mountpoint-s3 (built from source by
# scripts/lib/mountpoint_s3.sh), on one `rclone serve s3` (a local directory
# served as a bucket; no delayed-ACK stall, unlike s3s-fs), same data, same
# run, PEER_ROUNDS rounds (default 3) with the tools' order alternating.
#
#   p-seq     1 GiB object, cold sequential read (fio, 1 MiB reads)  MB/s,
#             and the mount process's peak RSS over the mount's life
#   p-par4    4 different 1 GiB objects read at once, one fio job each:
#             total bytes / the slowest job's time                    MB/s
#   p-rand    random 4 KiB reads of the 1 GiB object for 15 s, O_DIRECT
#             (every read reaches the mount; mountpoint-s3 keeps no page
#             cache, syncmount does)                                  IOPS
#   p-lslr    ls -lR of the 10,000 objects `syncmount sync` wrote, fresh
#             mount (syncmount with the state dir that sync used)   seconds
#
# Every case on a fresh mount after dropping the kernel's caches.

# shellcheck source=scripts/lib/mountpoint_s3.sh
source "$REPO_ROOT/scripts/lib/mountpoint_s3.sh"

PEER_TOOLS=(syncmount mountpoint-s3)

# peer_mount TOOL DIR: mounts bucket `peer` at DIR, waits for it, and sets
# PEER_PID to the process serving it.
peer_mount() {
    local tool=$1 dir=$2
    mkdir -p "$dir"
    case $tool in
        syncmount)
            "$SM" mount s3://peer "$dir" --endpoint-url "$PEER_EP" --state-dir "$WORK/peer-state" >"$WORK/peer-mount.out" 2>&1 \
                || die "syncmount mount failed: $(cat "$WORK/peer-mount.out")" ;;
        mountpoint-s3)
            "$MOUNT_S3" peer "$dir" --endpoint-url "$PEER_EP" --force-path-style --region us-east-1 >"$WORK/peer-mount.out" 2>&1 \
                || die "mount-s3 failed: $(cat "$WORK/peer-mount.out")" ;;
    esac
    for _ in $(seq 1 300); do
        mounted "$dir" && break
        sleep 0.1
    done
    mounted "$dir" || die "$tool did not mount at $dir"
    case $tool in
        syncmount) PEER_PID=$(pgrep -n -f -- "mount s3://peer $dir .*--foreground") ;;
        mountpoint-s3) PEER_PID=$(pgrep -n -f -- "mount-s3 peer $dir") ;;
    esac
    [ -n "$PEER_PID" ] || die "$tool: no process found serving $dir"
}

peer_unmount() {
    local dir=$1 pid=$PEER_PID
    fusermount3 -u "$dir" 2>/dev/null || fusermount3 -u -z "$dir" 2>/dev/null || true
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && die "the mount process $pid did not exit after unmounting $dir"
    return 0
}

# Peak RSS (MiB) of the mount process so far.
peer_hwm_mib() {
    awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$PEER_PID/status"
}

# p-par4: the four objects read at once; prints total MB/s.
peer_par4() {
    local dir=$1 args=() i
    for i in 0 1 2 3; do
        args+=(--name="r$i" --filename="$dir/big/big$i.bin")
    done
    fio --readonly --rw=read --bs=1M --ioengine=psync --size="${BIG_MIB}M" --invalidate=0 \
        --output-format=json "${args[@]}" \
        | python3 -c '
import json, sys
jobs = json.load(sys.stdin)["jobs"]
total = sum(j["read"]["io_bytes"] for j in jobs)
slowest = max(j["read"]["runtime"] for j in jobs) / 1000
print(round(total / slowest / 1e6, 1))'
}

bench_mount_peer() {
    trap 'fusermount3 -u -z "$WORK/peer-mnt" 2>/dev/null || true; sm_cleanup' EXIT
    command -v fio >/dev/null || sm_apt_install fio
    sm_install_fuse
    sm_install_mountpoint_s3

    local port
    read -r port < <(sm_free_ports 1)
    mkdir -p "$WORK/peer-s3/peer"
    "$RCLONE" serve s3 --auth-key "$KEY,$SECRET" --addr "127.0.0.1:$port" "$WORK/peer-s3" >"$WORK/peer-s3.log" 2>&1 &
    SM_PIDS+=($!)
    sm_wait_http "rclone serve s3" "http://127.0.0.1:$port/" "$!" "$WORK/peer-s3.log"
    PEER_EP="http://127.0.0.1:$port"

    # The large objects go straight into the served directory: rclone serve
    # s3 1.75 answers CreateMultipartUpload with a wrongly named XML root
    # (InitiateMultipartUpload), which the AWS SDK rejects, so no client's
    # multipart upload works there. The small ones are written by sync.
    log "peer cases: 4 x $BIG_MIB MiB objects and $FILES small ones (syncmount sync) into bucket peer"
    mkdir -p "$WORK/peer-s3/peer/big"
    local i
    for i in 0 1 2 3; do
        head -c "$((BIG_MIB * 1024 * 1024))" /dev/urandom >"$WORK/peer-s3/peer/big/big$i.bin"
    done
    "$SM" sync "$WORK/small" s3://peer/small --endpoint-url "$PEER_EP" --state-dir "$WORK/peer-state" >/dev/null

    local dir="$WORK/peer-mnt" round tools tool out mbps iops n
    for round in $(seq 1 "${PEER_ROUNDS:-3}"); do
        tools=("${PEER_TOOLS[@]}")
        [ $((round % 2)) -eq 0 ] && tools=("${PEER_TOOLS[1]}" "${PEER_TOOLS[0]}")
        for tool in "${tools[@]}"; do
            log "peer round $round: $tool"
            drop_caches
            peer_mount "$tool" "$dir"
            read -r mbps _ < <(fio_read "$dir" seq big/big0.bin)
            row "p-seq $tool round=$round MB_per_s=$mbps peak_rss_mib=$(peer_hwm_mib)"
            peer_unmount "$dir"

            drop_caches
            peer_mount "$tool" "$dir"
            row "p-par4 $tool round=$round MB_per_s=$(peer_par4 "$dir")"
            peer_unmount "$dir"

            drop_caches
            peer_mount "$tool" "$dir"
            read -r _ iops < <(fio_read "$dir" rand-direct big/big0.bin)
            row "p-rand $tool round=$round iops=$iops"
            peer_unmount "$dir"

            drop_caches
            peer_mount "$tool" "$dir"
            n=$(timeout -k 5 300 ls -lR "$dir/small" | grep -c '^-' || true)
            peer_unmount "$dir"
            [ "$n" = "$FILES" ] || die "$tool: ls -lR saw $n files of $FILES"
            drop_caches
            peer_mount "$tool" "$dir"
            out=$(timed "timeout -k 5 300 ls -lR '$dir/small'")
            row "p-lslr $tool round=$round seconds=$out"
            peer_unmount "$dir"
        done
    done
}
