"""gradwatch: watch PyTorch training while it runs and say when it goes wrong.

In the training script::

    import gradwatch
    with gradwatch.watch(model, optimizer, run="resnet-lr0.1") as mon:
        for batch in loader:
            ...
            optimizer.step()
            optimizer.zero_grad()
            mon.step(loss)

Importing this package imports torch lazily and never Ray: the agent is the
only thing a training process loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AgentOptions", "Monitor", "NullMonitor", "__version__", "watch"]

if TYPE_CHECKING:
    from gradwatch.agents import AgentOptions, Monitor, NullMonitor, watch


def __getattr__(name: str) -> Any:
    # The agent needs torch; importing it lazily keeps `gradwatch serve` and
    # the wire schema importable without paying for torch.
    if name in ("AgentOptions", "Monitor", "NullMonitor", "watch"):
        from gradwatch import agents

        return getattr(agents, name)
    raise AttributeError(f"module 'gradwatch' has no attribute {name!r}")
