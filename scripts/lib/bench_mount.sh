# shellcheck shell=bash
# The mount cases of scripts/bench.sh (sourced by it; uses its SM, RCLONE,
# AWS, EP, KEY, SECRET, WORK, BIG_MIB, FILES and its mb/row helpers).
#
# Each tool mounts the same bucket of the same s3s-fs server:
#   syncmount    syncmount mount (defaults: 512 MiB memory cache, 1 s TTL)
#   rclone-off   rclone mount --vfs-cache-mode off
#   rclone-full  rclone mount --vfs-cache-mode full
#   s3fs         s3fs (Debian package), path-style
# A fresh mount (and dropped page cache) before each cold case, so no tool
# reads from a cache warmed by an earlier case.

MOUNT_TOOLS=(syncmount rclone-off rclone-full s3fs)

bench_mount_tools() {
    command -v fio >/dev/null || sm_apt_install fio
    command -v s3fs >/dev/null || sm_apt_install s3fs
    sm_install_fuse
}

mounted() { grep -q " $1 fuse" /proc/mounts; }

# mount_with TOOL DIR: mounts bucket `mnt` at DIR and waits until it is there.
mount_with() {
    local tool=$1 dir=$2
    mkdir -p "$dir"
    case $tool in
        syncmount | syncmount-la)
            local extra=()
            [ "$tool" = syncmount-la ] && extra=(--listing-attributes)
            "$SM" mount "s3://${BUCKET:-mnt}" "$dir" --endpoint-url "$EP" --state-dir "$WORK/state-mount" "${extra[@]}" >"$WORK/mount-$tool.out" 2>&1 \
                || die "syncmount mount failed: $(cat "$WORK/mount-$tool.out")" ;;
        rclone-off)
            "$RCLONE" mount "$(rc_remote "${BUCKET:-mnt}")" "$dir" --vfs-cache-mode off --daemon ;;
        rclone-full)
            "$RCLONE" mount "$(rc_remote "${BUCKET:-mnt}")" "$dir" --vfs-cache-mode full --cache-dir "$WORK/rclone-cache" --daemon ;;
        s3fs)
            s3fs "${BUCKET:-mnt}" "$dir" -o url="$EP" -o use_path_request_style -o passwd_file="$WORK/s3fs.passwd" ;;
    esac
    for _ in $(seq 1 300); do
        mounted "$dir" && return 0
        sleep 0.1
    done
    die "$tool did not mount at $dir"
}

unmount_dir() {
    local dir=$1
    fusermount3 -u "$dir" 2>/dev/null || fusermount3 -u -z "$dir" 2>/dev/null || true
    for _ in $(seq 1 100); do
        mounted "$dir" || break
        sleep 0.1
    done
    # The mount process may still be shutting down: let it go first.
    for _ in $(seq 1 100); do
        pgrep -f "mount .*$dir" >/dev/null || break
        sleep 0.1
    done
    rm -rf "$WORK/rclone-cache"
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

# fio_read DIR MODE [FILE]: prints "MB_per_s iops" of a read job over the big
# object (FILE, relative to DIR, default big/big.bin).
# The cold cases are cold because the page cache was dropped and the mount
# is fresh; fio's own invalidation (posix_fadvise DONTNEED) is off, since on
# a FUSE file it also threw away what the job had just read, so the warm
# re-read measured nothing but a second cold read.
fio_read() {
    local file=$1/${3:-big/big.bin} mode=$2 out
    if [ "$mode" = seq ] || [ "$mode" = reread ]; then
        out=$(fio --name=seq --filename="$file" --readonly --rw=read --bs=1M --ioengine=psync --size="${BIG_MIB}M" --invalidate=0 --output-format=json)
    else
        # rand-direct: O_DIRECT, so every read reaches the mount (a mount
        # that keeps the page cache would otherwise be compared, in part,
        # on the kernel's cache against one that does not).
        local direct=0
        [ "$mode" = rand-direct ] && direct=1
        out=$(fio --name=rand --filename="$file" --readonly --invalidate=0 --direct=$direct --rw=randread --bs=4k --ioengine=psync --size="${BIG_MIB}M" --runtime=15 --time_based --output-format=json)
    fi
    python3 -c 'import json,sys; r=json.load(sys.stdin)["jobs"][0]["read"]; print(round(r["bw_bytes"]/1e6,1), round(r["iops"]))' <<<"$out"
}

# seconds of a shell command line
timed() {
    python3 - "$1" <<'PY'
import subprocess, sys, time
t = time.monotonic()
subprocess.run(["bash", "-c", sys.argv[1]], check=True, stdout=subprocess.DEVNULL)
print(f"{time.monotonic() - t:.3f}")
PY
}

# keys under PREFIX in bucket mnt
key_count() {
    local n
    n=$("$AWS" --endpoint-url "$EP" s3api list-objects-v2 --bucket "${BUCKET:-mnt}" --prefix "$1" --query 'length(Contents || `[]`)' --output text 2>/dev/null || true)
    case $n in ''|*[!0-9]*) echo 0 ;; *) echo "$n" ;; esac
}

# lslr_case TOOL DIR: "seconds=S" of ls -lR over the 10,000 small objects on
# a fresh mount (after one untimed listing to check the count, on another
# fresh mount), or "timeout" when a listing does not end within 300 s.
lslr_case() {
    local tool=$1 dir=$2 n
    drop_caches
    mount_with "$tool" "$dir"
    n=$(timeout -k 5 300 ls -lR "$dir/small" | grep -c '^-' || true)
    unmount_dir "$dir"
    if [ "$n" != "$FILES" ]; then
        echo "seconds=timeout_or_wrong_count files_seen=$n"
        return
    fi
    drop_caches
    mount_with "$tool" "$dir"
    echo "seconds=$(timed "timeout -k 5 300 ls -lR '$dir/small'")"
    unmount_dir "$dir"
}

# cpin_case TOOL DIR: "seconds=S until_in_bucket_s=T" of cp -r of the 1,000
# files into a fresh mount: until cp returns, and until every object is in
# the bucket (rclone's full cache mode uploads after close, in the background).
cpin_case() {
    local tool=$1 dir=$2 t0 t_cp t_all waited=0
    mount_with "$tool" "$dir"
    t0=$(date +%s.%N)
    t_cp=$(timed "timeout -k 5 300 cp -r '$WORK/cp1000' '$dir/cpin-$tool'" 2>/dev/null || echo failed)
    while [ "$t_cp" != failed ] && [ "$(key_count "cpin-$tool/")" -lt 1000 ] && [ $waited -lt 1500 ]; do
        sleep 0.2
        waited=$((waited + 1))
    done
    t_all=$(python3 -c "import time; print(f'{time.time() - $t0:.3f}')")
    unmount_dir "$dir"
    echo "seconds=$t_cp until_in_bucket_s=$t_all"
}

# ls -lR again on rclone serve s3 (a directory served as a bucket): s3s-fs
# answers 500 to a HEAD of a directory's name, which s3fs retries for
# minutes, so the ls -lR comparison with s3fs needs a server that does not.
bench_lslr_rclone_server() {
    local port
    read -r port < <(sm_free_ports 1)
    mkdir -p "$WORK/rcs3/mnt2"
    cp -r "$WORK/small" "$WORK/rcs3/mnt2/small"
    "$RCLONE" serve s3 --auth-key "$KEY,$SECRET" --addr "127.0.0.1:$port" "$WORK/rcs3" >"$WORK/rcs3.log" 2>&1 &
    SM_PIDS+=($!)
    sm_wait_http "rclone serve s3" "http://127.0.0.1:$port/" "$!" "$WORK/rcs3.log"
    local saved_ep=$EP
    EP="http://127.0.0.1:$port" BUCKET=mnt2
    # syncmount-la: syncmount --listing-attributes (no HEAD per file).
    for tool in "${MOUNT_TOOLS[@]}" syncmount-la; do
        log "ls -lR on rclone serve s3: $tool"
        row "m-lslr-rcs3 $tool $(lslr_case "$tool" "$WORK/mnt")"
    done
    # s3fs cannot write into s3s-fs either: cp -r in, here too.
    for tool in "${MOUNT_TOOLS[@]}"; do
        log "cp -r in on rclone serve s3: $tool"
        row "m-cpin-rcs3 $tool $(cpin_case "$tool" "$WORK/mnt")"
    done
    EP=$saved_ep
    unset BUCKET
}

bench_mount() {
    bench_mount_tools
    log "mount cases: data into bucket mnt"
    mb mnt
    "$SM" sync "$WORK/small" s3://mnt/small "${SM_ARGS[@]}" >/dev/null 2>&1
    "$SM" sync "$WORK/big" s3://mnt/big "${SM_ARGS[@]}" >/dev/null 2>&1
    python3 - "$WORK/cp1000" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(1000):
    d = os.path.join(root, f"d{i // 100:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:04d}"), "wb") as f:
        f.write(os.urandom(16384))
PY
    echo "$KEY:$SECRET" >"$WORK/s3fs.passwd"
    chmod 600 "$WORK/s3fs.passwd"
    local dir="$WORK/mnt"
    for tool in "${MOUNT_TOOLS[@]}"; do
        [ "${MOUNT_CASES:-all}" = rcs3 ] && break
        log "mount: $tool"
        drop_caches
        mount_with "$tool" "$dir"
        read -r mbps _ < <(fio_read "$dir" seq)
        row "m-seq $tool MB_per_s=$mbps"
        read -r mbps _ < <(fio_read "$dir" reread)
        row "m-reread $tool MB_per_s=$mbps"
        unmount_dir "$dir"
        [ "${MOUNT_CASES:-all}" = read ] && continue

        drop_caches
        mount_with "$tool" "$dir"
        read -r _ iops < <(fio_read "$dir" rand)
        row "m-rand $tool iops=$iops"
        unmount_dir "$dir"

        row "m-lslr $tool $(lslr_case "$tool" "$dir")"

        row "m-cpin $tool $(cpin_case "$tool" "$dir")"
    done
    bench_lslr_rclone_server
}
