"""The Go workload of an end-to-end run (testbed/e2e_run.py, module=testbed.go_workload): Go's net/http
over crypto/tls (testbed/go/aiclient) calling the fake OpenAI under its real name.

The programs' paths come from WORKDIR/go-programs.json ({"aiclient": path, "aiclient-stripped": path}).
One process of each program is started before the recorder and waits: the recorder's first scan finds
them, and since uprobes belong to the file, every later process of the same program is captured from
its first call. Then, in order:
- aiclient and aiclient-stripped: a chat call and a streamed one, over HTTP/2 (Go's default);
- aiclient with GODEBUG=http2client=0: the same over HTTP/1.1;
- aiclient: a first call, then 50 goroutines making 50 concurrent streamed calls on its one HTTP/2
  connection;
- aiclient: a call with a 1 MiB prompt.
Protocol on stdout, as testbed/e2e_workload.py: {"ready": true}, then after a line on stdin the ground
truth {"calls": [what each call's client saw], "non_ai": []}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BASE = "https://api.openai.com"


def start(program: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([program, "-base", BASE, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})


def results(proc: subprocess.Popen, client: str, stdin: str | None = None) -> list[dict]:
    out, _ = proc.communicate(stdin, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{client} failed (exit {proc.returncode})")
    calls = [json.loads(line) for line in out.splitlines() if line.strip() and "ready" not in line]
    return [{**c, "client": client} for c in calls]


def main(workdir: Path) -> None:
    programs = json.loads((workdir / "go-programs.json").read_text())
    waiting = {name: start(programs[name], "-wait", "-scenario", "basic", "-tag", tag)
               for name, tag in (("aiclient", "go-h2"), ("aiclient-stripped", "go-stripped"))}
    for proc in waiting.values():
        if "ready" not in proc.stdout.readline():
            raise RuntimeError("a Go client did not start")
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    calls: list[dict] = []
    for name, proc in waiting.items():
        calls += results(proc, name, "go\n")
    aiclient = programs["aiclient"]
    calls += results(start(aiclient, "-scenario", "basic", "-tag", "go-h1",
                           env={"GODEBUG": "http2client=0"}), "aiclient")
    calls += results(start(aiclient, "-scenario", "concurrent", "-n", "50", "-tag", "go-c"), "aiclient")
    calls += results(start(aiclient, "-scenario", "big", "-tag", "go-big"), "aiclient")
    print(json.dumps({"calls": calls, "non_ai": []}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
