#!/usr/bin/env bash
# Two syncmount binaries on the sync paths that touch local files, five
# rounds alternating which goes first, on one s3s-fs server:
#
#   bash scripts/lib/bench_before_after.sh BEFORE_BINARY AFTER_BINARY
#
# Cases: 5,000 x 4 KiB S3 -> local (small-down), one 512 MiB object S3 ->
# local after dropping the page cache (big-down), the 5,000 files local -> S3
# (small-up) and local -> local (local-local). Prints one line per round and
# binary (seconds); compare medians. Made for issue 20 (every local path
# through directory descriptors: does it cost speed?); bench.sh's SM_BEFORE
# runs the same comparison once inside the peer benchmark.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bench_before_after.sh BEFORE AFTER" >&2; exit 2; }
# shellcheck source=scripts/lib/servers.sh
source "$(dirname "${BASH_SOURCE[0]}")/servers.sh"
B=$1; A=$2
sm_install_s3s_fs
read -r PORT < <(sm_free_ports 1)
sm_work_dir ab W
sm_start_s3s_fs "$PORT" "$W/s3" "$W/s3s.log" abkey-1234 absecret-1234 >/dev/null 2>&1
export AWS_ACCESS_KEY_ID=abkey-1234 AWS_SECRET_ACCESS_KEY=absecret-1234 AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent
EP=http://127.0.0.1:$PORT
mkdir -p "$W/s3/abbench"
python3 - "$W/small" 5000 <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 500:03d}"); os.makedirs(d, exist_ok=True)
    open(os.path.join(d, f"f{i:05d}"), "wb").write(os.urandom(4096))
PY
mkdir -p "$W/big"; head -c $((512*1024*1024)) /dev/urandom > "$W/big/big.bin"
"$B" sync "$W/small" s3://abbench/small --endpoint-url "$EP" --state-dir "$W/st" || { cat "$W/s3s.log"; exit 1; }
"$B" sync "$W/big" s3://abbench/big --endpoint-url "$EP" --state-dir "$W/st" >/dev/null 2>&1
t() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; python3 -c "print(f'{$(date +%s.%N)-$s:.3f}')"; }
for r in 1 2 3 4 5; do
  order="before after"; [ $((r % 2)) = 0 ] && order="after before"
  for which in $order; do
    bin=$B; [ $which = after ] && bin=$A
    rm -rf "$W/d-$which" "$W/st-$which"
    sd=$(t "$bin" sync s3://abbench/small "$W/d-$which/small" --endpoint-url "$EP" --state-dir "$W/st-$which")
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    bd=$(t "$bin" sync s3://abbench/big "$W/d-$which/big" --endpoint-url "$EP" --state-dir "$W/st-$which")
    su=$(t "$bin" sync "$W/small" "s3://abbench/up-$which-$r" --endpoint-url "$EP" --state-dir "$W/st-$which")
    ll=$(t "$bin" sync "$W/small" "$W/d-$which/local" --state-dir "$W/st-$which")
    echo "round=$r $which small-down=$sd big-down=$bd small-up=$su local-local=$ll"
  done
done
