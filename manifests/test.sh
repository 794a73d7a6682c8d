#!/usr/bin/env bash
# End to end on a real cluster: build the image, install the sensor, run the test Job (one real
# OpenAI call), fetch the node's events.jsonl and check it against expected-events.json with
# `oisp-analyze check`, then clean up.
#
# usage: OPENAI_API_KEY=sk-... manifests/test.sh [k3d|microshift]
#   k3d (default): creates a throwaway k3d cluster (needs docker, k3d, kubectl) and deletes it after.
#   microshift:    uses the MicroShift already running on this host (needs root, podman, oc); removes
#                  what it installed afterwards. CRI-O there reads root's podman image store, so the
#                  image built here needs no import.
# Environment: KEEP=1 leaves everything in place for a look; OISP_TEST_CLUSTER names the k3d cluster.
# Exit status: 0 when every expectation is met, 1 when not, 2 for a missing tool or key.
set -euo pipefail
cd "$(dirname "$0")/.."

platform=${1:-k3d}
image=localhost/oisp-sensor:0.1.0
cluster=${OISP_TEST_CLUSTER:-oisp-sensor-test}
ns=oisp-sensor
work=$(mktemp -d)

say() { echo "test.sh: $*" >&2; }
need() { command -v "$1" >/dev/null || { say "$1 is needed for $platform"; exit 2; }; }

if [ -z "${OPENAI_API_KEY:-}" ]; then
    say "set OPENAI_API_KEY: the test Job makes one real call to OpenAI with it"
    exit 2
fi

case $platform in
k3d)
    need docker; need k3d; need kubectl
    runtime=docker
    kube=kubectl
    overlay=manifests/kubernetes
    ;;
microshift)
    need podman; need oc
    runtime=podman
    kube=oc
    overlay=manifests/openshift
    ;;
*)
    say "unknown platform $platform (k3d or microshift)"
    exit 2
    ;;
esac

cleanup() {
    status=$?
    if [ "$status" -ne 0 ]; then
        say "failed; the sensor's logs:"
        "$kube" -n "$ns" logs -l app.kubernetes.io/name=oisp-sensor --all-containers --tail=50 >&2 || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        say "KEEP=1: leaving the cluster and $work in place"
        return
    fi
    if [ "$platform" = k3d ]; then
        k3d cluster delete "$cluster" >/dev/null 2>&1 || true
    else
        "$kube" delete -f manifests/test-app.yaml --ignore-not-found >/dev/null 2>&1 || true
        "$kube" -n "$ns" delete secret openai-api-key --ignore-not-found >/dev/null 2>&1 || true
        "$kube" delete -k "$overlay" --ignore-not-found >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

say "building $image"
"$runtime" build -t "$image" -f Containerfile .

if [ "$platform" = k3d ]; then
    say "creating k3d cluster $cluster"
    # k3d's nodes are containers: give them the host's tracefs (the recorder creates uprobes there)
    # and kernel headers, as a real node has them.
    k3d cluster create "$cluster" --wait \
        --volume /sys/kernel/tracing:/sys/kernel/tracing@all \
        --volume /lib/modules:/lib/modules@all \
        --volume /usr/src:/usr/src@all
    k3d image import "$image" --cluster "$cluster"
fi

say "installing $overlay"
"$kube" apply -k "$overlay"
"$kube" -n "$ns" rollout status daemonset/oisp-sensor --timeout=300s

say "running the test Job"
"$kube" -n "$ns" create secret generic openai-api-key --from-literal=api-key="$OPENAI_API_KEY" \
    --dry-run=client -o yaml | "$kube" apply -f -
"$kube" delete -f manifests/test-app.yaml --ignore-not-found
"$kube" apply -f manifests/test-app.yaml
"$kube" -n "$ns" wait --for=condition=complete job/test-app --timeout=300s
"$kube" -n "$ns" logs job/test-app

# The events are on the node that ran the Job, in its sensor pod's analyzer container.
node=$("$kube" -n "$ns" get pods -l job-name=test-app -o jsonpath='{.items[0].spec.nodeName}')
sensor=$("$kube" -n "$ns" get pods -l app.kubernetes.io/name=oisp-sensor \
    --field-selector "spec.nodeName=$node" -o jsonpath='{.items[0].metadata.name}')
say "checking events of $sensor (node $node)"
cp manifests/expected-events.json "$work/expected-events.json"
# They appear once the recorder has published the segment (recorder.segment_max_seconds: 10 s) and
# the analyzer has read it: retry the check until it passes or two minutes have gone by.
deadline=$((SECONDS + 120))
until "$kube" -n "$ns" exec "$sensor" -c analyzer -- cat /output/events.jsonl > "$work/events.jsonl" \
    && "$runtime" run --rm -v "$work:/work:Z" "$image" \
        oisp-analyze check /work/events.jsonl /work/expected-events.json > "$work/check.txt" 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        cat "$work/check.txt" >&2
        say "FAIL: the expected events did not appear"
        exit 1
    fi
    sleep 5
done
cat "$work/check.txt"
say "PASS"
