"""Snapshot cost: the size and the time to encode and write the aggregator's state, for a benchmark-shaped state.

The state is what ``benchmarks/aggregator_ingest.py`` builds: ``--runs`` runs of a ``--layers``-layer model,
each with full windows (the default window sizes), ingested in this process. The write is the one the
background writer does (``write_snapshot``), timed in this process. The fork is what the actor itself
pays for a background snapshot: ``os.fork()`` of this process, holding that state, timed in the parent
(median of 5; the child leaves at once).

    python benchmarks/snapshot_cost.py                 # 16 runs x 1,000 layers
    python benchmarks/snapshot_cost.py --runs 2 --layers 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._reports import ReportMaker, layer_variants  # noqa: E402
from gradwatch.service.config import ServiceConfig, SnapshotConfig  # noqa: E402
from gradwatch.service.snapshots import SNAPSHOT_FILE, SnapshottingAggregator, read_snapshot, write_snapshot  # noqa: E402
from gradwatch.wire import Report  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=16, help="runs held (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=1000, help="layers per run (default: %(default)s)")
    parser.add_argument("--reports", type=int, default=130, help="reports per run, enough to fill the windows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        config = ServiceConfig(snapshots=SnapshotConfig(dir=directory, background=False))
        aggregator = SnapshottingAggregator(config)
        variants = layer_variants(args.layers, 8, seed=0)
        for r in range(args.runs):
            maker = ReportMaker(f"snap-{r}", variants, 5, 1, "json")
            aggregator.ingest_many([Report.model_validate_json(maker.next()) for _ in range(args.reports)])
        state = aggregator.saved_state()
        path = Path(directory) / SNAPSHOT_FILE
        started = time.perf_counter()
        write_snapshot(path, state)
        written = time.perf_counter() - started
        size = path.stat().st_size
        started = time.perf_counter()
        restored = read_snapshot(path)
        read = time.perf_counter() - started
        assert restored is not None and len(restored[0]["_runs"]) == args.runs
        forks = []
        for _ in range(5 if hasattr(os, "fork") else 0):
            started = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            forks.append(time.perf_counter() - started)
            os.waitpid(pid, 0)
    fork = f", fork {statistics.median(forks) * 1e3:.1f} ms" if forks else ""
    print(
        f"{args.runs} runs x {args.layers} layers: {size / 1e6:.1f} MB, write {written:.2f} s, read {read:.2f} s{fork}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
