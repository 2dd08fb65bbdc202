"""GET /v1/runs/{run}/series and the live page's files, over an in-process aggregator (no Ray)."""

from __future__ import annotations

import asyncio
import json
import math
import time

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gradwatch.service.aggregator import Aggregator
from gradwatch.service.backends import LocalBackend
from gradwatch.service.config import ServiceConfig, WindowConfig
from gradwatch.service.http import make_app
from gradwatch.service.page import ASSETS, asset
from gradwatch.service.page.series import SeriesLimits, merge_layers, peak_buckets
from gradwatch.wire import LayerStats, Report, StepRecord


def _layers(grads: list[float | None], names: list[str] | None = None) -> LayerStats:
    names = names or [f"l{i}" for i in range(len(grads))]
    return LayerStats(
        names=names,
        numel=[10] * len(names),
        grad_norm=grads,
        grad_max_abs=[None if g is None else (g if not math.isfinite(g) else 0.1) for g in grads],
        weight_norm=[1.0] * len(names),
        weight_max_abs=[0.5] * len(names),
    )


def _steps(steps, grads=lambda s: [1e-6, 1e-3, 1.0], every=5, loss=lambda s: 2.0 - 0.01 * s, val_every=0):
    return [
        StepRecord(
            step=s,
            loss=loss(s),
            lr=0.1,
            val_loss=1.5 if val_every and s % val_every == 0 else None,
            layers=_layers(grads(s)) if s % every == 0 else None,
        )
        for s in steps
    ]


def _get(aggregator: Aggregator, path: str, accept: str = "application/json") -> tuple[int, dict, bytes]:
    async def scenario():
        async with TestClient(TestServer(make_app(LocalBackend(aggregator), ServiceConfig()))) as client:
            response = await client.get(path, headers={"Accept": accept})
            return response.status, dict(response.headers), await response.read()

    return asyncio.run(scenario())


def _series(aggregator: Aggregator, run: str = "r", query: str = "") -> dict:
    status, _, body = _get(aggregator, f"/v1/runs/{run}/series{query}")
    assert status == 200, body
    return json.loads(body)  # strict JSON: NaN/Infinity appear as strings


# --- the pure downsampling helpers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "limit", "expected"),
    [
        ([1.0, 2.0, 3.0], 5, [0, 1, 2]),  # short: everything
        ([1.0, 9.0, 2.0, 3.0, 1.0, 1.0], 3, [1, 3, 5]),  # each pair's peak, last point always
        ([1.0, math.nan, 5.0, 2.0, 1.0, 0.5], 3, [1, 2, 5]),  # a NaN outranks any finite loss
        ([1.0, 2.0, math.inf, 3.0], 2, [1, 3]),  # ... and so does Inf, unless it is not last
    ],
)
def test_peak_buckets_keep_peaks_and_the_newest_point(values, limit, expected):
    assert peak_buckets(np.array(values), limit).tolist() == expected


def test_peak_buckets_bound_the_answer():
    picked = peak_buckets(np.random.default_rng(0).normal(size=100_000), 600)
    assert len(picked) <= 600 and picked[-1] == 99_999 and np.all(np.diff(picked) > 0)


def test_merge_layers_uses_the_geometric_mean_and_never_hides_a_nan():
    matrix = np.array([[1e-6, 1e-6], [1e-2, math.nan], [1.0, 1.0], [math.nan, 4.0]])
    present = np.array([[True, True], [True, True], [True, True], [False, True]])
    values, merged_present, labels, counts = merge_layers(matrix, present, ("a", "b", "c", "d"), 2)
    assert labels == ["a … b", "c … d"] and counts == [2, 2]
    assert values[0, 0] == pytest.approx(1e-4)  # sqrt(1e-6 * 1e-2)
    assert math.isnan(values[0, 1])  # layer b's NaN gradient
    assert values[1, 0] == pytest.approx(1.0)  # d absent at column 0: only c counts
    assert values[1, 1] == pytest.approx(2.0)
    assert merged_present.all()


def test_merge_layers_leaves_small_nets_alone():
    matrix = np.ones((3, 2))
    values, _, labels, counts = merge_layers(matrix, matrix > 0, ("x", "y", "z"), 8)
    assert values is matrix and labels == ["x", "y", "z"] and counts == [1, 1, 1]


# --- the endpoint ------------------------------------------------------------------------------------


def test_series_carries_loss_val_lr_global_norm_and_the_layer_matrix_in_model_order():
    agg = Aggregator()
    agg.ingest(Report(run="r", steps=_steps(range(40), val_every=10)))
    body = _series(agg)
    assert body["run"] == "r" and body["step"] == 39 and body["finished"] is False
    assert body["steps"] == list(range(40)) and body["loss"][0] == 2.0 and body["lr"] == [0.1] * 40
    assert body["val_steps"] == [0, 10, 20, 30] and body["val_loss"] == [1.5] * 4
    assert body["stat_steps"] == list(range(0, 40, 5))
    assert body["layers"] == ["l0", "l1", "l2"] and body["layer_count"] == 3 and body["layer_rows"] == [1, 1, 1]
    matrix = body["layer_grad_norm"]
    assert [len(row) for row in matrix] == [8, 8, 8]  # layers x statistics rows
    assert matrix[0][0] == 1e-6 and matrix[2][-1] == 1.0
    # The global norm is the agent's: the L2 norm over all measured layers.
    assert body["grad_norm"][0] == pytest.approx(math.sqrt(1e-12 + 1e-6 + 1.0))


def test_series_writes_nan_gradients_as_strings_and_unmeasured_ones_as_null():
    agg = Aggregator()
    agg.ingest(Report(run="r", steps=_steps(range(10), grads=lambda s: [None, math.nan if s == 5 else 1.0, math.inf])))
    body = _series(agg)
    assert body["layer_grad_norm"][0] == [None, None]  # a frozen layer: no gradient, not NaN
    assert body["layer_grad_norm"][1] == [1.0, "NaN"]
    assert body["layer_grad_norm"][2] == ["Infinity", "Infinity"]
    assert body["grad_norm"] == ["Infinity", "NaN"]


def test_series_marks_a_nan_loss_and_keeps_it_when_downsampling():
    agg = Aggregator(ServiceConfig(windows=WindowConfig(steps=2048)))
    agg.ingest(Report(run="r", steps=_steps(range(2000), loss=lambda s: math.nan if s == 1234 else 1.0, every=50)))
    body = _series(agg, query="?points=100")
    assert len(body["steps"]) <= 100 and body["loss_points"] == 2000 and body["steps"][-1] == 1999
    assert body["loss"][body["steps"].index(1234)] == "NaN"


def test_series_stays_small_for_a_thousand_layer_run():
    agg = Aggregator()
    names = [f"blocks.{i}.mlp" for i in range(1000)]
    rng = np.random.default_rng(0)
    for start in range(0, 320, 32):
        records = [
            StepRecord(step=s, loss=1.0, layers=_layers([float(g) for g in rng.lognormal(size=1000)], names))
            for s in range(start, start + 32, 5)
        ]
        agg.ingest(Report(run="wide", steps=records))
    started = time.perf_counter()
    status, _, raw = _get(agg, "/v1/runs/wide/series")
    elapsed = time.perf_counter() - started
    body = json.loads(raw)
    assert status == 200 and body["layer_count"] == 1000
    assert len(body["layers"]) == 256 and sum(body["layer_rows"]) == 1000
    assert body["layers"][0] == "blocks.0.mlp … blocks.2.mlp" and body["layers"][-1].endswith("blocks.999.mlp")
    assert len(body["stat_steps"]) == 64  # the window's statistics rows (WindowConfig.stat_rows)
    assert len(raw) < 400_000 and elapsed < 2.0, (len(raw), elapsed)
    assert len(json.loads(_get(agg, "/v1/runs/wide/series?rows=2000&columns=8")[2])["layers"]) == 1000


def test_series_limits_are_validated_and_unknown_runs_are_404():
    agg = Aggregator()
    agg.ingest(Report(run="r", steps=_steps(range(10))))
    assert len(_series(agg, query="?columns=8")["stat_steps"]) == 2
    status, _, body = _get(agg, "/v1/runs/r/series?columns=2")
    assert status == 400 and "columns" in json.loads(body)["details"][0]
    status, _, body = _get(agg, "/v1/runs/r/series?colums=20")
    assert status == 400 and "colums" in json.loads(body)["details"][0]
    assert _get(agg, "/v1/runs/nope/series")[0] == 404
    assert _get(agg, "/v1/runs/-bad/series")[0] == 400


def test_series_of_a_run_without_layer_statistics_is_empty_not_an_error():
    agg = Aggregator()
    agg.ingest(Report(run="r", steps=_steps(range(1, 4), every=1000)))
    body = _series(agg, query="?" + "&".join(f"{k}={v}" for k, v in SeriesLimits().model_dump().items()))
    assert body["stat_steps"] == [] and body["layers"] == [] and body["grad_norm"] == []


# --- the page itself ---------------------------------------------------------------------------------


def test_root_serves_the_page_to_browsers_and_the_json_index_to_api_clients():
    agg = Aggregator()
    status, headers, body = _get(agg, "/", accept="text/html,application/xhtml+xml,*/*;q=0.8")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="page/app.js"' in body and "script-src" not in headers["Content-Security-Policy"]
    status, _, body = _get(agg, "/")
    index = json.loads(body)
    assert index["service"] == "gradwatch" and "GET /v1/runs/{run}/series" in index["endpoints"]
    assert "GET /v1/runs/{run}/diagnoses" in index["endpoints"]


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_page_files_are_served_from_package_data(name):
    status, headers, body = _get(Aggregator(), f"/page/{name}")
    assert status == 200 and body == asset(name) and len(body) > 500
    assert headers["Content-Type"].startswith(ASSETS[name]) and headers["X-Content-Type-Options"] == "nosniff"


def test_only_the_page_files_are_served():
    assert _get(Aggregator(), "/page/series.py")[0] == 404
    assert _get(Aggregator(), "/page/__init__.py")[0] == 404


def test_the_page_never_writes_report_text_as_html():
    script = asset("app.js").decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


def test_nanmedian_of_values_near_the_float_maximum_warns_nothing():
    import warnings

    import numpy as np

    from gradwatch.service.rules.robust import nanmedian

    huge = np.array([[1.7e308, 1.7e308], [1.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nanmedian(huge, axis=1).tolist() == [float("inf"), 1.5]
        assert nanmedian(np.array([1.7e308, 1.7e308])) == float("inf")


def test_nanmedian_of_complete_rows_matches_numpy_exactly():
    from gradwatch.service.rules.robust import nanmedian

    rng = np.random.default_rng(0)
    for shape in [(1, 250), (1, 251), (64, 250), (7, 1), (3, 2)]:
        for trial in range(20):
            a = rng.standard_normal(shape) * 10 ** rng.uniform(-30, 30)
            if trial % 5 == 0:
                a.flat[0] = np.inf
            if trial % 7 == 0:
                a.flat[-1] = -np.inf
            with np.errstate(all="ignore"):
                expected = np.median(a, axis=1)
            assert np.array_equal(nanmedian(a, axis=1), expected, equal_nan=True)


def test_nanmedian_of_a_whole_array_matches_numpy_over_its_finite_and_infinite_values():
    from gradwatch.service.rules.robust import nanmedian

    rng = np.random.default_rng(1)
    for size in [1, 2, 3, 250, 251]:
        for trial in range(20):
            a = rng.standard_normal(size) * 10 ** rng.uniform(-30, 30)
            if trial % 5 == 0:
                a[0] = np.inf
            if trial % 7 == 0:
                a[-1] = -np.inf
            if trial % 3 == 0 and size > 2:
                a[1] = np.nan  # ignored
            with np.errstate(all="ignore"):
                expected = float(np.median(a[~np.isnan(a)]))
            got = nanmedian(a.reshape(-1, 1) if trial % 2 else a)
            assert got == expected or (np.isnan(got) and np.isnan(expected))
            assert isinstance(got, float)
    assert np.isnan(nanmedian(np.array([np.nan, np.nan])))
    assert np.isnan(nanmedian(np.array([])))
