"""``GET /metrics`` time for 100 runs × 200 layers, on a real ``gradwatch serve``.

Each run posts one agent-shaped report (5 steps, the last with statistics of
200 layers); then /metrics is fetched ``--scrapes`` times over HTTP, as
Prometheus would. For comparison, the same snapshot is also rendered in this
process by the service's renderer and by prometheus-client's generic
``generate_latest``.

    python benchmarks/metrics_scrape.py --write-docs
    python benchmarks/metrics_scrape.py --runs 5 --layers 20 --scrapes 3   # a quick check
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ServeProcess, percentiles  # noqa: E402
from benchmarks._reports import ReportMaker, layer_variants  # noqa: E402
from benchmarks._scrapes import scrape  # noqa: E402

TARGET = 0.200


def post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url + "/v1/reports", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        if response.status != 202:
            raise RuntimeError(f"report refused: HTTP {response.status}")


def in_process(runs: int, layers: int) -> dict[str, float]:
    """Seconds to render the same state with the service's renderer and with generate_latest."""
    from prometheus_client import CollectorRegistry, generate_latest

    from gradwatch.service.aggregator import Aggregator
    from gradwatch.service.exposition import SnapshotCollector
    from gradwatch.wire import Report

    aggregator = Aggregator()
    variants = layer_variants(layers, 2, seed=1)
    for r in range(runs):
        aggregator.ingest(Report.model_validate_json(ReportMaker(f"run-{r}", variants, 5, 1, "json").next()))
    collector = SnapshotCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    collector.update([aggregator.snapshot()])
    collector.render()  # the first scrape builds the per-run templates
    t0 = time.perf_counter()
    fast = collector.render()
    t1 = time.perf_counter()
    generic = generate_latest(registry)
    t2 = time.perf_counter()
    if fast != generic:
        raise AssertionError("the service's /metrics text differs from prometheus-client's")
    t3 = time.perf_counter()
    packed = gzip.compress(fast, compresslevel=1, mtime=0)  # as the renderer child does for Prometheus
    t4 = time.perf_counter()
    return {
        "render": t1 - t0,
        "generate_latest": t2 - t1,
        "gzip": t4 - t3,
        "plain_mb": len(fast) / 1e6,
        "gzip_mb": len(packed) / 1e6,
    }


#: The scrapes timed: plain text, and gzip as Prometheus asks (Accept-Encoding: gzip).
ENCODINGS = {"plain": "identity", "gzip": "gzip"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100, help="runs (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=200, help="layers per run (default: %(default)s)")
    parser.add_argument("--scrapes", type=int, default=20, help="timed scrapes (default: %(default)s)")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()

    variants = layer_variants(args.layers, 4, seed=0)
    with ServeProcess("bench-scrape") as service:
        for r in range(args.runs):
            post(service.url, ReportMaker(f"run-{r}", variants, 5, 1, "json").next())
        first = service.get("/metrics")
        series = sum(1 for line in first.splitlines() if line and not line.startswith(b"#"))
        times: dict[str, list[float]] = {encoding: [] for encoding in ENCODINGS}
        sizes: dict[str, int] = {}
        for _ in range(args.scrapes):
            for encoding, accept in ENCODINGS.items():  # alternated, so drift hits both alike
                t0 = time.perf_counter()
                sizes[encoding] = len(scrape(service.url, accept))
                times[encoding].append(time.perf_counter() - t0)
    local = in_process(args.runs, args.layers)
    table = [
        "| runs × layers | series | encoding | body | scrapes | min | p50 | p90 | max | target | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for encoding in ENCODINGS:
        s = percentiles(times[encoding])
        table.append(
            f"| {args.runs} × {args.layers} | {series:,} | {encoding} | {sizes[encoding] / 1e6:.1f} MB | {s['n']} "
            f"| {s['min'] * 1e3:.0f} ms | {s['p50'] * 1e3:.0f} ms | {s['p90'] * 1e3:.0f} ms | {s['max'] * 1e3:.0f} ms "
            f"| ≤ {TARGET * 1e3:.0f} ms | {'yes' if s['p50'] <= TARGET else 'NO'} |"
        )
    body = "\n".join(
        [
            "End to end over HTTP (snapshot from the aggregator actor through Ray, rendered by the front's child "
            "process, transfer), measured by a client on the same machine, as plain text and gzip-compressed (what "
            "Prometheus asks for), alternated; the target is judged on the median.",
            "",
            *table,
            "",
            f"Rendering the same state in one process: the service's renderer {local['render'] * 1e3:.0f} ms, "
            f"prometheus-client's `generate_latest` {local['generate_latest'] * 1e3:.0f} ms (byte-identical text; "
            f"checked on every run of this benchmark); gzip at level 1, as the service's renderer child does for "
            f"scrapers that accept it, {local['gzip'] * 1e3:.0f} ms, {local['plain_mb']:.1f} MB to "
            f"{local['gzip_mb']:.1f} MB.",
        ]
    )
    print("\n" + body)
    if args.write_docs:
        from benchmarks._docs import update_section

        command = "python benchmarks/metrics_scrape.py " + " ".join(sys.argv[1:])
        print("written to", update_section("metrics-scrape", "/metrics scrape time", body, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
