#!/usr/bin/env bash
# Build the sensor image with podman where no registry can be reached: first a Debian 12 base image
# made by debootstrap from the Debian mirror and imported into podman's store (kept, and reused
# while it exists), then the sensor image from the repository's Containerfile on top of it. Layers
# are cached by podman, so a rebuild after a code change redoes only the project's small last layers.
#
# usage: scripts/build_image.sh [--base-only]            (as root)
# environment:
#   IMAGE        the sensor image to build             (default localhost/oisp-sensor:0.1.0)
#   BASE_IMAGE   the local base image, built if absent (default localhost/oisp-debian-base:bookworm)
#   MIRROR       the Debian mirror for debootstrap     (default http://deb.debian.org/debian)
#   REBUILD_BASE=1  debootstrap the base again even if it exists (e.g. for security updates)
#   NO_CACHE=1      build every layer of the sensor image again (podman build --no-cache)
#   PODMAN_RUNTIME  OCI runtime for the build's RUN steps (default runc: see below)
# Prints the image's id on stdout as its last line; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/oisp-sensor:0.1.0}
BASE_IMAGE=${BASE_IMAGE:-localhost/oisp-debian-base:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# crun fails on hosts with the hybrid cgroup layout (cgroup v1 controllers plus a v2 mount), runc
# works; and the runtime's default limits on open files and processes exceed the hard limits such a
# host may impose on root (runc then fails with "error setting rlimits"), hence explicit ones.
RUNTIME=${PODMAN_RUNTIME:-runc}
PODMAN_RUN_OPTS=(--runtime "$RUNTIME" --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

log() { echo "build_image: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (rootful podman; debootstrap)"
command -v podman >/dev/null || die "podman is not installed (apt-get install podman runc)"
command -v "$RUNTIME" >/dev/null || die "the OCI runtime $RUNTIME is not installed"

build_base() {
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    local dir
    dir=$(mktemp -d /var/tmp/oisp-base.XXXXXX)
    # shellcheck disable=SC2064  # expand $dir now: it is local to this function
    trap "rm -rf '$dir'" EXIT
    log "debootstrap $SUITE from $MIRROR into $dir (about a minute)"
    if ! debootstrap --variant=minbase --include=python3,ca-certificates "$SUITE" "$dir" "$MIRROR" \
            > "$dir.log" 2>&1; then
        tail -n 20 "$dir.log" >&2
        rm -f "$dir.log"
        die "debootstrap failed"
    fi
    rm -f "$dir.log"
    # What Debian's own container images do: the updates and security suites, no documentation,
    # manual pages or translations installed by later apt-get runs, and no package caches.
    cat > "$dir/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
    cat > "$dir/etc/dpkg/dpkg.cfg.d/excludes" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
EOF
    find "$dir/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/* \
        "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
        "$dir"/var/log/* "$dir/etc/hostname" "$dir/etc/resolv.conf"
    log "importing $dir as $BASE_IMAGE"
    tar --numeric-owner -C "$dir" -c . \
        | podman import --change 'CMD ["/bin/bash"]' \
            --message "debootstrap --variant=minbase $SUITE" - "$BASE_IMAGE" >/dev/null
    rm -rf "$dir"
    trap - EXIT
}

start=$(date +%s)
if [ "${REBUILD_BASE:-}" = 1 ] || ! podman image exists "$BASE_IMAGE"; then
    build_base
else
    log "reusing $BASE_IMAGE (REBUILD_BASE=1 builds it again)"
fi
[ "${1:-}" = --base-only ] && exit 0

# The host's CA bundle, for pip inside the build where TLS to PyPI is intercepted by a proxy whose
# CA only the host trusts; a build secret, so it is in no layer of the image.
secret=()
ca=${BUILD_CA_FILE:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$ca" ] && secret=(--secret "id=build-ca,src=$ca")

log "building $IMAGE from Containerfile on $BASE_IMAGE"
previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
cache=(--layers)
[ "${NO_CACHE:-}" = 1 ] && cache=(--no-cache)
podman build "${PODMAN_RUN_OPTS[@]}" "${cache[@]}" "${secret[@]}" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    -t "$IMAGE" -f Containerfile . >&2
# The image this build replaced would stay behind untagged, 1 GB at each change of the
# dependencies; its layers still used as cache by the new one are kept.
current=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
    podman rmi "$previous" >/dev/null 2>&1 || log "kept the previous $IMAGE ($previous): in use"
fi
log "built $IMAGE in $(( $(date +%s) - start )) s, $(podman image inspect --format '{{.Size}}' "$IMAGE") bytes"
echo "$current"
