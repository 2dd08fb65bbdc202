"""Set 21 shared helper: DIAG collects numbers the train functions leave for _measure.py (training never reads it)."""

from typing import Any

DIAG: dict[str, Any] = {}
