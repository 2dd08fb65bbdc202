"""Table-driven tests of the nonfinite rule on synthetic runs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from rule_views import check, decaying_loss, make_view, noisy_grads

from gradwatch.service.rules import RunView
from gradwatch.service.rules.config import (
    NonfiniteConfig,
)
from gradwatch.service.rules.nonfinite import detect_nonfinite

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
        "caller's grad norm Inf on a step between statistics steps",
        lambda: make_view(np.ones(100), grad=np.ones((20, 3)), norm_bad=np.arange(100) >= 92, new_loss_from=90),
        92,
        ["grad_norm"],
        None,
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
        "caller's grad norm Inf on GradScaler-skipped steps",
        lambda: make_view(np.ones(100), skipped=np.arange(100) % 7 == 0, norm_bad=np.arange(100) % 7 == 0),
    ),
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
