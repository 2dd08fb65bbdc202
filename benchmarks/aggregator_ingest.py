"""Aggregator ingest: simulated agents in several processes → real HTTP → a real ``gradwatch serve`` (Ray).

Each client process plays several runs of a 1,000-layer model. A report looks
like the agent's at default options: ``stats_every`` (5) step records, the
last one carrying per-layer statistics (every 4th of those also the update
ratio), in the agent's packed encoding (``--encoding json`` for JSON). Clients post over kept-alive
HTTP/1.1 connections at a controlled total rate (``--rate``, 0 = as fast as
they can) and time every request (client-side ingest latency: request sent to
202 read). The service's HTTP process and the aggregator actor's process are
sampled for RSS throughout.

Phase 1 (``--duration`` s at ``--rate``) measures sustained throughput and
memory; phase 2 (``--latency-duration`` s at half of the layer-samples/s
target, or at half of phase 1's rate when that is lower, or at
``--latency-rate``) measures latency below saturation.

    python benchmarks/aggregator_ingest.py --duration 300 --write-docs        # the recorded run
    python benchmarks/aggregator_ingest.py --duration 5 --latency-duration 3  # a quick check
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ServeProcess, cpu_seconds, percentiles  # noqa: E402
from benchmarks._reports import ReportMaker, check_encodings_agree, layer_variants  # noqa: E402
from benchmarks._scrapes import (  # noqa: E402
    PeriodicScraper,
    histogram_quantile,
    ingest_histogram,
    scrape_note,
    scraped_total,
)
from gradwatch.wire import PACKED_CONTENT_TYPE, PACKED_MAGIC, Report  # noqa: E402

TARGET_SAMPLES = 1_000_000
TARGET_P99 = 0.050


def client(
    worker: int,
    url: str,
    runs: int,
    connections: int,
    layers: int,
    rows: int,
    steps_per_row: int,
    encoding: str,
    rate: float,
    start: float,
    warmup: float,
    duration: float,
    results: mp.Queue,
) -> None:
    """One client process: ``connections`` kept-alive connections (threads), each posting for its own runs.

    Agents post concurrently, and a lone connection waits out every answer: with too few of them the
    benchmark measures round-trip latency, not what the service can ingest. ``rate`` is this process's
    reports/s, split over its connections.
    """
    variants = layer_variants(layers, 8, seed=worker)
    check_encodings_agree(variants, steps_per_row, rows)
    connections = max(1, min(connections, runs))
    owned = [[r for r in range(runs) if r % connections == c] for c in range(connections)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def connection(index: int) -> None:
        makers = [ReportMaker(f"bench-{worker}-{r}", variants, steps_per_row, rows, encoding) for r in owned[index]]
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {"Content-Type": PACKED_CONTENT_TYPE if encoding == "packed" else "application/json"}
        mine: list[float] = []
        counts: dict[int, int] = {}
        measured_from, end = start + warmup, start + warmup + duration
        while time.time() < start:
            time.sleep(0.01)
        interval = connections / rate if rate > 0 else 0.0
        next_send, i = time.monotonic() + random.random() * interval, 0
        while True:
            now = time.time()
            if now >= end:
                break
            if interval:
                delay = next_send - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_send += interval
            body = makers[i % len(makers)].next()
            i += 1
            sent = time.perf_counter()
            try:
                conn.request("POST", "/v1/reports", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                status = 0
            elapsed = time.perf_counter() - sent
            if now >= measured_from:
                counts[status] = counts.get(status, 0) + 1
                if status == 202:
                    mine.append(elapsed)
        conn.close()
        with lock:
            latencies.extend(mine)
            for k, v in counts.items():
                statuses[k] = statuses.get(k, 0) + v

    threads = [threading.Thread(target=connection, args=(c,), daemon=True) for c in range(connections)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, start + warmup - time.time()))
    cpu_from = time.process_time()  # this process' CPU over the measured window (all its threads)
    for t in threads:
        t.join()
    results.put((latencies, statuses, time.process_time() - cpu_from))


def run_phase(
    service: ServeProcess, args: argparse.Namespace, rate: float, duration: float, warmup: float, label: str
) -> dict:
    """One load phase; returns throughput, latency and memory samples."""
    ctx = mp.get_context("fork")
    results: mp.Queue = ctx.Queue()
    start = time.time() + 2.0
    per_proc = rate / args.procs if rate > 0 else 0.0
    procs = [
        ctx.Process(
            target=client,
            args=(
                w,
                service.url,
                args.runs_per_proc,
                args.connections,
                args.layers,
                args.rows_per_report,
                args.steps_per_row,
                args.encoding,
                per_proc,
                start,
                warmup,
                duration,
                results,
            ),
            daemon=True,
        )
        for w in range(args.procs)
    ]
    for p in procs:
        p.start()
    memory: list[tuple[float, float, float, float]] = []
    histograms: list[dict[float, float]] = []
    service_cpu: list[tuple[float, float, float]] = []  # (wall time, front, actor) at both ends
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(max(0.0, start + warmup - time.time())) and time.time() < start + warmup:
            pass
        histograms.append(ingest_histogram(service))
        service.memory()  # finds the actor
        service_cpu.append((time.time(), cpu_seconds(service.proc.pid), cpu_seconds(service.actor_pid)))
        t0 = time.time()
        while not stop.is_set():
            m = service.memory()
            memory.append((time.time() - t0, m["http"], m["actor"], m["shared"]))
            stop.wait(args.sample_every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    scraper = PeriodicScraper(service.url, args.scrape_every)
    scraper.start()
    collected = [results.get(timeout=start + warmup + duration + 300 - time.time()) for _ in procs]
    service_cpu.append((time.time(), cpu_seconds(service.proc.pid), cpu_seconds(service.actor_pid)))
    renderer_mb = service.renderer_memory()
    stop.set()
    for p in procs:
        p.join(10)
    sampler.join(10)
    scraper.stop(label)
    histograms.append(ingest_histogram(service))
    latencies = [x for lat, _, _ in collected for x in lat]
    statuses: dict[int, int] = {}
    for _, s, _ in collected:
        for k, v in s.items():
            statuses[k] = statuses.get(k, 0) + v
    accepted = statuses.get(202, 0)
    reports_per_s = accepted / duration
    return {
        "label": label,
        "rate": rate,
        "duration": duration,
        "reports_per_s": reports_per_s,
        "samples_per_s": reports_per_s * args.rows_per_report * args.layers,
        "steps_per_s": reports_per_s * args.rows_per_report * args.steps_per_row,
        "latency": percentiles(latencies),
        "server_p99": histogram_quantile(0.99, *histograms) if len(histograms) == 2 else float("nan"),
        "errors": sum(v for k, v in statuses.items() if k != 202),
        "memory": memory,
        "cores": cores_used(service_cpu, sum(c for _, _, c in collected), duration),
        "scrapes": scraper.seconds,
        "renderer_mb": renderer_mb,
    }


def cores_used(service_cpu: list[tuple[float, float, float]], clients_cpu: float, duration: float) -> dict[str, float]:
    """Average cores each side used over the measured window: the HTTP front, the actor, the clients."""
    if len(service_cpu) != 2:
        return {}
    (t0, front0, actor0), (t1, front1, actor1) = service_cpu
    return {
        "HTTP front": (front1 - front0) / (t1 - t0),
        "aggregator actor": (actor1 - actor0) / (t1 - t0),
        "clients": clients_cpu / duration,
    }


def components(args: argparse.Namespace, reports: int = 200, runs: int = 16) -> dict[str, float]:
    """Milliseconds per report of each stage, measured in this process (no HTTP, no Ray, no other load).

    The stages of the service's path: the front reads the body into a validated report with array
    rows; Ray pickles a batch of 16 to the actor and unpickles it there; the actor ingests, alone
    and with its run's rules evaluated at every report (a loaded shard evaluates each run at most
    every ``evaluate_min_interval``). Where a sustained rate is lower than these imply, the time
    went to HTTP, Ray's transport, the clients or other processes on the machine.
    """
    import pickle

    from gradwatch.service.aggregator import Aggregator
    from gradwatch.service.columns import ColumnarReport, LayoutCache
    from gradwatch.service.config import ServiceConfig
    from gradwatch.service.packed import decode

    def front(body: bytes, layouts: LayoutCache) -> ColumnarReport:
        if body.startswith(PACKED_MAGIC):
            return decode(body, layouts)
        return ColumnarReport.of(Report.model_validate_json(body), layouts)

    variants = layer_variants(args.layers, 8, seed=99)
    bodies = {}
    for encoding in ("packed", "json"):
        makers = [
            ReportMaker(f"c-{r}", variants, args.steps_per_row, args.rows_per_report, encoding) for r in range(runs)
        ]
        bodies[encoding] = [makers[i % runs].next() for i in range(2 * reports)]
    # Two aggregators fed the same reports: one evaluates its run at every report (as when the
    # actor keeps up), the other is paced (as a loaded shard) and takes them in batches at the time
    # of the last evaluation, so no run is due and it only ingests.
    evaluating, layouts = Aggregator(), LayoutCache()
    ingesting = Aggregator(ServiceConfig(paced_above_load=0))
    now = time.time()
    for body in bodies[args.encoding][:reports]:  # fill the windows: steady state
        report = front(body, layouts)
        evaluating.ingest_many([report], now)
        ingesting.ingest_many([report], now)
    timings = {"front packed": 0.0, "front json": 0.0, "pickle": 0.0, "aggregate": 0.0, "ingest": 0.0}
    for start in range(reports, 2 * reports, 16):
        batches = {}
        for encoding in ("packed", "json"):
            batches[encoding] = []
            for body in bodies[encoding][start : start + 16]:
                t0 = time.perf_counter()
                batches[encoding].append(front(body, layouts))
                timings[f"front {encoding}"] += time.perf_counter() - t0
        batch = batches[args.encoding]
        t0 = time.perf_counter()
        batch = pickle.loads(pickle.dumps(batch, protocol=5))
        t1 = time.perf_counter()
        for item in batch:
            evaluating.ingest_many([item], now)
        t2 = time.perf_counter()
        ingesting.ingest_many(batch, now)
        timings["pickle"] += t1 - t0
        timings["aggregate"] += t2 - t1
        timings["ingest"] += time.perf_counter() - t2
    return {k: v / reports * 1e3 for k, v in timings.items()}


def memory_summary(memory: list[tuple[float, float, float, float]]) -> str:
    """Start (first sample), max and end private memory of both processes, and the growth over the second half."""
    if not memory:
        return "no samples"
    half = memory[len(memory) // 2]
    end = memory[-1]
    return (
        "private resident memory: "
        f"HTTP process {memory[0][1]:.0f} → max {max(m[1] for m in memory):.0f} → end {end[1]:.0f} MB "
        f"(second half {end[1] - half[1]:+.1f} MB); aggregator actor {memory[0][2]:.0f} → max "
        f"{max(m[2] for m in memory):.0f} → end {end[2]:.0f} MB (second half {end[2] - half[2]:+.1f} MB)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300, help="seconds of phase 1 (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=0, help="reports/s in phase 1, 0 = as fast as possible")
    parser.add_argument("--latency-duration", type=float, default=60, help="seconds of phase 2 (0 skips it)")
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="reports/s in phase 2 (default: half the target, or half of phase 1's rate if lower)",
    )
    parser.add_argument("--warmup", type=float, default=5, help="seconds before measuring (default: %(default)s)")
    parser.add_argument("--procs", type=int, default=4, help="client processes (default: %(default)s)")
    parser.add_argument("--runs-per-proc", type=int, default=16, help="runs each client plays (default: %(default)s)")
    parser.add_argument(
        "--connections",
        type=int,
        default=16,
        help=(
            "concurrent connections per client process (default: %(default)s; 4 x 16 = 64 agents posting at once, "
            "the service's default limits.max_pending_ingests: with fewer, each waits out its answer and the "
            "benchmark measures their round trips, not the service)"
        ),
    )
    parser.add_argument("--layers", type=int, default=1000, help="layers per report (default: %(default)s)")
    parser.add_argument("--rows-per-report", type=int, default=1, help="statistics rows per report")
    parser.add_argument("--steps-per-row", type=int, default=5, help="step records per statistics row (stats_every)")
    parser.add_argument(
        "--encoding",
        choices=("packed", "json"),
        default="packed",
        help="report encoding the clients send (default: %(default)s, the agent's; json is what curl or other clients send)",
    )
    parser.add_argument("--sample-every", type=float, default=10, help="seconds between RSS samples")
    parser.add_argument(
        "--scrape-every",
        type=float,
        default=5,
        help=(
            "seconds between GET /metrics (gzip accepted) during each phase, as deploy/'s Prometheus scrapes "
            "(default: %(default)s; 0: none)"
        ),
    )
    parser.add_argument("--config", help="a gradwatch serve TOML config (e.g. to compare settings)")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()

    stages = components(args)
    print("in-process ms per report: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()), flush=True)
    with ServeProcess("bench-ingest", config=args.config) as service:
        phases = [run_phase(service, args, args.rate, args.duration, args.warmup, "sustained")]
        print(f"phase 1: {phases[0]['samples_per_s']:,.0f} layer-samples/s", flush=True)
        if args.latency_duration > 0:
            # Half the target load, or half of what phase 1 sustained if that is less: latency is
            # meant to be measured below saturation.
            half = args.latency_rate or min(
                TARGET_SAMPLES / 2 / (args.layers * args.rows_per_report), phases[0]["reports_per_s"] / 2
            )
            phases.append(run_phase(service, args, max(half, 1.0), args.latency_duration, args.warmup, "half load"))
        ingested = scraped_total(service, "gradwatch_ingested_reports_total")

    table = [
        "| phase | offered reports/s | reports/s | layer-samples/s | steps/s | p50 | p90 | p99 | max | service p99 | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        lat = p["latency"]
        offered = f"{p['rate']:.0f}" if p["rate"] else "max"
        table.append(
            f"| {p['label']} ({p['duration']:.0f} s) | {offered} "
            f"| {p['reports_per_s']:.0f} | {p['samples_per_s']:,.0f} | {p['steps_per_s']:,.0f} "
            f"| {lat['p50'] * 1e3:.1f} ms | {lat['p90'] * 1e3:.1f} ms | {lat['p99'] * 1e3:.1f} ms "
            f"| {lat['max'] * 1e3:.1f} ms | {p['server_p99'] * 1e3:.1f} ms | {p['errors']} |"
        )
    sustained = phases[0]
    verdicts = [
        f"- ≥ {TARGET_SAMPLES:,} layer-samples/s sustained: "
        f"{'met' if sustained['samples_per_s'] >= TARGET_SAMPLES else 'NOT met'} ({sustained['samples_per_s']:,.0f})"
    ]
    if len(phases) > 1:
        p99 = phases[1]["latency"]["p99"]
        verdicts.append(
            f"- ingest p99 ≤ {TARGET_P99 * 1e3:.0f} ms at {phases[1]['samples_per_s']:,.0f} layer-samples/s: "
            f"{'met' if p99 <= TARGET_P99 else 'NOT met'} ({p99 * 1e3:.1f} ms)"
        )
    memory_rows = [
        "| t (s) | HTTP process, private (MB) | aggregator actor, private (MB) | Ray object store pages touched (MB) |",
        "|---|---|---|---|",
    ]
    mem = sustained["memory"]
    step = max(1, len(mem) // 12)
    for t, h, a, shared in mem[::step] + ([mem[-1]] if mem and (len(mem) - 1) % step else []):
        memory_rows.append(f"| {t:.0f} | {h:.0f} | {a:.0f} | {shared:.0f} |")
    body = "\n".join(
        [
            f"{args.procs} client processes × {args.runs_per_proc} runs on {args.connections} connections each, "
            f"{args.layers} layers, "
            f"{args.rows_per_report} statistics row(s) and {args.rows_per_report * args.steps_per_row} step records "
            f"per report (the agent's default shape) in the {args.encoding} encoding"
            + (" (the agent's)" if args.encoding == "packed" else "")
            + ", over HTTP/1.1 keep-alive to `gradwatch serve` (one aggregator "
            "actor on a private local Ray). Latency is client-side (request sent → 202 read). Clients and service "
            f"share the machine. The service counted {ingested:.0f} reports ingested. Service p99: the service's own "
            "`gradwatch_ingest_seconds` over the phase (handler entered → rules evaluated; `histogram_quantile` "
            "over its buckets), which leaves out the clients' own time on the shared CPUs. "
            + scrape_note(args, phases),
            "",
            *table,
            "",
            *verdicts,
            "",
            "Cost per report of each stage, measured alone in one process (steady state, 16 runs): "
            "front: reading the body into a validated report with array rows "
            f"{stages['front packed']:.2f} ms packed, {stages['front json']:.2f} ms as JSON; pickling and unpickling in batches of 16 as Ray would "
            f"{stages['pickle']:.2f} ms; actor: ingest alone {stages['ingest']:.2f} ms, with its run's rules "
            f"evaluated at every report {stages['aggregate']:.2f} ms (as on a shard with time to spare; once "
            "that would take half of its time, a run is evaluated at most every `evaluate_min_interval`, "
            "docs/operations.md).",
            "",
            f"Memory during the sustained phase: {memory_summary(mem)}. Private memory decides whether a "
            "process leaks; both processes also map Ray's object store, which carries the batches from "
            "the front to the actor, and its pages count in both RSS as they are first touched (last "
            f"column). The front's /metrics renderer child held {sustained['renderer_mb']:.0f} MB private at the "
            "end of the phase (read then, not sampled).",
            "",
            "CPU, average cores over each phase ("
            + "; ".join(
                f"{p['label']}: " + ", ".join(f"{k} {v:.2f}" for k, v in p["cores"].items())
                for p in phases
                if p["cores"]
            )
            + f"; the machine has {os.cpu_count()}): where a shard's rate stops short of the machine, "
            "the front and the actor are waiting on each other rather than busy.",
            "",
            *memory_rows,
        ]
    )
    print("\n" + body)
    if args.write_docs:
        from benchmarks._docs import update_section

        command = "python benchmarks/aggregator_ingest.py " + " ".join(sys.argv[1:])
        print("written to", update_section("aggregator-ingest", "Aggregator ingest (one shard)", body, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
