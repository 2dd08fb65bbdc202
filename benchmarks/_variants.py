"""The ways of training that the agent-overhead benchmark compares, and one training step under each."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import torch

from benchmarks._models import Workload

if TYPE_CHECKING:
    from gradwatch.agents.monitor import Monitor


class NoopTransport:
    """The agent's transport seam, answering like the service without a network."""

    #: Bodies are encoded as for the HTTP transport: packed.
    accepts_packed = True

    def __call__(self, body: bytes, timeout: float) -> tuple[int, str]:
        return 202, '{"accepted": 0}'


noop_transport = NoopTransport()


class Variant:
    """One way of training; ``begin``/``end`` wrap a block, ``after_backward``/``after_step`` wrap each step."""

    def __init__(self, name: str, workload: Workload) -> None:
        self.name = name
        self.workload = workload

    def begin(self) -> None: ...

    def after_backward(self) -> None: ...

    def after_step(self, loss: torch.Tensor) -> None: ...

    def end(self) -> None: ...

    def close(self) -> None:
        """After the timed block: release what ``begin`` set up."""


class Gradwatch(Variant):
    def __init__(self, name: str, workload: Workload, **options: Any) -> None:
        super().__init__(name, workload)
        self.options = options
        self.monitor: Monitor | None = None

    def begin(self) -> None:
        from gradwatch.agents.monitor import Monitor
        from gradwatch.agents.options import AgentOptions

        w = self.workload
        self.monitor = Monitor(
            w.model,
            w.optimizer,
            # A run name the wire schema accepts (a rejected report would be logged, not sent, and
            # the variant would measure logging instead of delivery).
            run="bench-" + re.sub(r"[^A-Za-z0-9._-]+", "-", self.name),
            endpoint="http://127.0.0.1:1",
            options=AgentOptions.model_validate(self.options),
            transport=noop_transport,
        )

    def after_step(self, loss: torch.Tensor) -> None:
        assert self.monitor is not None
        self.monitor.step(loss)

    def end(self) -> None:
        assert self.monitor is not None
        self.monitor.flush(60)

    def close(self) -> None:
        """Outside the timed block: detach the hooks and stop the sender thread."""
        if self.monitor is not None:
            self.monitor.close(5)
            self.monitor = None


class NaiveItem(Variant):
    """What many training scripts do: one host read per parameter tensor, every step."""

    def after_backward(self) -> None:
        self.log = {n: p.grad.norm().item() for n, p in self.workload.model.named_parameters() if p.grad is not None}


class NaiveHistc(Variant):
    """wandb.watch-style histograms: 64 bins per gradient tensor, copied to the host every step."""

    def after_backward(self) -> None:
        self.log = {
            n: torch.histc(p.grad.float(), bins=64).cpu()
            for n, p in self.workload.model.named_parameters()
            if p.grad is not None
        }


def train_step(w: Workload, variant: Variant) -> None:
    loss = w.forward_backward()
    variant.after_backward()
    w.optimizer.step()
    w.optimizer.zero_grad(set_to_none=True)
    variant.after_step(loss)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_every_step(w: Workload) -> Gradwatch:
    return Gradwatch("gradwatch every step", w, stats_every=1, update_ratio_every=1)
