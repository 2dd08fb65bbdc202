"""False alarms and recall of the loss_spike rule against its log-unit threshold, on synthetic windows.

Each row is 300 random 512-step loss windows; a window counts as a false alarm
when the rule finds any spike in it, and as a hit when it finds the one spike
planted at step 400. The noise models are the ones healthy runs show: a
decaying curve with multiplicative (lognormal) noise, a loss tiny from the
first step, small-batch classification with label noise, whose batch means
have a long upper tail, and regression on heavy-tailed (Student-t) targets,
where a batch holding a gross outlier is the data's own: there the rule asks a
spike to keep the loss up for a few steps, so a planted one-step spike is, by
design, mostly not reported.

    python benchmarks/spike_threshold.py [--windows 300] [--thresholds 3.5 4 4.5 5 6] [--heavy-tail-excess X]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from gradwatch.service.rules.config import LossSpikeConfig
from gradwatch.service.rules.spike import detect_loss_spike
from gradwatch.service.rules.view import RunView

STEPS = 512
SPIKE_AT = 400


def _view(loss: np.ndarray) -> RunView:
    n = loss.size
    empty = np.zeros((0, 0))
    return RunView(
        layers=(),
        layer_numel=np.zeros(0, dtype=np.int64),
        loss_steps=np.arange(n, dtype=np.int64),
        loss=loss,
        lr=np.full(n, 1e-3),
        skipped=np.zeros(n, dtype=bool),
        val_steps=np.zeros(0, dtype=np.int64),
        val_loss=np.zeros(0),
        stat_steps=np.zeros(0, dtype=np.int64),
        grad_norm=empty,
        weight_norm=empty,
        update_ratio=empty,
        grad_nonfinite=empty.astype(bool),
        weight_nonfinite=empty.astype(bool),
        initial_loss=float(np.median(loss[:5])),
    )


def lognormal_decay(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(STEPS)
    return (0.5 + 5.5 * np.exp(-t / 150)) * np.exp(0.3 * rng.standard_normal(STEPS))


def tiny_from_start(rng: np.random.Generator) -> np.ndarray:
    return 1e-5 * np.exp(0.5 * rng.standard_normal(STEPS))


def noisy_labels_batches(rng: np.random.Generator, batch: int = 16, noise: float = 0.1) -> np.ndarray:
    """Batch means of cross-entropy: fitted samples near 0, mislabelled ones near 2.5."""
    wrong = rng.random((STEPS, batch)) < noise
    per_sample = np.where(
        wrong, np.abs(2.5 + 0.5 * rng.standard_normal((STEPS, batch))), rng.exponential(0.1, (STEPS, batch))
    )
    return per_sample.mean(axis=1)


def heavy_tailed_regression(rng: np.random.Generator, df: float, huber: float | None, batch: int = 64) -> np.ndarray:
    """Batch means of a regression loss whose targets carry Student-t noise; the model's error decays."""
    t = np.arange(STEPS)[:, None]
    residual = (0.05 + 0.5 * np.exp(-t / 100)) * rng.standard_normal((STEPS, batch))
    residual = residual + 0.1 * rng.standard_t(df, (STEPS, batch))
    a = np.abs(residual)
    if huber is None:
        per_sample = a**2
    else:
        per_sample = np.where(a < huber, 0.5 * a**2, huber * (a - 0.5 * huber))
    return per_sample.mean(axis=1)


NOISE: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "lognormal sigma 0.3, decaying": lognormal_decay,
    "1e-5 from the first step, lognormal sigma 0.5": tiny_from_start,
    "batch-16 classification, 10% noisy labels": noisy_labels_batches,
    "Huber regression, Student-t(2) targets": lambda rng: heavy_tailed_regression(rng, 2.0, huber=0.5),
    "MSE regression, Student-t(3) targets": lambda rng: heavy_tailed_regression(rng, 3.0, huber=None),
}


@np.errstate(all="ignore")
def measure(
    windows: int, thresholds: list[float], spike_factor: float, heavy_tail_excess: float | None = None
) -> list[list[str]]:
    rows = []
    for name, make in NOISE.items():
        cells = [name]
        for threshold in thresholds:
            config = LossSpikeConfig(log_z_threshold=threshold)
            if heavy_tail_excess is not None:
                config = config.model_copy(update={"heavy_tail_excess": heavy_tail_excess})
            false_alarms = hits = 0
            for seed in range(windows):
                loss = make(np.random.default_rng(seed))
                false_alarms += detect_loss_spike(_view(loss), config) is not None
                spiked = loss.copy()
                spiked[SPIKE_AT] = spike_factor * np.median(loss[SPIKE_AT - 50 : SPIKE_AT])
                found = detect_loss_spike(_view(spiked), config)
                hits += found is not None and found.step == SPIKE_AT
            cells.append(f"{false_alarms / windows:.1%} / {hits / windows:.0%}")
        rows.append(cells)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=300, help="random windows per noise model")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[3.5, 4.0, 4.5, 5.0, 6.0])
    parser.add_argument("--spike", type=float, default=10.0, help="planted spike, in multiples of the median loss")
    parser.add_argument(
        "--heavy-tail-excess",
        type=float,
        default=None,
        help="loss_spike.heavy_tail_excess to measure (default: the rule's; 1e9 turns the heavy-tail check off)",
    )
    args = parser.parse_args()
    header = ["noise (false alarms / recall of a planted spike)"] + [f"log_z {t:g}" for t in args.thresholds]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in measure(args.windows, args.thresholds, args.spike, args.heavy_tail_excess):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
