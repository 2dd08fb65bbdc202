"""The ingest benchmark's reads of ``/metrics``: as Prometheus scrapes, and the service's own ingest histogram."""

from __future__ import annotations

import argparse
import gzip
import math
import re
import threading
import time
import urllib.request

from benchmarks._common import ServeProcess, percentiles


def scrape(url: str, accept_encoding: str = "gzip") -> bytes:
    """GET /metrics with this Accept-Encoding (Prometheus sends gzip); the body as sent, not decompressed."""
    request = urllib.request.Request(url + "/metrics", headers={"Accept-Encoding": accept_encoding})
    with urllib.request.urlopen(request, timeout=60) as response:
        if (response.headers.get("Content-Encoding") == "gzip") != (accept_encoding == "gzip"):
            raise RuntimeError(f"/metrics answered Content-Encoding {response.headers.get('Content-Encoding')!r}")
        return response.read()


class PeriodicScraper:
    """Reads /metrics every ``every`` seconds in a thread, as Prometheus does (gzip accepted, the whole body read
    and dropped: decompressing and parsing it are Prometheus' work, on its own CPUs), timing each read.

    A phase whose scraper died measured a service nobody scrapes: :meth:`stop` raises then.
    """

    def __init__(self, url: str, every: float) -> None:
        self.url, self.every = url, every
        self.seconds: list[float] = []
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if self.every > 0:
            self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every):
                t0 = time.perf_counter()
                scrape(self.url)
                self.seconds.append(time.perf_counter() - t0)
        except BaseException as exc:  # noqa: BLE001 - raised by stop(), in the benchmark's thread
            self._error = exc

    def stop(self, phase: str) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)
        if self._error is not None:
            raise RuntimeError(f"the /metrics scraper failed during the {phase} phase") from self._error


def ingest_histogram(service: ServeProcess) -> dict[float, float]:
    """The service's own ``gradwatch_ingest_seconds`` buckets (upper bound → cumulative count), from a scrape.

    Only the histogram's lines are decoded: the body holds every layer's series (40 MB for 64 runs of
    1,000 layers), and reading all of it here would take a core from the service under test.
    """
    body = gzip.decompress(scrape(service.url))
    first = body.find(b"gradwatch_ingest_seconds_bucket{")
    if first < 0:
        return {}
    text = body[first : body.find(b"gradwatch_ingest_seconds_count", first)].decode()
    pattern = r'^gradwatch_ingest_seconds_bucket\{le="([^"]+)"\} (\S+)$'
    return {float(le): float(count) for le, count in re.findall(pattern, text, re.M)}


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """The q-quantile of the observations between two scrapes, interpolated in buckets as Prometheus does."""
    buckets = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return float("nan")


def scraped_total(service: ServeProcess, name: str) -> float:
    text = service.get("/metrics").decode()
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else float("nan")


def scrape_note(args: argparse.Namespace, phases: list[dict]) -> str:
    """What the phases' /metrics scrapes were and cost, for the description."""
    if args.scrape_every <= 0:
        return "No /metrics scrapes during the phases (`--scrape-every 0`)."
    times = [t for p in phases for t in p["scrapes"]]
    taken = f" ({len(times)} in all, each {percentiles(times)['p50'] * 1e3:.0f} ms at the median)" if times else ""
    return (
        f"Meanwhile /metrics is read in full, gzip accepted, every {args.scrape_every:g} s{taken}, as "
        "`deploy/`'s Prometheus scrapes: a scrape renders every layer's series, and ingest shares the machine "
        "with it."
    )
