#!/bin/sh
# The image's entrypoint: `oisp-record ARGS...`, `oisp-analyze ARGS...` or `oisp-ship ARGS...` (or any
# command, e.g. sh).
# For the recorder it first finds kernel headers for bcc's compile at start, in this order:
#   1. BCC_KERNEL_SOURCE, when the pod sets it;
#   2. the host's: /lib/modules/$(uname -r)/build (bcc's own default; the DaemonSet mounts the host's
#      /lib/modules and /usr/src read-only at the same paths, so its usual link into /usr/src
#      resolves), then a whole tree at /usr/src/kernels/RELEASE or /usr/src/linux-headers-RELEASE;
#   3. the kernel's own archive, /sys/kernel/kheaders.tar.xz (CONFIG_IKHEADERS; bcc unpacks it);
#   4. the headers packaged in the image (container/merge-kernel-headers.sh), which serve any kernel
#      because uprobe programs use only pt_regs.
# It mounts nothing and changes nothing on the host: it only chooses, says which, and execs.
# OISP_ROOT (tests only) is a directory standing in for / when looking.
set -eu

root=${OISP_ROOT:-}
release=${OISP_KERNEL_RELEASE:-$(uname -r)}
packaged=${OISP_PACKAGED_HEADERS:-/opt/oisp-sensor/kernel-headers}

say() { echo "oisp-entrypoint: $*" >&2; }

whole_tree() { [ -d "$1/include/linux" ] && [ -d "$1/arch" ]; }

find_kernel_headers() {
    if [ -n "${BCC_KERNEL_SOURCE:-}" ]; then
        say "kernel headers: BCC_KERNEL_SOURCE=$BCC_KERNEL_SOURCE (set by the pod)"
        return 0
    fi
    build=$root/lib/modules/$release/build
    if [ -d "$build/include" ]; then
        say "kernel headers: the host's, $build"
        return 0
    fi
    if [ -L "$build" ]; then
        say "$build links to $(readlink "$build"), which is not here (is the host's /usr/src mounted?)"
    fi
    for tree in "$root/usr/src/kernels/$release" "$root/usr/src/linux-headers-$release"; do
        if whole_tree "$tree"; then
            BCC_KERNEL_SOURCE=$tree
            export BCC_KERNEL_SOURCE
            say "kernel headers: the host's, $tree"
            return 0
        fi
    done
    if [ -e "$root/sys/kernel/kheaders.tar.xz" ]; then
        say "kernel headers: the kernel's own, /sys/kernel/kheaders.tar.xz"
        return 0
    fi
    if whole_tree "$packaged"; then
        BCC_KERNEL_SOURCE=$packaged
        export BCC_KERNEL_SOURCE
        version=$(cat "$packaged/.oisp-headers-version" 2>/dev/null || echo unknown)
        say "kernel headers: none from the host for $release; the image's packaged $version ($packaged)"
        return 0
    fi
    say "kernel headers: none found for $release (host /lib/modules, /usr/src, kheaders, $packaged)"
}

if [ $# -eq 0 ]; then
    say "usage: oisp-entrypoint oisp-record ARGS... | oisp-analyze ARGS... | oisp-ship ARGS... | COMMAND..."
    exit 2
fi
if [ "$1" = oisp-record ]; then
    find_kernel_headers
fi
exec "$@"
