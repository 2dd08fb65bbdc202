"""``python -m gradwatch.dashboards [DIR]``: regenerate the committed dashboard JSON."""

from __future__ import annotations

import sys
from pathlib import Path

from gradwatch.dashboards import DEFAULT_OUTPUT, write_all

if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT):
        print(path)
