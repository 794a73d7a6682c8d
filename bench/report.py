"""Write a benchmark's results into its own section of docs/performance.md."""

from __future__ import annotations

import platform
import re
from datetime import UTC, datetime
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
HEADER = """# Performance

Numbers measured by the benchmarks in `bench/` (`make bench`), each section rewritten by its own
benchmark. They are measurements of one machine, not guarantees: rerun them on yours.
"""


def write_section(name: str, body: str) -> None:
    text = DOC.read_text() if DOC.exists() else HEADER
    stamp = (f"_Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}, kernel "
             f"{platform.release()}, {platform.processor() or platform.machine()}._")
    block = f"<!-- bench:{name} -->\n{body.strip()}\n\n{stamp}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
