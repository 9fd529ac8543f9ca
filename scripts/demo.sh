#!/usr/bin/env bash
# A five-minute tour of syncmount on a fresh machine:
#   1. builds syncmount and starts a local S3 server (moto: S3 + STS with
#      several accounts) on a free loopback port;
#   2. syncs a sample tree local -> s3://demo-source/data (account 123456789012);
#   3. syncs that prefix into a bucket of a SECOND account (222222222222)
#      through an assumed role (--dst-role-arn), as DataSync does with a
#      BucketAccessRoleArn;
#   4. lists the result with the second account's own credentials, and runs
#      the same sync again to show that nothing is copied twice;
#   5. the main job: `syncmount daemon` with a two-way task between a bucket
#      prefix and a local folder on a short schedule, and both mounted as
#      directories: a file copied into one mount with `cp` shows through the
#      other mount and in the bucket after the next execution, whose record
#      is printed; SIGTERM stops the daemon and both mounts are gone.
# Every step is checked: the demo exits non-zero if one does not happen.
#
#   bash scripts/demo.sh
#
# The test suite runs it too (tests/demo.rs), with SYNCMOUNT_BIN set to the
# binary it built.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
# shellcheck source=scripts/lib/servers.sh
source "$REPO_ROOT/scripts/lib/servers.sh"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Installing the local S3 server and FUSE, building syncmount"
sm_install_test_tools
sm_install_fuse
# SYNCMOUNT_BIN: an already built binary (the test suite's tests/demo.rs).
if [ -n "${SYNCMOUNT_BIN:-}" ]; then
    SM="$SYNCMOUNT_BIN"
else
    cargo build --quiet --bin syncmount
    SM="$(cd "${CARGO_TARGET_DIR:-$REPO_ROOT/target}" && pwd)/debug/syncmount"
fi
[ -x "$SM" ] || die "no syncmount binary at $SM"

read -r PORT < <(sm_free_ports 1)
sm_work_dir demo WORK
sm_start_moto "$PORT" "$WORK/moto.log"
EP="http://127.0.0.1:$PORT"

# moto accepts any key for the default account; nothing here is a real secret.
export AWS_ACCESS_KEY_ID=demo-access-key AWS_SECRET_ACCESS_KEY=demo-secret-key AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent
ROLE=arn:aws:iam::222222222222:role/syncmount-demo-transfer

# Talks to moto with boto3 (shipped with moto): make buckets, list objects.
py() { "$SM_VENV/bin/python" - "$EP" "$ROLE" "$@"; }

step "A sample tree"
mkdir -p "$WORK/sample/docs/2024" "$WORK/sample/photos" "$WORK/sample/empty-dir"
echo "hello from syncmount" >"$WORK/sample/docs/readme.txt"
printf 'quarterly numbers\n' >"$WORK/sample/docs/2024/q1 report.txt"
head -c 300000 /dev/urandom >"$WORK/sample/photos/beach.jpg"
chmod 0600 "$WORK/sample/docs/readme.txt"
(cd "$WORK/sample" && find . | sort)

step "Buckets: demo-source in account 123456789012, demo-dest in account 222222222222"
py <<'PY'
import sys, boto3
ep, role = sys.argv[1], sys.argv[2]
boto3.client("s3", endpoint_url=ep).create_bucket(Bucket="demo-source")
c = boto3.client("sts", endpoint_url=ep).assume_role(RoleArn=role, RoleSessionName="demo")["Credentials"]
other = boto3.client("s3", endpoint_url=ep, aws_access_key_id=c["AccessKeyId"],
                     aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
other.create_bucket(Bucket="demo-dest")
print("created")
PY

step "syncmount sync $WORK/sample s3://demo-source/data"
"$SM" sync "$WORK/sample" s3://demo-source/data --endpoint-url "$EP" --state-dir "$WORK/state"

step "syncmount sync s3://demo-source/data s3://demo-dest/copy --dst-role-arn $ROLE --json"
"$SM" sync s3://demo-source/data s3://demo-dest/copy --endpoint-url "$EP" \
    --dst-role-arn "$ROLE" --state-dir "$WORK/state" --json

step "demo-dest as the second account sees it (keys, sizes, stored POSIX metadata)"
py <<'PY'
import sys, boto3
ep, role = sys.argv[1], sys.argv[2]
c = boto3.client("sts", endpoint_url=ep).assume_role(RoleArn=role, RoleSessionName="demo")["Credentials"]
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id=c["AccessKeyId"],
                  aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
for o in s3.list_objects_v2(Bucket="demo-dest").get("Contents", []):
    meta = s3.head_object(Bucket="demo-dest", Key=o["Key"])["Metadata"]
    print(f'{o["Key"]:34} {o["Size"]:>7}  mode={meta.get("file-permissions", "-")} mtime={meta.get("file-mtime", "-")}')
PY

step "The same sync again: nothing to copy"
"$SM" sync s3://demo-source/data s3://demo-dest/copy --endpoint-url "$EP" \
    --dst-role-arn "$ROLE" --state-dir "$WORK/state"

step "And back to a local directory, with modes and mtimes restored"
"$SM" sync s3://demo-dest/copy "$WORK/restored" --endpoint-url "$EP" \
    --src-role-arn "$ROLE" --state-dir "$WORK/state"
(cd "$WORK/restored" && ls -lR --time-style=+%F.%T)
diff -r "$WORK/sample" "$WORK/restored" && echo "restored tree is identical to the sample"

step "The daemon: a two-way task between s3://demo-source/team and a folder, both mounted"
mkdir -p "$WORK/team" "$WORK/mnt/bucket" "$WORK/mnt/folder"
CONF="$WORK/syncmount.toml"
cat >"$CONF" <<TOML
[[location]]
name = "team-bucket"
bucket = "demo-source"
prefix = "team"
endpoint_url = "$EP"

[[location]]
name = "team-folder"
path = "$WORK/team"

[[task]]
name = "team-sync"
direction = "two-way"        # side A = the bucket prefix, side B = the folder
source = "team-bucket"
destination = "team-folder"
schedule = "rate(2 seconds)"

[[mount]]
location = "team-bucket"
path = "$WORK/mnt/bucket"

[[mount]]
location = "team-folder"
path = "$WORK/mnt/folder"
TOML
cat "$CONF"
"$SM" --config "$CONF" config check
"$SM" --config "$CONF" --state-dir "$WORK/daemon-state" daemon >"$WORK/daemon.log" 2>&1 &
DAEMON=$!
stop_daemon() { kill -TERM "$DAEMON" 2>/dev/null || true; }
trap 'stop_daemon; sm_cleanup' EXIT

mounted() { grep -q " $1 fuse" /proc/mounts; }
# wait_for SECONDS WHAT COMMAND...: polls COMMAND until it succeeds.
wait_for() {
    local limit=$1 what=$2
    shift 2
    local end=$((SECONDS + limit))
    until "$@"; do
        if [ "$SECONDS" -ge "$end" ]; then
            echo "demo: timed out waiting for $what; daemon log:" >&2
            cat "$WORK/daemon.log" >&2
            exit 1
        fi
        sleep 0.2
    done
}
wait_for 30 "the daemon's mounts" mounted "$WORK/mnt/bucket"
wait_for 30 "the daemon's mounts" mounted "$WORK/mnt/folder"
grep " $WORK/mnt/" /proc/mounts

step "cp a file into the folder's mount"
echo "written through a mount at $(date -u +%FT%TZ)" >"$WORK/note.txt"
cp "$WORK/note.txt" "$WORK/mnt/folder/note.txt"
ls -l "$WORK/mnt/folder"

step "After the next execution it shows through the bucket's mount and in the bucket"
wait_for 60 "note.txt to reach the bucket's mount" test -f "$WORK/mnt/bucket/note.txt"
cat "$WORK/mnt/bucket/note.txt"
cmp "$WORK/note.txt" "$WORK/mnt/bucket/note.txt"
py <<'PY'
import sys, boto3
ep = sys.argv[1]
body = boto3.client("s3", endpoint_url=ep).get_object(Bucket="demo-source", Key="team/note.txt")["Body"].read()
print("s3://demo-source/team/note.txt:", body.decode().strip())
PY

step "The execution that carried it (syncmount task describe ID --json)"
# The file shows in the bucket once it is copied, while its execution is
# still VERIFYING: wait for the execution that copied it to end (SUCCESS
# with a file copied from the folder, side B, to the bucket, side A), and
# print that one, not whichever is newest at this instant.
carried_execution() {
    "$SM" --config "$CONF" --state-dir "$WORK/daemon-state" task executions team-sync --json \
        >"$WORK/executions.json" || return 1
    python3 - "$WORK/executions.json" >"$WORK/carried.id" <<'PY'
import json, sys
for e in json.load(open(sys.argv[1])):
    if e["Status"] == "SUCCESS" and e.get("FilesTransferredBToA", 0) >= 1:
        print(e["ExecutionId"])
        sys.exit(0)
sys.exit(1)
PY
}
wait_for 60 "the execution that copied note.txt to end" carried_execution
"$SM" --config "$CONF" --state-dir "$WORK/daemon-state" task describe "$(cat "$WORK/carried.id")" --json \
    | tee "$WORK/carried.json"
grep -q '"Status": "SUCCESS"' "$WORK/carried.json"

step "SIGTERM: the daemon finishes or cancels its work, unmounts and exits"
kill -TERM "$DAEMON"
wait "$DAEMON"
echo "daemon exited with status $?"
if mounted "$WORK/mnt/bucket" || mounted "$WORK/mnt/folder"; then
    echo "demo: a mount is still there after SIGTERM" >&2
    exit 1
fi
echo "both mounts are gone"
