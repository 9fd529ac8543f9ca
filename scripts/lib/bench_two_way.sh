# shellcheck shell=bash
# The two-way cases of scripts/bench.sh (issue 10; sourced by it; uses its
# SM, RCLONE, AWS, EP, KEY, SECRET, WORK, TARGET_DIR and its mb/row/
# rc_remote helpers).
#
# `syncmount sync A s3://tw-syncmount/p --two-way` against `rclone bisync A
# :s3:…:tw-rclone/p/` (rclone's defaults, its own --workdir), each with its
# own copy of the same local tree and its own bucket of the same s3s-fs
# server, so neither sees the other's data; the same edits are made to both.
# Runs alternate between the tools phase by phase.
#
#   tw-first      first two-way run (rclone: --resync), A full, B empty   (s, peak RSS)
#   tw-noop1      no-op right after (syncmount learns the fingerprints of
#                 the objects it wrote: it HEADs them once)               (s, peak RSS)
#   tw-noop       no-op again: the steady state (reported)                (s, peak RSS)
#   tw-change     1 % of the keys edited on A and 1 % other keys edited on
#                 B through the S3 API (aws s3 cp), then one run          (s, peak RSS)
#   tw-noop-after the no-op after that (informational)                    (s, peak RSS)
#   three-way-rss peak RSS of the three-way merge over TW_RSS_KEYS keys
#                 (examples/three_way_rss.rs: a real SQLite base)
#
# After every run both sides are compared with what they must hold (every
# key, every byte: the local tree and s3s-fs's files on disk, which are the
# objects), so a fast but wrong run fails the benchmark.
#
# Time and memory come from /usr/bin/time -v ("Maximum resident set size")
# and the wall clock around it.

TW_KEYS="${TW_KEYS:-100000}"
TW_DIRS="${TW_DIRS:-1000}"
TW_RSS_KEYS="${TW_RSS_KEYS:-10000000}"
TW_TOOLS=(syncmount rclone)

tw_bucket() { echo "tw-$1"; }

# tw_cmd TOOL PHASE: the command line of one run (in the array TW_CMD).
tw_cmd() {
    local tool=$1 phase=$2 bucket
    bucket=$(tw_bucket "$tool")
    case $tool in
        syncmount)
            TW_CMD=("$SM" sync "$WORK/tw-a-$tool" "s3://$bucket/p" --two-way
                --endpoint-url "$EP" --state-dir "$WORK/tw-state" --json) ;;
        rclone)
            TW_CMD=("$RCLONE" bisync "$WORK/tw-a-$tool" "$(rc_remote "$bucket/p")"
                --workdir "$WORK/tw-rclone-workdir")
            if [ "$phase" = tw-first ]; then TW_CMD+=(--resync); fi ;;
    esac
}

# tw_run TOOL PHASE: runs it under /usr/bin/time -v, checks both sides,
# prints the result row; sets TW_S and TW_RSS.
tw_run() {
    local tool=$1 phase=$2 out="$WORK/tw-$1-$2"
    tw_cmd "$tool" "$phase"
    sync
    local t0 t1
    t0=$(date +%s.%N)
    if ! /usr/bin/time -v -o "$out.time" "${TW_CMD[@]}" >"$out.stdout" 2>"$out.stderr"; then
        log "$phase $tool FAILED: ${TW_CMD[*]}"
        tail -c 3000 "$out.stderr" >&2
        tail -c 2000 "$out.stdout" >&2
        exit 1
    fi
    t1=$(date +%s.%N)
    TW_S=$(python3 -c "print(f'{$t1-$t0:.3f}')")
    TW_RSS=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$out.time")
    local check extra=""
    check=$(tw_check "$tool") || { log "$phase $tool: WRONG RESULT: $check"; exit 1; }
    if [ "$tool" = syncmount ]; then
        extra=$(python3 - "$out.stdout" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
p = s.get("Phases", {})
print(f"a_to_b={s.get('FilesTransferredAToB')} b_to_a={s.get('FilesTransferredBToA')} "
      f"skipped={s.get('FilesSkipped')} conflicts={s.get('FilesConflicted')} "
      f"preparing_ms={p.get('PreparingMs')} transferring_ms={p.get('TransferringMs')} verifying_ms={p.get('VerifyingMs')}")
PY
)
    fi
    row "$phase $tool seconds=$TW_S rss_kib=$TW_RSS $check${extra:+ $extra}"
    eval "TW_S_${phase//-/_}_$tool=$TW_S TW_RSS_${phase//-/_}_$tool=$TW_RSS"
}

# tw_check TOOL: both sides hold exactly the manifest's keys and bytes.
tw_check() {
    local bucket
    bucket=$(tw_bucket "$1")
    python3 - "$WORK/tw-manifest.json" "$WORK/tw-a-$1" "$WORK/s3/$bucket/p" <<'PY'
import json, os, sys, zlib
want = json.load(open(sys.argv[1]))
def side(root):
    got = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                got[os.path.relpath(p, root)] = zlib.crc32(fh.read())
    return got
bad = []
counts = []
for name, root in (("a", sys.argv[2]), ("b", sys.argv[3])):
    got = side(root)
    counts.append(f"keys_{name}={len(got)}")
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    wrong = [k for k in want if k in got and got[k] != want[k]]
    if missing or extra or wrong:
        bad.append(f"side {name}: {len(missing)} missing {missing[:3]}, {len(extra)} extra {extra[:3]}, {len(wrong)} wrong {wrong[:3]}")
print(" ".join(counts) + (" check=FAILED " + "; ".join(bad) if bad else " check=ok"))
sys.exit(1 if bad else 0)
PY
}

# The tree: TW_KEYS files of 100 B – 4 KiB in TW_DIRS directories, one copy
# per tool (same bytes, same mtimes), and the manifest of what every side
# must hold.
tw_make_data() {
    python3 - "$WORK" "$TW_KEYS" "$TW_DIRS" "${TW_TOOLS[@]}" <<'PY'
import json, os, random, shutil, sys, zlib
work, n, dirs, tools = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
rng = random.Random(10)
manifest = {}
root = os.path.join(work, f"tw-a-{tools[0]}")
t = 1_750_000_000_000_000_000
for i in range(n):
    rel = f"d{i % dirs:04d}/f{i:07d}.txt"
    data = rng.randbytes(rng.randint(100, 4096))
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    os.utime(p, ns=(t, t + i * 1000))
    manifest[rel] = zlib.crc32(data)
for other in tools[1:]:
    shutil.copytree(root, os.path.join(work, f"tw-a-{other}"), copy_function=shutil.copy2)
json.dump(manifest, open(os.path.join(work, "tw-manifest.json"), "w"))
PY
}

# 1 % of the keys edited on A (the same bytes and mtime in each tool's tree)
# and 1 % other keys edited on B (uploaded with the AWS CLI into each tool's
# bucket); the manifest follows.
tw_edit() {
    local n=$((TW_KEYS / 100)) tool bucket
    rm -rf "$WORK/tw-edit-b"
    python3 - "$WORK" "$TW_KEYS" "$TW_DIRS" "$n" "${TW_TOOLS[@]}" <<'PY'
import json, os, random, sys, time, zlib
work, keys, dirs, n, tools = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
rng = random.Random(11)
mpath = os.path.join(work, "tw-manifest.json")
manifest = json.load(open(mpath))
step = keys // n
now = time.time_ns()
def new_bytes(old_len):
    while True:
        l = rng.randint(100, 4096)
        if l != old_len:
            return rng.randbytes(l)
for j in range(n):
    i = j * step                      # A: keys 0, 100, 200, …
    rel = f"d{i % dirs:04d}/f{i:07d}.txt"
    old = os.path.getsize(os.path.join(work, f"tw-a-{tools[0]}", rel))
    data = new_bytes(old)
    for t in tools:
        p = os.path.join(work, f"tw-a-{t}", rel)
        with open(p, "wb") as f:
            f.write(data)
        os.utime(p, ns=(now, now))
    manifest[rel] = zlib.crc32(data)
    i = j * step + step // 2          # B: keys 50, 150, 250, …
    rel = f"d{i % dirs:04d}/f{i:07d}.txt"
    old = os.path.getsize(os.path.join(work, f"tw-a-{tools[0]}", rel))
    data = new_bytes(old)
    p = os.path.join(work, "tw-edit-b", rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    manifest[rel] = zlib.crc32(data)
json.dump(manifest, open(mpath, "w"))
PY
    for tool in "${TW_TOOLS[@]}"; do
        bucket=$(tw_bucket "$tool")
        "$AWS" --endpoint-url "$EP" s3 cp --recursive --only-show-errors "$WORK/tw-edit-b" "s3://$bucket/p/"
    done
}

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

bench_two_way() {
    log "two-way: $TW_KEYS keys in $TW_DIRS directories, syncmount vs rclone bisync"
    tw_make_data
    mkdir -p "$WORK/tw-state" "$WORK/tw-rclone-workdir"
    local tool phase
    for tool in "${TW_TOOLS[@]}"; do mb "$(tw_bucket "$tool")"; done
    for phase in tw-first tw-noop1 tw-noop; do
        for tool in "${TW_TOOLS[@]}"; do
            log "$phase: $tool"
            tw_run "$tool" "$phase"
        done
    done
    log "editing $((TW_KEYS / 100)) keys on each side"
    tw_edit
    for phase in tw-change tw-noop-after; do
        for tool in "${TW_TOOLS[@]}"; do
            log "$phase: $tool"
            tw_run "$tool" "$phase"
        done
    done
    local peak_sm=0 peak_rc=0 v
    for phase in tw_first tw_noop1 tw_noop tw_change tw_noop_after; do
        v="TW_RSS_${phase}_syncmount"
        if [ "${!v}" -gt "$peak_sm" ]; then peak_sm=${!v}; fi
        v="TW_RSS_${phase}_rclone"
        if [ "${!v}" -gt "$peak_rc" ]; then peak_rc=${!v}; fi
    done
    # shellcheck disable=SC2154 # set by tw_run through eval
    row "tw-ratios syncmount/rclone first=$(ratio "$TW_S_tw_first_syncmount" "$TW_S_tw_first_rclone") noop=$(ratio "$TW_S_tw_noop_syncmount" "$TW_S_tw_noop_rclone") change=$(ratio "$TW_S_tw_change_syncmount" "$TW_S_tw_change_rclone") peak_rss=$(ratio "$peak_sm" "$peak_rc") (peak_rss_kib syncmount=$peak_sm rclone=$peak_rc)"

    log "three-way merge over $TW_RSS_KEYS keys (a real SQLite base)"
    # 10 M keys: about a minute to write the base (1.8 GB in $WORK), half a
    # minute to merge it.
    local merge
    merge=$(THREE_WAY_DIR="$WORK" "$TARGET_DIR/release/examples/three_way_rss" "$TW_RSS_KEYS") \
        || die "three_way_rss failed (status $?)"
    row "three-way-rss syncmount $merge"
}
