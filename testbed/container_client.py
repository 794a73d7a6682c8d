"""An OpenAI-shaped client that needs nothing but Python's standard library, so that it runs in a
container made from a bare Debian base image (tests/ebpf/test_containers.py, bench/sensor_container.py):
chat completions over one keep-alive TLS connection with http.client, that is through the `ssl`
module and so the container's own libssl.

usage: python3 container_client.py URL CA_FILE [--calls N] [--interval S] [--go FILE] [--stop FILE]
                                   [--prompt-bytes N]
  URL       e.g. https://api.openai.com:8443/v1 (the base URL; /chat/completions is appended)
  --calls   how many calls (0: until the --stop file exists)
  --interval  seconds between the start of one call and the next (a steady rate)
  --go      wait until this file exists before the first call (the caller's readiness signal)
  --stop    stop once this file exists
  --prompt-bytes  pad each prompt with this much text (hex digits: compresses about as well as prose)
Prints "ready" once TLS is loaded, then one JSON line when done: pid, calls, answers, cgroup.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import ssl
import sys
import time
import urllib.parse

API_KEY = "sk-proj-CONTAINERcanary0123456789abcdef"
POLL_SECONDS = 0.02


def wait_for_file(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(POLL_SECONDS)  # polling the caller's signal file, not sleeping in its place


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("ca_file")
    p.add_argument("--calls", type=int, default=1)
    p.add_argument("--interval", type=float, default=0.0)
    p.add_argument("--go")
    p.add_argument("--stop")
    p.add_argument("--prompt-bytes", type=int, default=0)
    args = p.parse_args()
    url = urllib.parse.urlsplit(args.url)
    ctx = ssl.create_default_context(cafile=args.ca_file)
    print("ready", flush=True)
    if args.go:
        wait_for_file(args.go)
    conn = http.client.HTTPSConnection(url.hostname, url.port or 443, context=ctx, timeout=30)
    padding = "".join(hashlib.sha256(b"%d" % i).hexdigest() for i in range(args.prompt_bytes // 64 + 1))
    padding = " " + padding[:args.prompt_bytes] if args.prompt_bytes else ""
    answers = []
    next_start = time.monotonic()
    while args.calls == 0 or len(answers) < args.calls:
        if args.stop and os.path.exists(args.stop):
            break
        prompt = f"Container call {len(answers)}: say hello to the OISP sensor.{padding}"
        body = json.dumps({"model": "gpt-4o-mini", "max_tokens": 20,
                           "messages": [{"role": "user", "content": prompt}]})
        conn.request("POST", url.path.rstrip("/") + "/chat/completions", body=body, headers={
            "Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            sys.exit(f"HTTP {resp.status}: {data[:200]!r}")
        answers.append(json.loads(data)["choices"][0]["message"]["content"])
        next_start += args.interval
        delay = next_start - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the workload's own pace, not synchronisation
    conn.close()
    with open("/proc/self/cgroup") as f:
        cgroup = f.read()
    print(json.dumps({"pid": os.getpid(), "calls": len(answers), "answers": answers, "cgroup": cgroup}),
          flush=True)


if __name__ == "__main__":
    main()
