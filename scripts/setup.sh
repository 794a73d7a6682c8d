#!/usr/bin/env bash
# Make this machine ready to record and test: system packages (bcc from Debian, kernel headers),
# the kernel-headers link bcc needs, tracefs, and the project's virtualenv in .venv/.
# Idempotent: each step is skipped when what it provides is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "setup: $*" >&2; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    [ -d /usr/lib/python3/dist-packages/bcc ] || need+=(python3-bpfcc bpfcc-tools)
    ls /usr/lib/x86_64-linux-gnu/libbcc.so.0* >/dev/null 2>&1 || need+=(libbpfcc)
    ls -d /usr/src/linux-headers-*-amd64 >/dev/null 2>&1 || need+=(linux-headers-amd64)
    command -v curl >/dev/null || need+=(curl)
    command -v openssl >/dev/null || need+=(openssl)
    command -v capsh >/dev/null || need+=(libcap2-bin)   # the reduced-capability test
    command -v node >/dev/null || need+=(nodejs)         # the node client tests
    command -v unshare >/dev/null || need+=(util-linux)
    command -v ip >/dev/null || need+=(iproute2)   # the plaintext tests build a network namespace pair
    command -v shellcheck >/dev/null || need+=(shellcheck)   # tests lint the deployment's scripts
    command -v go >/dev/null || need+=(golang-go)   # tests build Go programs to analyze their crypto/tls
    command -v gcc >/dev/null || need+=(gcc libc6-dev)   # tests build a statically linked OpenSSL client
    [ -f /usr/lib/x86_64-linux-gnu/libssl.a ] || need+=(libssl-dev)
    # Real containers (scripts/build_image.sh, tests/ebpf/test_containers.py): podman with runc (crun, the
    # other runtime it accepts, fails on hybrid cgroup hosts; both in one apt call so runc is chosen),
    # the CNI plugins for its bridge network, debootstrap for the base image (no registry reachable).
    command -v podman >/dev/null || need+=(podman)
    command -v runc >/dev/null || need+=(runc)
    [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
    command -v debootstrap >/dev/null || need+=(debootstrap)
    if [ ${#need[@]} -gt 0 ]; then
        log "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    # bcc compiles against kernel headers; this kernel ships none, and uprobe programs only need
    # pt_regs, so the packaged headers of another recent version serve (see docs/recorder.md).
    release=$(uname -r)
    build=/lib/modules/$release/build
    if [ ! -e "$build" ] && [ -z "${BCC_KERNEL_SOURCE:-}" ]; then
        hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1 || true)
        common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1 || true)
        if [ -n "$hdr" ]; then
            log "linking $build -> $hdr"
            mkdir -p "/lib/modules/$release"
            ln -sfn "$hdr" "$build"
            [ -n "$common" ] && ln -sfn "$common" "/lib/modules/$release/source"
        fi
    fi
    if [ ! -e /sys/kernel/tracing/uprobe_events ] && [ -d /sys/kernel/tracing ]; then
        mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || log "could not mount tracefs"
    fi
else
    log "not root (or no apt-get): system packages and kernel headers left as they are"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
# Reinstall only when the dependency list changed (a stamp of pyproject.toml's hash).
stamp=.venv/.pyproject.sha256
if ! sha256sum -c --status "$stamp" 2>/dev/null; then
    log "installing the Python dependencies (log: .venv/pip.log)"
    if ! .venv/bin/pip install --disable-pip-version-check -e '.[test]' > .venv/pip.log 2>&1; then
        tail -n 30 .venv/pip.log >&2
        log "pip install failed"
        exit 1
    fi
    sha256sum pyproject.toml > "$stamp"
fi

# Expose Debian's bcc (pure Python over ctypes) to the venv without the rest of dist-packages.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -d /usr/lib/python3/dist-packages/bcc ]; then
    mkdir -p .venv/debian-bcc
    ln -sfn /usr/lib/python3/dist-packages/bcc .venv/debian-bcc/bcc
    echo "$PWD/.venv/debian-bcc" > "$site/debian-bcc.pth"
fi
# checkov, for the security lint of the manifests, in a venv of its own: in the project's it would
# downgrade boto3 and botocore, which the SDK tests use.
if [ ! -x .venv-checkov/bin/checkov ]; then
    log "installing checkov into .venv-checkov (log: .venv-checkov.log)"
    { "$PY" -m venv .venv-checkov && .venv-checkov/bin/pip install --disable-pip-version-check -q checkov; } \
        > .venv-checkov.log 2>&1 || log "checkov install failed: the manifest lint test will fail"
fi

# The openai npm package for the node client of the end-to-end tests (pinned by package-lock.json);
# without npm or a registry the suite runs the node fetch client only.
if command -v npm >/dev/null && [ ! -d testbed/node/node_modules/openai ]; then
    log "installing the openai npm package into testbed/node"
    npm ci --prefix testbed/node --no-audit --no-fund --loglevel=error >/dev/null 2>&1 \
        || log "npm ci failed: the node SDK client is skipped in the end-to-end tests"
fi
log "ready: .venv/bin/oisp-record, .venv/bin/oisp-analyze"
