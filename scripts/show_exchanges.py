"""Print one line per exchange of an `oisp-analyze --exchanges` file (used by `make run`)."""

import json
import sys

for line in open(sys.argv[1]):
    x = json.loads(line)
    req, resp = x["request"]["body"], x["response"]["body"]
    ms = (x["response"]["end_ns"] - x["request"]["start_ns"]) / 1e6
    who = f"{x['comm']} ({x['role']}, HTTP/{x['http_version']})"
    print(f"  {who} {x['method']} {x['path']} -> {x['status']}: "
          f"request {req['decoded_bytes']} B, response {resp['decoded_bytes']} B, {ms:.1f} ms"
          f"{'' if x['complete'] else ', incomplete'}")
