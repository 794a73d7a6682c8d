#!/bin/sh
# usage: merge-kernel-headers.sh SRC DEST [ARCH]
# Debian splits one kernel's headers in two: linux-headers-V-ARCH (configuration and generated
# headers) and linux-headers-V-common (the rest). bcc reads one tree when BCC_KERNEL_SOURCE names it,
# so the image build merges the newest pair under SRC (/usr/src) into DEST, a place the host's
# /usr/src mount does not hide. Any recent headers do for uprobe programs (they use only pt_regs:
# docs/recorder.md), which is why a packaged version can stand in for the node's.
set -eu

src=$1
dest=$2
arch=${3:-$(dpkg --print-architecture)}

hdr=
for d in "$src"/linux-headers-*-"$arch"; do
    [ -d "$d" ] || continue
    if [ -z "$hdr" ] || [ "$(printf '%s\n%s\n' "$hdr" "$d" | sort -V | tail -n 1)" = "$d" ]; then
        hdr=$d
    fi
done
if [ -z "$hdr" ]; then
    echo "merge-kernel-headers: no linux-headers-*-$arch in $src" >&2
    exit 1
fi
common=${hdr%-"$arch"}-common
if [ ! -d "$common/include" ]; then
    echo "merge-kernel-headers: $hdr has no matching $common" >&2
    exit 1
fi

mkdir -p "$dest"
cp -a "$common/." "$dest/"
# The arch tree's scripts/ and tools/ are links into the kbuild package, which bcc never runs.
for part in include arch; do
    mkdir -p "$dest/$part"
    cp -a "$hdr/$part/." "$dest/$part/"
done
[ ! -f "$hdr/.config" ] || cp -a "$hdr/.config" "$dest/.config"
version=${hdr##*/linux-headers-}
echo "$version" > "$dest/.oisp-headers-version"
echo "merge-kernel-headers: $hdr + $common -> $dest ($version)" >&2
