"""One process of the load test: N threads, each a training loop with its own real ``gradwatch.watch`` agent.

Run as ``python -m tests.integration.load_agents ENDPOINT PREFIX THREADS SECONDS``; prints one JSON line
per agent: run, steps recorded, delivered, dropped, slowest step.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import torch
from torch import nn

import gradwatch

STEP_INTERVAL = 0.25  # seconds between optimizer steps of one agent


def agent(endpoint: str, run: str, seconds: float, results: list[dict], start: threading.Barrier) -> None:
    model = nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    # request_timeout above the service's ingest_timeout, and close()'s timeout above both: every request gets
    # its answer before the agent gives up, so it never counts as dropped a request that may still land.
    mon = gradwatch.watch(model, optimizer, run=run, endpoint=endpoint, flush_interval=2.0, request_timeout=60.0)
    start.wait()
    deadline = time.monotonic() + seconds
    steps, slowest = 0, 0.0
    while time.monotonic() < deadline:
        began = time.perf_counter()
        loss = model(torch.randn(4, 8)).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mon.step(loss)
        steps += 1
        slowest = max(slowest, time.perf_counter() - began)
        time.sleep(STEP_INTERVAL)
    mon.close(timeout=300)
    results.append(
        {"run": run, "recorded": steps, "delivered": mon.delivered, "dropped": mon.dropped, "slowest": slowest}
    )


def main() -> None:
    endpoint, prefix, threads, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    torch.set_num_threads(1)
    results: list[dict] = []
    start = threading.Barrier(threads)
    workers = [
        threading.Thread(target=agent, args=(endpoint, f"{prefix}-{i}", seconds, results, start), daemon=True)
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for result in results:
        print(json.dumps(result), flush=True)
    if len(results) != threads:  # a thread died (its traceback is on stderr): the run proves nothing
        sys.exit(f"{threads - len(results)} of {threads} agents failed")


if __name__ == "__main__":
    main()
