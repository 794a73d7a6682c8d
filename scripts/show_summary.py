"""Print the usage summary of an `oisp-analyze --duckdb` file (used by `make run`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analyzer.reports.usage_summary import summarize  # noqa: E402

print(summarize(Path(sys.argv[1])))
