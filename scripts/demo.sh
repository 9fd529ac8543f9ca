#!/usr/bin/env bash
# A five-minute tour of syncmount on a fresh machine:
#   1. builds syncmount and starts a local S3 server (moto: S3 + STS with
#      several accounts) on a free loopback port;
#   2. syncs a sample tree local -> s3://demo-source/data (account 123456789012);
#   3. syncs that prefix into a bucket of a SECOND account (222222222222)
#      through an assumed role (--dst-role-arn), as DataSync does with a
#      BucketAccessRoleArn;
#   4. lists the result with the second account's own credentials, and runs
#      the same sync again to show that nothing is copied twice.
#
#   bash scripts/demo.sh
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
# shellcheck source=scripts/lib/servers.sh
source "$REPO_ROOT/scripts/lib/servers.sh"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Installing the local S3 server and building syncmount"
sm_install_moto
cargo build --quiet --bin syncmount
SM="$REPO_ROOT/target/debug/syncmount"

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
