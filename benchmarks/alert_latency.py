"""NaN on a worker → notification at a webhook, through a real Alertmanager.

Two paths, measured separately:
- direct push: the aggregator posts to Alertmanager the moment the diagnosis fires
  (`gradwatch serve --alertmanager URL`);
- scrape path: Prometheus scrapes /metrics every 5 s, evaluates the shipped rules
  every 5 s, and sends to the same Alertmanager.

Latency is measured from just before the training loop calls mon.step() for the
step whose loss is NaN, to the webhook receiving the notification (same host clock).

    python benchmarks/alert_latency.py --trials 20 --scrape-trials 5 --write-docs
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import gradwatch  # noqa: E402
from benchmarks._docs import update_section  # noqa: E402
from gradwatch.service.config import AlertingConfig, ServiceConfig  # noqa: E402
from gradwatch.service.server import BackgroundService, Service  # noqa: E402
from tests.integration.external import Alertmanager, Prometheus, Webhook  # noqa: E402


def nan_trial(run: str, endpoint: str, webhook: Webhook, timeout: float) -> float:
    """Seconds from the NaN step's mon.step() to the webhook notification for ``run``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradwatch.watch(model, optimizer, run=run, endpoint=endpoint) as mon:
        for step in range(41):
            x = torch.randn(32, 32)
            if step == 40:
                x[0, 0] = float("nan")
            loss = model(x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            started = time.time()
            mon.step(loss)
            time.sleep(0.01)  # a (very) short training step
        got = webhook.wait_for(timeout, run=run, alertname="GradwatchNonfinite")
    if not got:
        raise RuntimeError(f"no notification for {run} within {timeout} s")
    return got[0][0] - started


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        # nearest-rank percentile: with 20 samples p99 is the slowest
        return ordered[min(len(ordered) - 1, max(0, int(-(-p * len(ordered) // 100)) - 1))]

    return {
        "n": len(values),
        "min": ordered[0],
        "p50": statistics.median(ordered),
        "p90": pct(90),
        "p99": pct(99),
        "max": ordered[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="direct-push trials (default: %(default)s)")
    parser.add_argument("--scrape-trials", type=int, default=5, help="scrape-path trials (default: %(default)s)")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    logging.getLogger("gradwatch.service").setLevel(logging.ERROR)  # the diagnoses are not the point here

    webhook = Webhook()
    am = Alertmanager(webhook.url)
    push = BackgroundService(
        Service(ServiceConfig(alerting=AlertingConfig(alertmanagers=[am.url])), port=0, name="bench-push")
    ).start()
    plain = BackgroundService(Service(port=0, name="bench-scrape")).start()
    prom = Prometheus([plain.service.port], am.port)
    try:
        push_latencies = []
        for i in range(args.trials):
            push_latencies.append(nan_trial(f"bench-push-{i}", push.url, webhook, timeout=10))
            print(f"direct push trial {i + 1}/{args.trials}: {push_latencies[-1] * 1000:.0f} ms", flush=True)
        scrape_latencies = []
        for i in range(args.scrape_trials):
            scrape_latencies.append(nan_trial(f"bench-scrape-{i}", plain.url, webhook, timeout=30))
            print(f"scrape path trial {i + 1}/{args.scrape_trials}: {scrape_latencies[-1]:.2f} s", flush=True)
    finally:
        prom.stop()
        plain.stop()
        push.stop()
        am.stop()
        webhook.close()

    rows = [("direct push (`--alertmanager`)", summary(push_latencies), 1.0)]
    if scrape_latencies:
        rows.append(("Prometheus scrape path (5 s + 5 s)", summary(scrape_latencies), 11.0))
    table = ["| path | trials | min | p50 | p90 | p99 | max | target | met |", "|---|---|---|---|---|---|---|---|---|"]
    for name, s, target in rows:
        table.append(
            f"| {name} | {s['n']} | {s['min']:.3f} s | {s['p50']:.3f} s | {s['p90']:.3f} s | {s['p99']:.3f} s "
            f"| {s['max']:.3f} s | ≤ {target:g} s at p99 | {'yes' if s['p99'] <= target else 'NO'} |"
        )
    body = (
        "NaN on the worker (time just before `mon.step()` of the NaN step) to the notification arriving at a "
        "webhook receiver, through a real Alertmanager 0.25 with `deploy/alertmanager/alertmanager.yml` "
        "(NaN route: `group_wait: 0s`). Scrape path: a real Prometheus 2.42 with `deploy/prometheus/prometheus.yml` "
        "(scrape and evaluation every 5 s; target scrape + evaluation + 1 s).\n\n"
        + "\n".join(table)
        + "\n\nPer-trial direct-push latencies (ms): "
        + ", ".join(f"{v * 1000:.0f}" for v in push_latencies)
    )
    print("\n" + "\n".join(table))
    if args.write_docs:
        path = update_section(
            "alert-latency",
            "Alert latency: NaN → notification",
            body,
            "python benchmarks/alert_latency.py --write-docs",
        )
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
