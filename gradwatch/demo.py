"""``gradwatch demo``: four small CPU trainings, three of which go wrong, watched live.

Each model is plain PyTorch instrumented exactly as a user would:
``gradwatch.watch(model, optimizer, run=...)`` and ``mon.step(loss)``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import gradwatch
from gradwatch.service.diagnoses import Change


@dataclass(frozen=True)
class DemoRun:
    name: str
    story: str
    expect: frozenset[str]
    build: Callable[[], tuple[nn.Module, torch.optim.Optimizer]]
    data: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mlp(widths: list[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=False)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def _classification(step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(64, 16, generator=gen)
    return x, (x[:, :4].sum(dim=1) > 0).long()


def _regression(step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(64, 16, generator=gen)
    return x, x[:, :4].sum(dim=1, keepdim=True) * 3.0


def _poisoned(at_step: int) -> Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    def data(step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _classification(step, gen)
        if step == at_step:
            x[3, 5] = float("nan")  # one corrupt sample, as a broken record in a data shard would be
        return x, y

    return data


def _vanishing() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = _mlp([16] + [32] * 12 + [2], nn.Sigmoid)
    return model, torch.optim.SGD(model.parameters(), lr=0.05)


def _exploding() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = _mlp([16, 64, 64, 64, 1], nn.ReLU)
    return model, torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)


def _healthy() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = _mlp([16, 64, 64, 2], nn.ReLU)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


DEMO_RUNS = (
    DemoRun(
        "demo-vanishing",
        "13 sigmoid layers: the gradient shrinks ~4x per layer on its way down",
        frozenset({"vanishing_gradient"}),
        _vanishing,
        _classification,
        nn.functional.cross_entropy,
    ),
    DemoRun(
        "demo-exploding",
        "SGD+momentum with a learning rate past the stability edge",
        frozenset({"exploding_gradient"}),
        _exploding,
        _regression,
        nn.functional.mse_loss,
    ),
    DemoRun(
        "demo-nan",
        "a healthy model fed one corrupt batch at step 120",
        frozenset({"nonfinite"}),
        _healthy,
        _poisoned(120),
        nn.functional.cross_entropy,
    ),
    DemoRun(
        "demo-healthy",
        "a well-tuned control: nothing should fire",
        frozenset(),
        _healthy,
        _classification,
        nn.functional.cross_entropy,
    ),
)


class _Printer:
    """Progress on one line, diagnoses printed above it as they fire (from the service thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress = ""
        self._tty = sys.stdout.isatty()

    def progress(self, text: str) -> None:
        with self._lock:
            self._progress = text
            if self._tty:
                sys.stdout.write("\r\033[K" + text)
                sys.stdout.flush()

    def line(self, text: str) -> None:
        with self._lock:
            if self._tty:
                sys.stdout.write("\r\033[K")
            print(text, flush=True)
            if self._tty and self._progress:
                sys.stdout.write(self._progress)
                sys.stdout.flush()

    def on_change(self, change: Change) -> None:
        d = change.diagnosis
        if change.kind == "cleared":
            self.line(f"  cleared   {change.run:16s} {d['symptom']} (step {d['cleared_step']})")
            return
        evidence = d["summary"].split(": ", 1)[-1]
        layer = f" layer {d['layer']}" if d.get("layer") else ""
        self.line(f"  DIAGNOSIS {change.run:16s} {d['symptom']} at step {d['onset_step']}{layer}")
        self.line(f"            evidence: {evidence}")
        self.line(f"            advice:   {d['advice']}")


def _train(run: DemoRun, steps: int, url: str, printer: _Printer) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model, optimizer = run.build()
    with gradwatch.watch(model, optimizer, run=run.name, endpoint=url, flush_interval=0.2) as mon:
        for step in range(steps):
            x, y = run.data(step, gen)
            loss = run.loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            val_loss = None
            if step % 25 == 24:
                with torch.no_grad():
                    vx, vy = run.data(10_000 + step, gen)
                    val_loss = run.loss_fn(model(vx), vy)
            mon.step(loss, val_loss=val_loss)
            if step % 10 == 0 or step == steps - 1:
                done = int(20 * (step + 1) / steps)
                printer.progress(f"  training  {run.name:16s} [{'#' * done}{'.' * (20 - done)}] {step + 1}/{steps}")
            time.sleep(0.002)  # a real step takes longer; keeps the demo watchable
        mon.flush(10)
    printer.progress("")


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def run_demo(port: int = 0, steps: int = 300, keep_serving: bool = False) -> int:
    """Run the demo; 0 when every expected diagnosis fired and the control stayed quiet."""
    from gradwatch.service.server import BackgroundService, Service

    printer = _Printer()
    # The demo prints each diagnosis itself; the service's own log would repeat it.
    logging.getLogger("gradwatch.service").setLevel(logging.ERROR)
    print("gradwatch demo: starting the aggregator on a local Ray instance ...", flush=True)
    started = time.monotonic()
    service = BackgroundService(Service(port=port, name="demo", on_change=printer.on_change)).start()
    try:
        print(f"gradwatch demo: service at {service.url}  (metrics: {service.url}/metrics)", flush=True)
        for run in DEMO_RUNS:
            print(f"\n[{run.name}] {run.story}", flush=True)
            _train(run, steps, service.url, printer)
        time.sleep(0.5)
        ok = _summary(service.url)
        print(
            f"\ngradwatch demo: finished in {time.monotonic() - started:.0f} s. "
            f"Prometheus metrics: {service.url}/metrics"
        )
        if keep_serving:
            print("gradwatch demo: --keep-serving: the service stays up until Ctrl-C", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0 if ok else 1
    finally:
        service.stop()


def _summary(url: str) -> bool:
    print("\nSummary (from GET /v1/runs/<run>/diagnoses):")
    ok = True
    for run in DEMO_RUNS:
        items = _get(f"{url}/v1/runs/{run.name}/diagnoses")
        assert isinstance(items, list)
        fired = {item["symptom"] for item in items}
        missing = run.expect - fired
        good = not missing and (run.expect or not fired)
        ok = ok and bool(good)
        shown = ", ".join(f"{i['symptom']}@{i['step']}" for i in items) or "no diagnosis"
        verdict = "ok" if good else ("MISSING " + ", ".join(sorted(missing)) if missing else "UNEXPECTED")
        print(f"  {run.name:16s} {shown:60s} {verdict}")
    return ok
