# shellcheck shell=bash
# Builds mountpoint-s3 (AWS's FUSE client for S3, the read-speed peer of the
# mount benchmark) from its public source, the way the other peers are
# installed: once, then reused. Sourced by scripts/bench.sh after
# scripts/lib/servers.sh.
#
#   sm_install_mountpoint_s3        sets MOUNT_S3 to the mount-s3 binary
#
# MOUNT_S3=/path/to/mount-s3 skips the build. Otherwise the source comes from
# MOUNTPOINT_S3_SRC (a git repository or a bare git dir, e.g. a local
# mirror) or is cloned from GitHub, at MOUNTPOINT_S3_COMMIT, and built in
# MOUNTPOINT_S3_DIR (default ~/.cache/syncmount-bench/mountpoint-s3-COMMIT).
#
# A plain checkout does not build offline: its workspace pins a toolchain
# (rust-toolchain.toml) and builds the AWS CRT from a git submodule that a
# snapshot lacks. So the toolchain pin is dropped and mountpoint-s3-crt-sys
# is taken from crates.io (its published crate carries the CRT sources) at
# the version the workspace names. Release profile with LTO off: about 10
# minutes on 2 cores instead of 30; the speed of a FUSE client that waits
# on the network does not come from LTO.

MOUNTPOINT_S3_COMMIT=${MOUNTPOINT_S3_COMMIT:-58817cab2}

sm_install_mountpoint_s3() {
    if [ -n "${MOUNT_S3:-}" ]; then
        [ -x "$MOUNT_S3" ] || die "MOUNT_S3=$MOUNT_S3 is not an executable"
        return 0
    fi
    local dir=${MOUNTPOINT_S3_DIR:-$HOME/.cache/syncmount-bench/mountpoint-s3-$MOUNTPOINT_S3_COMMIT}
    MOUNT_S3="$dir/target/release/mount-s3"
    if [ -x "$MOUNT_S3" ]; then
        log "mountpoint-s3: already built ($MOUNT_S3)"
        return 0
    fi
    local need=()
    command -v cmake >/dev/null || need+=(cmake)
    command -v pkg-config >/dev/null || need+=(pkg-config)
    [ -e /usr/include/fuse/fuse.h ] || need+=(libfuse-dev)
    ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need+=(libclang-dev)
    [ ${#need[@]} -eq 0 ] || sm_apt_install "${need[@]}"

    local src=${MOUNTPOINT_S3_SRC:-https://github.com/awslabs/mountpoint-s3.git}
    log "mountpoint-s3: building $MOUNTPOINT_S3_COMMIT from $src in $dir (about 10 minutes)"
    rm -rf "$dir/src"
    mkdir -p "$dir"
    git clone -q --no-checkout "$src" "$dir/src" || die "cannot clone mountpoint-s3 from $src"
    git -C "$dir/src" checkout -q "$MOUNTPOINT_S3_COMMIT" || die "mountpoint-s3: no commit $MOUNTPOINT_S3_COMMIT in $src"
    rm -f "$dir/src/rust-toolchain.toml"
    python3 - "$dir/src/Cargo.toml" <<'PY' || die "mountpoint-s3: cannot rewrite its workspace manifest"
import re, sys
path = sys.argv[1]
text = open(path).read()
text = re.sub(r'\n\s*"mountpoint-s3-crt-sys",', "", text, count=1)
text, n = re.subn(r'mountpoint-s3-crt-sys = \{ version = "([^"]+)", path = "[^"]+" \}',
                  r'mountpoint-s3-crt-sys = { version = "=\1" }', text)
if n != 1:
    sys.exit("the workspace does not name mountpoint-s3-crt-sys as expected")
open(path, "w").write(text)
PY
    (
        cd "$dir/src"
        CARGO_TARGET_DIR="$dir/target" CARGO_PROFILE_RELEASE_LTO=false \
            CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=0 \
            cargo build --release --quiet -p mountpoint-s3
    ) || die "mountpoint-s3: the build failed"
    [ -x "$MOUNT_S3" ] || die "mountpoint-s3: the build made no $MOUNT_S3"
}
