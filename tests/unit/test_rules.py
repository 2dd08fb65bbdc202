"""Table-driven tests of the symptom rules on synthetic runs.

Every rule has cases it must fire on (with the onset step and key evidence
checked) and healthy cases it must stay silent on. Views are built by
``make_view`` from plain numpy series; stats rows every 5 steps as the agent
sends them by default.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from rule_views import assert_plain_json, decaying_loss, explode_after, make_view, noisy_grads, rng, sampled

import gradwatch.service.rules as rules
from gradwatch.service.rules import SYMPTOMS, RulesConfig, RunView, evaluate

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
    for view in (make_view(), make_view(decaying_loss(), grad=noisy_grads(64), update=sampled(1e-3, 64, 8))):
        out = evaluate(view, RulesConfig())
        assert tuple(out) == SYMPTOMS
        assert all(v is None for v in out.values()), out


def test_evaluate_on_a_broken_run_gives_plain_evidence() -> None:
    loss = decaying_loss(320)
    loss[300:] = np.nan
    g = explode_after(64, 55, 3.0)
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
