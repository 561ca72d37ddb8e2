#!/usr/bin/env bash
# Builds the docker image fedsilo:local FROM scratch: /usr/local/bin/{fedsilo,silo-node} plus
# exactly the shared libraries they link (found with ldd, copied at their absolute paths), the
# dynamic loader, an empty /tmp and /etc/nsswitch.conf. Nothing is pulled from any registry.
#
#   scripts/build-images.sh                 # builds the release binaries first (cargo: a no-op
#                                           # when they are current)
#   IMAGE=fedsilo:dev scripts/build-images.sh
#   FAULTS=1 IMAGE=fedsilo:test scripts/build-images.sh   # the compose test's image: binaries
#                                           # with the test-only fault-injection feature
#
# Safe to re-run: the root filesystem is staged afresh and docker reuses its layer cache when
# nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-fedsilo:local}
BIN=${CARGO_TARGET_DIR:-target}/release
BINARIES=(fedsilo silo-node)
STAGE=target/image            # the build context: deploy/Dockerfile copies STAGE/rootfs/ to /
ROOTFS=$STAGE/rootfs

command -v docker >/dev/null 2>&1 || {
  echo "build-images: docker is not installed (the 'docker' command was not found)" >&2
  exit 1
}
command -v ldd >/dev/null 2>&1 || { echo "build-images: ldd not found (install libc-bin)" >&2; exit 1; }

# Never an outdated binary, nor one with other features, in the image: cargo rebuilds exactly
# what differs. A production image has no fault-injection flags; only FAULTS=1 adds them.
scripts/ensure-deps.sh
if [ "${FAULTS:-0}" = 1 ]; then
  echo "build-images: release binaries with the test-only fault-injection feature"
  cargo build --release --bins --quiet --features silo-node/fault-injection,fedsilo/fault-injection
else
  echo "build-images: release binaries"
  cargo build --release --bins --quiet
  # A production image never carries a fault-injection flag.
  if "$BIN/silo-node" --attack nan --help >/dev/null 2>&1; then
    echo "build-images: $BIN/silo-node accepts --attack: built with fault-injection; refusing to make a production image" >&2
    exit 1
  fi
fi

echo "build-images: staging the root filesystem in $ROOTFS"
rm -rf "$STAGE"
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/etc" "$ROOTFS/tmp"
chmod 1777 "$ROOTFS/tmp"   # a world-writable, sticky temporary directory, as on any system
for b in "${BINARIES[@]}"; do
  cp "$BIN/$b" "$ROOTFS/usr/local/bin/$b"
done

# Every library either binary needs, transitively (ldd resolves the whole tree), plus the
# loader: lines are "name => /path (addr)", "/path (addr)" for the loader, or "name (addr)"
# for the kernel's vDSO, which is not a file.
libs=$(for b in "${BINARIES[@]}"; do ldd "$BIN/$b"; done | awk '
  /not found/ { print "MISSING " $1; next }
  $2 == "=>" && $3 ~ /^\// { print $3; next }
  $1 ~ /^\// { print $1 }' | sort -u)
if grep -q '^MISSING' <<<"$libs"; then
  echo "build-images: unresolved libraries: $(grep '^MISSING' <<<"$libs" | cut -d' ' -f2 | xargs)" >&2
  exit 1
fi
for lib in $libs; do
  # -L: several are symlinks (libopenblas.so.0 goes through /etc/alternatives); the image
  # gets the real file under the name the loader looks for.
  mkdir -p "$ROOTFS$(dirname "$lib")"
  cp -L "$lib" "$ROOTFS$lib"
  echo "  $lib"
done

# Name resolution of the other services: docker provides /etc/hosts and /etc/resolv.conf; the
# files and dns sources are built into glibc ≥ 2.34, so no NSS plugin library is needed.
printf 'hosts: files dns\n' >"$ROOTFS/etc/nsswitch.conf"

echo "build-images: building $IMAGE from deploy/Dockerfile ($(du -sh "$ROOTFS" | cut -f1) staged)"
previous=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
docker build --quiet --tag "$IMAGE" --file deploy/Dockerfile "$STAGE"
# New binaries make a new image; drop the one it replaces instead of leaving it dangling (docker
# refuses while a container still uses it, which is fine).
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]; then
  docker image rm "$previous" >/dev/null 2>&1 && echo "build-images: removed the previous $IMAGE ($previous)"
fi
echo "build-images: $IMAGE is ready ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
