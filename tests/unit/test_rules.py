"""Table-driven tests of the symptom rules on synthetic runs.

Every rule has cases it must fire on (with the onset step and key evidence
checked) and healthy cases it must stay silent on. Views are built by
``make_view`` from plain numpy series; stats rows every 5 steps as the agent
sends them by default.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import gradwatch.service.rules as rules
from gradwatch.service.rules import SYMPTOMS, Finding, RulesConfig, RunView, evaluate
from gradwatch.service.rules.config import (
    ExplodingGradientConfig,
    LossSpikeConfig,
    NonfiniteConfig,
    OverfittingConfig,
    StagnationConfig,
    VanishingGradientConfig,
)
from gradwatch.service.rules.exploding import detect_exploding_gradient
from gradwatch.service.rules.nonfinite import detect_nonfinite
from gradwatch.service.rules.overfitting import detect_overfitting
from gradwatch.service.rules.spike import detect_loss_spike
from gradwatch.service.rules.stagnation import detect_stagnation
from gradwatch.service.rules.vanishing import detect_vanishing_gradient

STRIDE = 5


def make_view(
    loss: Any = None,
    *,
    steps: int | None = None,
    lr: Any = 1e-3,
    skipped: Any = False,
    val: tuple[Any, Any] | None = None,
    grad: Any = None,
    weight: Any = None,
    update: Any = None,
    grad_bad: Any = None,
    weight_bad: Any = None,
    numel: Any = 1000,
    new_loss_from: int = 0,
    new_stat_from: int = 0,
    new_val_from: int = 0,
    loss_rank: Any = None,
) -> RunView:
    """Build a RunView; layer arrays are (S, L) with row s at step s * STRIDE."""
    loss = np.asarray(loss if loss is not None else np.ones(steps or 0), dtype=float)
    t = loss.size
    grad = np.zeros((0, 0)) if grad is None else np.asarray(grad, dtype=float)
    s, n_layers = grad.shape
    ones = np.ones((s, n_layers))
    return RunView(
        layers=tuple(f"layer{i}" for i in range(n_layers)),
        layer_numel=np.broadcast_to(np.asarray(numel, dtype=np.int64), (n_layers,)).copy(),
        loss_steps=np.arange(t, dtype=np.int64),
        loss=loss,
        lr=np.broadcast_to(np.asarray(lr, dtype=float), (t,)).copy(),
        skipped=np.broadcast_to(np.asarray(skipped, dtype=bool), (t,)).copy(),
        val_steps=np.asarray(val[0] if val else [], dtype=np.int64),
        val_loss=np.asarray(val[1] if val else [], dtype=float),
        stat_steps=np.arange(s, dtype=np.int64) * STRIDE,
        grad_norm=grad,
        weight_norm=ones * 10.0 if weight is None else np.asarray(weight, dtype=float),
        update_ratio=ones * np.nan if update is None else np.asarray(update, dtype=float),
        grad_nonfinite=np.zeros((s, n_layers), bool) if grad_bad is None else np.asarray(grad_bad, bool),
        weight_nonfinite=np.zeros((s, n_layers), bool) if weight_bad is None else np.asarray(weight_bad, bool),
        new_loss_from=new_loss_from,
        new_stat_from=new_stat_from,
        new_val_from=new_val_from,
        loss_rank=np.zeros(0, np.int64) if loss_rank is None else np.asarray(loss_rank, np.int64),
        # As the service does: the median of the run's first five finite losses.
        initial_loss=float(np.median(loss[np.isfinite(loss)][:5])) if np.isfinite(loss).any() else float("nan"),
    )


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def decaying_loss(t: int = 500, seed: int = 0, noise: float = 0.02, start: float = 4.0, end: float = 2.0) -> np.ndarray:
    """A loss falling from ``start`` towards ``end`` with multiplicative lognormal noise."""
    x = np.arange(t)
    return (end + (start - end) * np.exp(-x / 150)) * np.exp(noise * rng(seed).standard_normal(t))


def noisy_grads(rows: int = 64, n_layers: int = 8, seed: int = 0, sigma: float = 0.2, scale: float = 1.0) -> np.ndarray:
    return scale * np.exp(sigma * rng(seed).standard_normal((rows, n_layers)))


def assert_plain_json(obj: Any) -> None:
    """Evidence must be plain Python (no numpy scalars) and JSON-serialisable."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert type(k) is str
            assert_plain_json(v)
    elif isinstance(obj, list):
        for v in obj:
            assert_plain_json(v)
    else:
        assert obj is None or type(obj) in (bool, int, float, str), (obj, type(obj))
    json.dumps(obj)


def check(finding: Finding | None, symptom: str, step: int | None = None) -> Finding:
    assert finding is not None, f"{symptom} did not fire"
    assert finding.symptom == symptom
    if step is not None:
        assert finding.step == step
    assert_plain_json(finding.evidence)
    assert isinstance(finding.advice, str) and finding.advice
    assert finding.layer is None or isinstance(finding.layer, str)
    return finding


# --------------------------------------------------------------------------- nonfinite


def _nan_at(loss: np.ndarray, *idx: int) -> np.ndarray:
    out = loss.copy()
    out[list(idx)] = np.nan
    return out


def _flags(rows: int, n_layers: int, cells: list[tuple[int, int]]) -> np.ndarray:
    f = np.zeros((rows, n_layers), bool)
    for r, c in cells:
        f[r, c] = True
    return f


NONFINITE_FIRES: list[tuple[str, Callable[[], RunView], int, list[str], str | None]] = [
    (
        "new NaN loss",
        lambda: make_view(_nan_at(np.ones(400), 300), new_loss_from=290, loss_rank=np.arange(400) % 4),
        300,
        ["loss"],
        None,
    ),
    (
        "Inf loss continuing an older stretch keeps its onset",
        lambda: make_view(np.r_[np.ones(250), np.full(150, np.inf)], new_loss_from=390),
        250,
        ["loss"],
        None,
    ),
    (
        "run stuck at NaN with nothing new",
        lambda: make_view(np.r_[np.ones(250), np.full(150, np.nan)], new_loss_from=400),
        250,
        ["loss"],
        None,
    ),
    (
        "new val loss NaN",
        lambda: make_view(np.ones(100), val=([50, 100], [1.0, np.nan]), new_loss_from=100, new_val_from=1),
        100,
        ["val_loss"],
        None,
    ),
    (
        "grad NaN on an applied step, earliest row decides the layer",
        lambda: make_view(
            np.ones(100),
            grad=np.ones((20, 6)),
            grad_bad=_flags(20, 6, [(15, 4), (16, 2), (16, 4)]),
            new_loss_from=100,
            new_stat_from=14,
        ),
        75,
        ["grad"],
        "layer4",
    ),
    (
        "weights still NaN with nothing new",
        lambda: make_view(
            np.ones(100),
            grad=np.ones((20, 3)),
            weight_bad=_flags(20, 3, [(r, 1) for r in range(12, 20)]),
            new_loss_from=100,
            new_stat_from=20,
        ),
        60,
        ["weight"],
        "layer1",
    ),
]


@pytest.mark.parametrize(("name", "build", "step", "quantities", "layer"), NONFINITE_FIRES, ids=lambda x: x)
def test_nonfinite_fires(
    name: str, build: Callable[[], RunView], step: int, quantities: list[str], layer: str | None
) -> None:
    f = check(detect_nonfinite(build(), NonfiniteConfig()), "nonfinite", step)
    assert f.evidence["quantities"] == quantities
    assert f.layer == layer


def test_nonfinite_reports_rank_and_caps_layer_list() -> None:
    bad = np.zeros((20, 15), bool)
    bad[18:, :] = True
    view = make_view(
        _nan_at(np.ones(100), 97, 98, 99),
        grad=np.ones((20, 15)),
        weight_bad=bad,
        new_loss_from=95,
        new_stat_from=18,
        loss_rank=np.arange(100) % 8,
    )
    f = check(detect_nonfinite(view, NonfiniteConfig()), "nonfinite", 90)
    assert f.rank == 97 % 8
    assert f.evidence["quantities"] == ["loss", "weight"]
    assert f.evidence["layers"] == [f"layer{i}" for i in range(10)]
    assert f.evidence["n_layers"] == 15
    assert f.evidence["first_step"] == {"loss": 97, "weight": 90}


def _skipped_with_inf_grads() -> RunView:
    skipped = np.zeros(100, bool)
    skipped[[40, 45, 90]] = True
    return make_view(
        np.ones(100),
        skipped=skipped,
        grad=np.ones((20, 4)),
        grad_bad=_flags(20, 4, [(8, 0), (9, 1), (18, 3)]),
    )


NONFINITE_SILENT: list[tuple[str, Callable[[], RunView]]] = [
    ("healthy", lambda: make_view(decaying_loss(), grad=noisy_grads(64))),
    ("empty view", lambda: make_view()),
    ("old NaN already seen, run recovered", lambda: make_view(_nan_at(np.ones(400), 100), new_loss_from=300)),
    ("inf grads on GradScaler-skipped steps", _skipped_with_inf_grads),
    ("skipped steps alone", lambda: make_view(np.ones(100), skipped=np.arange(100) % 3 == 0)),
    (
        "grad norm overflowed on finite data (max-abs finite)",
        lambda: make_view(np.ones(100), grad=np.r_[np.ones((19, 4)), [[np.inf, 1, 1, 1]]]),
    ),
]


@pytest.mark.parametrize(("name", "build"), NONFINITE_SILENT, ids=lambda x: x)
def test_nonfinite_silent(name: str, build: Callable[[], RunView]) -> None:
    assert detect_nonfinite(build(), NonfiniteConfig()) is None


def test_nonfinite_counts_skipped_rows_when_told_to() -> None:
    f = detect_nonfinite(_skipped_with_inf_grads(), NonfiniteConfig(ignore_skipped_steps=False))
    check(f, "nonfinite", 40)


# --------------------------------------------------------------------------- exploding_gradient


def _explode_after(rows: int, start: int, factor: float, n_layers: int = 8, seed: int = 0) -> np.ndarray:
    g = noisy_grads(rows, n_layers, seed)
    k = np.arange(rows) - start + 1
    return g * np.where(k > 0, factor ** np.maximum(k, 0), 1.0)[:, None]


def _plateau_after_explosion() -> np.ndarray:
    g = _explode_after(64, 40, 3.0)
    g[47:] = g[46] * np.exp(0.1 * rng(3).standard_normal((17, 1)))
    return g


def _weight_explosion() -> RunView:
    w = np.full((64, 8), 10.0)
    w[34:] *= (1.12 ** np.arange(1, 31))[:, None]
    loss = decaying_loss(320, noise=0.02, start=2.0)
    loss[170:] *= 1.01 ** np.arange(1, 151)  # diverging weights drag the loss up
    return make_view(loss, grad=noisy_grads(64), weight=w)


def _depth_explosion() -> RunView:
    g = noisy_grads(64, 8, sigma=0.1)
    g[:, :2] *= 1e4
    g[-5:] *= (2.0 ** np.arange(1, 6))[:, None]
    return make_view(decaying_loss(320), grad=g)


def _update_too_big() -> RunView:
    u = np.full((64, 8), np.nan)
    u[::4] = 1e-3
    u[60] = 2.5
    return make_view(decaying_loss(320), grad=noisy_grads(64), update=u)


def _spiked_loss(height: float, length: int = 1) -> np.ndarray:
    loss = decaying_loss(300)
    loss[250 : 250 + length] *= height ** (np.arange(1, length + 1) / length)
    return loss


def _diverging_loss() -> np.ndarray:
    """Healthy decay, then x30 per step from step 200 (an SGD past its stability edge)."""
    loss = decaying_loss(203)
    loss[200:] = loss[199] * 30.0 ** np.arange(1, 4)
    return loss


EXPLODING_FIRES: list[tuple[str, Callable[[], RunView], int, str]] = [
    ("uniform growth after a flat stretch", lambda: make_view(grad=_explode_after(60, 54, 3.0)), 54 * STRIDE, "growth"),
    ("growth from step 0", lambda: make_view(grad=_explode_after(10, 1, 4.0)), STRIDE, "growth"),
    ("plateau after a sustained rise", lambda: make_view(grad=_plateau_after_explosion()), 40 * STRIDE, "growth"),
    (
        "norm overflow on finite gradients",
        lambda: make_view(grad=np.r_[noisy_grads(20), [[np.inf] + [1.0] * 7]]),
        20 * STRIDE,
        "growth",
    ),
    ("step up that stays up", lambda: make_view(grad=_step_up_then_noise()), 50 * STRIDE, "growth"),
    ("exponential weight growth", _weight_explosion, 34 * STRIDE, "weight_growth"),
    ("lower layers 1e4x the top and growing", _depth_explosion, 0, "depth_profile"),
    ("update as large as the weights", _update_too_big, 60 * STRIDE, "update_ratio"),
    ("loss multiplying step after step", lambda: make_view(_diverging_loss()), 200, "loss_divergence"),
]


@pytest.mark.parametrize(("name", "build", "step", "trigger"), EXPLODING_FIRES, ids=lambda x: x)
def test_exploding_fires(name: str, build: Callable[[], RunView], step: int, trigger: str) -> None:
    f = check(detect_exploding_gradient(build(), ExplodingGradientConfig()), "exploding_gradient", step)
    assert trigger in f.evidence["triggers"]


def test_exploding_evidence_names_growth_and_lowest_layer() -> None:
    g = _explode_after(60, 54, 3.0)
    g[:, 5] *= np.r_[np.ones(54), 3.0 ** np.arange(1, 7)]  # layer5 grows 3**6 more than the rest
    f = check(detect_exploding_gradient(make_view(grad=g), ExplodingGradientConfig()), "exploding_gradient", 270)
    ev = f.evidence
    assert ev["growth_factor"] >= 30
    assert ev["grad_norm_now"] / ev["grad_norm_baseline"] == pytest.approx(ev["growth_factor"])
    assert ev["grew_from_step"] == 265 and ev["grew_to_step"] == 295
    assert ev["top_layers"][0]["layer"] == "layer5"
    assert f.layer == "layer5"
    uniform = check(
        detect_exploding_gradient(make_view(grad=_explode_after(60, 54, 3.0)), ExplodingGradientConfig()),
        "exploding_gradient",
    )
    assert uniform.layer == "layer0"  # uniform growth: prefer the lowest layer


def _warmup_bump(seed: int) -> np.ndarray:
    rows = np.arange(64)
    shape = np.where(rows < 10, 1 + 7 * rows / 10, 8 * np.exp(-(rows - 10) / 8) + 1.5)
    return noisy_grads(64, 8, seed, sigma=0.3) * shape[:, None]


def _zero_init_layer() -> RunView:
    w = np.full((64, 8), 30.0)
    w[:, 7] = np.r_[0.0, np.linspace(0.5, 30.0, 63)]
    return make_view(decaying_loss(320), grad=noisy_grads(64), weight=w)


def _adam_linear_weights() -> RunView:
    w = np.linspace(1.0, 4.0, 64)[:, None] * np.ones((1, 8))
    return make_view(decaying_loss(320, start=6.0, end=3.0), grad=noisy_grads(64), weight=w)


def _isolated_spike(last: bool) -> np.ndarray:
    g = noisy_grads(64, 8, sigma=0.1)
    g[-1 if last else 40] *= 1000
    return g


def _step_up_then_noise() -> np.ndarray:
    g = noisy_grads(64, 8, sigma=0.3)
    g[50:] *= 100
    return g


def _two_row_spike() -> np.ndarray:
    g = noisy_grads(64, 8, sigma=0.3)
    g[55:57] *= 100
    return g


def _unfrozen_backbone() -> RunView:
    g = noisy_grads(64, 40, sigma=0.3)
    g[:50, :36] = np.nan  # backbone frozen (no gradient) until row 50
    return make_view(decaying_loss(320), grad=g)


EXPLODING_SILENT: list[tuple[str, Callable[[], RunView]]] = [
    *[(f"warmup bump 8x then falling (seed {s})", lambda s=s: make_view(grad=_warmup_bump(s))) for s in range(3)],
    *[
        (f"small-batch lognormal noise sigma 0.5 (seed {s})", lambda s=s: make_view(grad=noisy_grads(64, 8, s, 0.5)))
        for s in range(5)
    ],
    (
        "weights grow 50% over 300 steps",
        lambda: make_view(
            decaying_loss(320), grad=noisy_grads(64), weight=np.linspace(10, 15, 64)[:, None] * np.ones((1, 8))
        ),
    ),
    ("zero-initialised layer grows from 0", _zero_init_layer),
    ("Adam-like linear weight growth 4x while learning", _adam_linear_weights),
    ("backbone unfrozen mid-window", _unfrozen_backbone),
    ("a one-step 50x loss spike that recovers", lambda: make_view(_spiked_loss(50.0))),
    ("a loss rising 3x over two steps", lambda: make_view(_spiked_loss(3.0, length=2))),
    ("clipped: recorded norm large but flat", lambda: make_view(grad=noisy_grads(64, 8, 1, 0.3, scale=300.0))),
    ("isolated spike that went away", lambda: make_view(grad=_isolated_spike(last=False))),
    ("isolated spike at the newest row", lambda: make_view(grad=_isolated_spike(last=True))),
    ("spike lasting two rows", lambda: make_view(grad=_two_row_spike())),
    ("healthy run, deep profile ratio 10", lambda: make_view(grad=noisy_grads(64) * np.logspace(1, 0, 8))),
    ("empty view", lambda: make_view()),
]


@pytest.mark.parametrize(("name", "build"), EXPLODING_SILENT, ids=lambda x: x)
def test_exploding_silent(name: str, build: Callable[[], RunView]) -> None:
    assert detect_exploding_gradient(build(), ExplodingGradientConfig()) is None


# --------------------------------------------------------------------------- vanishing_gradient


def _depth_vanished(rows: int = 64, n_layers: int = 8, factor: float = 1e-5, start: int = 0) -> np.ndarray:
    g = noisy_grads(rows, n_layers)
    profile = np.logspace(np.log10(factor), 0, n_layers)
    g[start:] *= profile
    return g


def _frozen_lower_layers() -> RunView:
    g = noisy_grads(64, 8)
    g[:, :2] *= 1e-5
    u = np.full((64, 8), np.nan)
    u[::4] = 1e-3
    u[::4, :2] = 1e-8
    # Lower layers are tiny and the top ones huge, so RMS grads match: only "frozen" sees it.
    return make_view(decaying_loss(320), grad=g, update=u, numel=[1, 1] + [10**10] * 6)


def _collapse() -> RunView:
    g = noisy_grads(64, 8) * np.r_[np.ones(30), np.full(34, 1e-6)][:, None]
    loss = np.r_[decaying_loss(150), np.full(170, 2.6) * np.exp(0.01 * rng(2).standard_normal(170))]
    return make_view(loss, grad=g)


VANISHING_FIRES: list[tuple[str, Callable[[], RunView], int, str, str]] = [
    ("lower layers 1e-5 of the top", lambda: make_view(grad=_depth_vanished()), 0, "depth", "layer0"),
    ("vanishing sets in at row 40", lambda: make_view(grad=_depth_vanished(start=40)), 200, "depth", "layer0"),
    ("lower layers frozen by tiny gradients", _frozen_lower_layers, 60 * STRIDE, "frozen", "layer0"),
    ("all-layer collapse with a stuck loss", _collapse, 30 * STRIDE, "collapse", "layer0"),
]


@pytest.mark.parametrize(("name", "build", "step", "trigger", "layer"), VANISHING_FIRES, ids=lambda x: x)
def test_vanishing_fires(name: str, build: Callable[[], RunView], step: int, trigger: str, layer: str) -> None:
    f = check(detect_vanishing_gradient(build(), VanishingGradientConfig()), "vanishing_gradient", step)
    assert trigger in f.evidence["triggers"]
    assert f.layer == layer


def test_vanishing_depth_evidence() -> None:
    f = check(
        detect_vanishing_gradient(make_view(grad=_depth_vanished()), VanishingGradientConfig()), "vanishing_gradient"
    )
    ev = f.evidence
    assert ev["depth_ratio"] < 1e-3
    assert ev["low_quarter_rms"] / ev["top_quarter_rms"] < 1e-3
    assert [d["layer"] for d in ev["lowest_layers"]] == [f"layer{i}" for i in range(5)]


def _embedding_first() -> np.ndarray:
    g = noisy_grads(64, 12) * np.exp(rng(5).uniform(-1.5, 1.5, 12))  # residual net: ratios ~0.05..20
    g[:, 0] *= 1e-4  # an embedding's RMS gradient is much smaller than a dense layer's
    return g


VANISHING_SILENT: list[tuple[str, Callable[[], RunView]]] = [
    ("healthy run", lambda: make_view(decaying_loss(320), grad=noisy_grads(64))),
    (
        "deep residual net with norms, ratios 0.05..20",
        lambda: make_view(grad=noisy_grads(64, 24) * np.logspace(np.log10(0.05), np.log10(20), 24)),
    ),
    ("embedding as the first layer", lambda: make_view(grad=_embedding_first())),
    ("only 2 layers", lambda: make_view(grad=_depth_vanished(n_layers=2, factor=1e-6))),
    (
        "converging: all layers shrink 100x together",
        lambda: make_view(decaying_loss(320), grad=noisy_grads(64) * np.logspace(0, -2, 64)[:, None]),
    ),
    (
        "all layers shrink 1e5x but the loss still improves",
        lambda: make_view(decaying_loss(320, start=8.0), grad=noisy_grads(64) * np.logspace(0, -5, 64)[:, None]),
    ),
    ("one noisy row below the line", lambda: make_view(grad=np.r_[noisy_grads(63), _depth_vanished(1)])),
    ("empty view", lambda: make_view()),
]


@pytest.mark.parametrize(("name", "build"), VANISHING_SILENT, ids=lambda x: x)
def test_vanishing_silent(name: str, build: Callable[[], RunView]) -> None:
    assert detect_vanishing_gradient(build(), VanishingGradientConfig()) is None


# --------------------------------------------------------------------------- loss_spike


def _spiked(at: int, height: float, length: int = 1, t: int = 500, noise: float = 0.01, **kw: Any) -> RunView:
    loss = decaying_loss(t, noise=noise)
    loss[at : at + length] *= height
    return make_view(loss, **kw)


def _spike_with_grads() -> RunView:
    g = noisy_grads(100, 4)
    g[58:61] *= 300  # grad norm leads the loss spike at step 300
    return _spiked(300, 3.0, length=3, grad=g, new_loss_from=295)


LOSS_SPIKE_FIRES: list[tuple[str, Callable[[], RunView], int, bool]] = [
    ("single 3x outlier among new steps", lambda: _spiked(300, 3.0, new_loss_from=290), 300, True),
    ("level shift not recovered", lambda: _spiked(300, 1.5, length=200, new_loss_from=480), 300, False),
    ("late small-loss spike", lambda: _spiked(480, 1.3, length=20, new_loss_from=490), 480, False),
    ("spike in the newest step", lambda: _spiked(499, 2.0, new_loss_from=499), 499, False),
]


@pytest.mark.parametrize(("name", "build", "step", "recovered"), LOSS_SPIKE_FIRES, ids=lambda x: x)
def test_loss_spike_fires(name: str, build: Callable[[], RunView], step: int, recovered: bool) -> None:
    f = check(detect_loss_spike(build(), LossSpikeConfig()), "loss_spike", step)
    ev = f.evidence
    assert ev["recovered"] is recovered
    assert ev["z"] > 10
    assert ev["loss_at_spike"] > ev["baseline"]


def test_loss_spike_grad_evidence() -> None:
    f = check(detect_loss_spike(_spike_with_grads(), LossSpikeConfig()), "loss_spike", 300)
    assert f.evidence["grad_norm_at_spike"] > 100 * f.evidence["grad_norm_before"]


def _lognormal_decay(seed: int) -> RunView:
    return make_view(decaying_loss(500, seed=seed, noise=0.3, start=6.0))


def _tiny_loss(seed: int) -> RunView:
    return make_view(1e-5 * np.abs(1 + 0.5 * rng(seed).standard_normal(500)))


def _warmup_cosine() -> RunView:
    t = np.arange(500)
    lr = np.where(t < 50, t / 50, 0.5 * (1 + np.cos(np.pi * (t - 50) / 450))) * 3e-4
    loss = 2.0 + 8.0 * np.exp(-np.cumsum(lr) / 0.01) + 0.02 * rng(1).standard_normal(500)
    return make_view(loss, lr=lr)


LOSS_SPIKE_SILENT: list[tuple[str, Callable[[], RunView]]] = [
    *[(f"lognormal noise sigma 0.3 (seed {s})", lambda s=s: _lognormal_decay(s)) for s in range(5)],
    *[(f"tiny loss 1e-5 with 50% noise (seed {s})", lambda s=s: _tiny_loss(s)) for s in range(5)],
    ("fast early decrease", lambda: make_view(10 * np.exp(-np.arange(200) / 20) + 0.1 + 0.01 * rng().random(200))),
    ("warmup then cosine decay", _warmup_cosine),
    ("old spike, recovered and already seen", lambda: _spiked(200, 3.0, length=5, new_loss_from=400)),
    ("too little history", lambda: make_view(np.r_[np.ones(5), 100.0])),
    ("smooth loss without noise", lambda: make_view(np.linspace(3.0, 2.0, 300))),
]


@pytest.mark.parametrize(("name", "build"), LOSS_SPIKE_SILENT, ids=lambda x: x)
def test_loss_spike_silent(name: str, build: Callable[[], RunView]) -> None:
    assert detect_loss_spike(build(), LossSpikeConfig()) is None


# --------------------------------------------------------------------------- overfitting

VAL_STEPS = np.arange(1, 21) * 25  # every 25 steps up to 500


def _val(curve: np.ndarray, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return VAL_STEPS, curve * (1 + noise * rng(seed).standard_normal(curve.size))


def _u_shaped(rise_from: int = 14) -> np.ndarray:
    v = 3.0 * np.exp(-np.arange(20) / 6) + 1.5
    v[rise_from:] = v[rise_from - 1] * (1 + 0.1 * np.arange(1, 21 - rise_from))
    return v


OVERFITTING_FIRES: list[tuple[str, Callable[[], RunView], int]] = [
    ("val rises while train falls", lambda: make_view(decaying_loss(), val=_val(_u_shaped())), VAL_STEPS[14]),
    (
        "val rises, train flat",
        lambda: make_view(2.0 * np.exp(0.02 * rng().standard_normal(500)), val=_val(_u_shaped(16))),
        VAL_STEPS[16],
    ),
]


def test_overfitting_sees_a_smooth_steady_rise_before_it_crosses_the_line() -> None:
    # A clean held-out set: the val loss bottoms out at point 9 and then rises by 0.8% per point.
    curve = np.r_[1.2 - 0.01 * np.arange(10), 1.11 * (1 + 0.008 * np.arange(1, 11))]
    rises = OverfittingConfig().rise_points
    view = make_view(decaying_loss(), val=(VAL_STEPS[: 10 + rises], curve[: 10 + rises]))
    f = check(detect_overfitting(view, OverfittingConfig()), "overfitting", int(VAL_STEPS[10]))
    assert f.evidence["trigger"] == "steady_rise"
    assert f.evidence["val_min_step"] == VAL_STEPS[9]
    # Fewer rises than rise_points: not yet.
    short = make_view(decaying_loss(), val=(VAL_STEPS[: 9 + rises], curve[: 9 + rises]))
    assert detect_overfitting(short, OverfittingConfig()) is None


@pytest.mark.parametrize(("name", "build", "step"), OVERFITTING_FIRES, ids=lambda x: x)
def test_overfitting_fires(name: str, build: Callable[[], RunView], step: int) -> None:
    f = check(detect_overfitting(build(), OverfittingConfig()), "overfitting", int(step))
    ev = f.evidence
    assert ev["val_now"] > ev["val_min"] * 1.05
    assert ev["val_min_step"] < step
    assert ev["train_now"] <= ev["train_then"] + 0.01


def test_overfitting_minimum_before_loss_window_uses_proxy() -> None:
    loss = decaying_loss(200)
    steps = np.arange(300, 500)
    view = make_view(loss, val=(VAL_STEPS, _u_shaped(6)))
    view = RunView(**{**view.__dict__, "loss_steps": steps})
    # The V's bottom is judged from a 3-point median, so the first rising point is not yet clearly above it.
    f = check(detect_overfitting(view, OverfittingConfig()), "overfitting", int(VAL_STEPS[7]))
    assert f.evidence["train_then_is_proxy"] is True


OVERFITTING_SILENT: list[tuple[str, Callable[[], RunView]]] = [
    ("val tracks train", lambda: make_view(decaying_loss(), val=_val(decaying_loss()[VAL_STEPS - 1] + 0.3, 0.02))),
    *[
        (f"flat noisy plateau (seed {s})", lambda s=s: make_view(decaying_loss(), val=_val(np.full(20, 2.5), 0.03, s)))
        for s in range(5)
    ],
    (
        "one-off bump",
        lambda: make_view(
            decaying_loss(), val=_val(np.r_[3.0 * np.exp(-np.arange(20) / 6) + 1.5] * np.r_[[1] * 15, 1.3, [1] * 4])
        ),
    ),
    (
        "val and train both rise (divergence, not overfitting)",
        lambda: make_view(np.r_[np.full(350, 2.0), np.linspace(2.0, 3.0, 150)], val=_val(_u_shaped())),
    ),
    ("too few val points", lambda: make_view(decaying_loss(), val=(VAL_STEPS[:3], np.array([2.0, 2.5, 3.0])))),
    ("rise shorter than patience", lambda: make_view(decaying_loss(), val=_val(_u_shaped(18)))),
]


@pytest.mark.parametrize(("name", "build"), OVERFITTING_SILENT, ids=lambda x: x)
def test_overfitting_silent(name: str, build: Callable[[], RunView]) -> None:
    assert detect_overfitting(build(), OverfittingConfig()) is None


# --------------------------------------------------------------------------- stagnation


def _sampled(value: float, rows: int = 64, n_layers: int = 4) -> np.ndarray:
    u = np.full((rows, n_layers), np.nan)
    u[::4] = value
    return u


def _flat(t: int = 300, seed: int = 0, level: float = 2.3) -> np.ndarray:
    return level * np.exp(0.01 * rng(seed).standard_normal(t))


def _stats(rows: int = 60) -> np.ndarray:
    return noisy_grads(rows, 4)


STAGNATION_FIRES: list[tuple[str, Callable[[], RunView], str]] = [
    ("tiny updates, flat loss", lambda: make_view(_flat(), grad=_stats(), update=_sampled(1e-7, 60)), "tiny_updates"),
    ("dead network", lambda: make_view(_flat(), grad=np.zeros((60, 4))), "dead_gradients"),
    (
        "dead ReLUs, only a tiny output bias learns",
        lambda: make_view(_flat(), grad=np.c_[np.zeros((60, 3)), np.ones(60)], numel=[5000, 5000, 5000, 4]),
        "dead_gradients",
    ),
    (
        "all but a bias frozen, loss where it started",
        lambda: make_view(_flat(), grad=np.c_[np.full((60, 3), np.nan), np.ones(60)], numel=[5000, 5000, 5000, 4]),
        "frozen_parameters",
    ),
    (
        "lr collapsed 1e4x, tiny updates",
        lambda: make_view(_flat(), lr=np.r_[np.full(200, 1e-2), np.full(100, 1e-6)], grad=_stats(), update=_sampled(1e-8, 60)),
        "tiny_updates",
    ),
    ("frozen loss, no update ratio sampled", lambda: make_view(np.full(300, 2.3)), "loss_frozen"),
    ("every step skipped by GradScaler", lambda: make_view(_flat(), skipped=True), "all_steps_skipped"),
    (
        "lr set to ~0 by mistake (no schedule)",
        lambda: make_view(_flat(), lr=1e-12, grad=_stats(), update=_sampled(1e-9, 60)),
        "tiny_updates",
    ),
]


@pytest.mark.parametrize(("name", "build", "reason"), STAGNATION_FIRES, ids=lambda x: x)
def test_stagnation_fires(name: str, build: Callable[[], RunView], reason: str) -> None:
    window = StagnationConfig().window_steps
    f = check(detect_stagnation(build(), StagnationConfig()), "stagnation", 300 - window)
    assert f.evidence["reason"] == reason
    assert f.evidence["window_steps"] == window


def _cosine_to_zero() -> RunView:
    lr = 1e-3 * 0.5 * (1 + np.cos(np.pi * np.arange(300) / 299))
    return make_view(_flat(), lr=lr, grad=_stats(), update=_sampled(1e-8, 60))


def _warmup_from_zero() -> RunView:
    return make_view(_flat(), lr=np.linspace(0, 1e-3, 300) ** 2, grad=_stats(), update=_sampled(0.0, 60))


STAGNATION_SILENT: list[tuple[str, Callable[[], RunView]]] = [
    *[
        (
            f"converged run, updates 1e-4 (seed {s})",
            lambda s=s: make_view(_flat(seed=s), grad=_stats(), update=_sampled(1e-4, 60)),
        )
        for s in range(3)
    ],
    ("cosine decay to 0 at the end", _cosine_to_zero),
    ("warmup from lr=0", _warmup_from_zero),
    (
        "improving with tiny updates",
        lambda: make_view(decaying_loss(300, noise=0.005, start=8.0, end=0.5), grad=_stats(), update=_sampled(1e-7, 60)),
    ),
    ("flat noisy loss, no update ratio sampled", lambda: make_view(_flat(), grad=_stats())),
    ("window not full", lambda: make_view(np.full(StagnationConfig().window_steps - 1, 2.3))),
    (
        "frozen backbone, head has learned and converged",
        lambda: make_view(
            np.r_[decaying_loss(100, start=4.0, end=0.3), _flat(200, level=0.3)],
            grad=np.c_[np.full((60, 3), np.nan), np.ones(60)],
            numel=[5000, 5000, 5000, 400],
            update=_sampled(1e-3, 60),
        ),
    ),
]


@pytest.mark.parametrize(("name", "build"), STAGNATION_SILENT, ids=lambda x: x)
def test_stagnation_silent(name: str, build: Callable[[], RunView]) -> None:
    assert detect_stagnation(build(), StagnationConfig()) is None


# --------------------------------------------------------------------------- evaluate / public surface


def test_public_surface_is_pinned() -> None:
    assert set(rules.__all__) == {
        "SYMPTOMS",
        "Finding",
        "RulesConfig",
        "RunView",
        "evaluate",
        "detect_exploding_gradient",
        "detect_vanishing_gradient",
        "detect_nonfinite",
        "detect_loss_spike",
        "detect_overfitting",
        "detect_stagnation",
    }


def test_evaluate_returns_every_symptom_on_empty_and_healthy_views() -> None:
    for view in (make_view(), make_view(decaying_loss(), grad=noisy_grads(64), update=_sampled(1e-3, 64, 8))):
        out = evaluate(view, RulesConfig())
        assert tuple(out) == SYMPTOMS
        assert all(v is None for v in out.values()), out


def test_evaluate_on_a_broken_run_gives_plain_evidence() -> None:
    loss = decaying_loss(320)
    loss[300:] = np.nan
    g = _explode_after(64, 55, 3.0)
    bad = np.zeros((64, 8), bool)
    bad[61:, 0] = True
    out = evaluate(make_view(loss, grad=g, weight_bad=bad, new_loss_from=290, new_stat_from=58), RulesConfig())
    assert out["nonfinite"] is not None and out["nonfinite"].step == 300
    for finding in out.values():
        if finding is not None:
            assert_plain_json(finding.evidence)


def test_evaluate_never_raises_or_warns_on_degenerate_views() -> None:
    r = rng(7)
    odd = np.array([np.nan, np.inf, -np.inf, 0.0, 1e-300, 1e300, 1.0, -1.0])

    def arr(shape: Any) -> np.ndarray:
        a = np.exp(r.standard_normal(shape))
        mask = r.random(shape) < 0.2
        a[mask] = r.choice(odd, size=int(mask.sum()))
        return a

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(300):
            t, s, n_layers, v = (int(x) for x in r.integers(0, [80, 20, 7, 8]))
            view = RunView(
                layers=tuple(f"l{j}" for j in range(n_layers)),
                layer_numel=r.integers(0, 100, n_layers),
                loss_steps=np.arange(t),
                loss=arr(t),
                lr=arr(t),
                skipped=r.random(t) < 0.3,
                val_steps=np.arange(v) * 10,
                val_loss=arr(v),
                stat_steps=np.arange(s) * 5,
                grad_norm=arr((s, n_layers)),
                weight_norm=arr((s, n_layers)),
                update_ratio=arr((s, n_layers)),
                grad_nonfinite=r.random((s, n_layers)) < 0.1,
                weight_nonfinite=r.random((s, n_layers)) < 0.1,
                new_loss_from=int(r.integers(0, t + 1)),
                new_stat_from=int(r.integers(0, s + 1)),
                new_val_from=int(r.integers(0, v + 1)),
                loss_rank=r.integers(0, 4, t),
            )
            for finding in evaluate(view, RulesConfig()).values():
                if finding is not None:
                    assert_plain_json(finding.evidence)
