"""Each benchmark runs briefly and prints its table: CI checks they work; the numbers live in docs/benchmarks.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str, timeout: float = 300) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _row(text: str, first_cell: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(first_cell):
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r} in:\n{text}")


def _ms(cell: str) -> float:
    return float(cell.removesuffix(" ms"))


def test_agent_overhead_benchmark_measures_every_variant():
    out = _run("agent_overhead.py", "--model", "gpt-tiny", "--reps", "2", "--block", "3", "--warmup", "2")
    variants = ("bare", "gradwatch default", "gradwatch every step", "gradwatch stats every step", "naive .item()")
    for variant in (*variants, "naive histc"):
        cells = _row(out, variant)
        assert float(cells[1]) > 0 and cells[2].endswith("×")
    assert _row(out, "bare")[2] == "1.000×"
    assert re.search(r"Extra host RSS with a monitor: default [+-][0-9.]+ MB", out)
    assert re.search(r"Counted directly .*: default [0-9.]+ ms/step = [0-9.]+% of bare", out)
    # Every variant's reports fit the wire schema (a rejected one is logged instead of sent, which is not the cost
    # being measured).
    assert "do not fit the wire schema" not in out


def test_aggregator_ingest_benchmark_delivers_reports_over_http():
    out = _run(
        "aggregator_ingest.py",
        *("--duration", "4", "--latency-duration", "2", "--latency-rate", "5", "--warmup", "1"),
        *("--procs", "2", "--runs-per-proc", "2", "--layers", "100", "--sample-every", "1", "--scrape-every", "1"),
    )
    sustained, half = _row(out, "sustained"), _row(out, "half load")
    assert float(sustained[2].replace(",", "")) > 0 and sustained[-1] == "0"  # reports/s, no errors
    assert half[-1] == "0" and 0 < _ms(half[7]) < 10_000  # p99
    assert re.search(r"The service counted [1-9][0-9]* reports ingested", out)
    assert re.search(r"aggregator actor [0-9]+ → max [0-9]+", out)  # the actor's process was found and sampled
    # /metrics was read during the phases, as Prometheus would (a scraper that died once went unnoticed here).
    assert re.search(r"every 1 s \([1-9][0-9]* in all, each [0-9]+ ms at the median\)", out)


def test_metrics_scrape_benchmark_times_real_scrapes():
    out = _run("metrics_scrape.py", "--runs", "3", "--layers", "20", "--scrapes", "2")
    cells = _row(out, "3 × 20")
    assert int(cells[1].replace(",", "")) >= 3 * 20 * 6  # every layer series of every run is there
    assert _ms(cells[5]) > 0
    assert "byte-identical" in out


def test_snapshot_cost_benchmark_writes_and_reads_back_the_state():
    out = _run("snapshot_cost.py", "--runs", "2", "--layers", "50", "--reports", "20")
    assert re.search(r"2 runs x 50 layers: [0-9.]+ MB, write [0-9.]+ s, read [0-9.]+ s, fork [0-9.]+ ms", out), out


def test_evaluation_pacing_benchmark_compares_idle_and_paced_verdicts():
    out = _run("evaluation_pacing.py", "--only", "spike_scaled_batch_mlp_adam,stagnant_tiny_lr_sgd")
    counts = {o: int(_row(out, o)[1]) for o in ("same", "detected later", "onset moved", "missed when paced")}
    assert sum(counts.values()) >= 2  # both scenarios raised their symptom on the idle aggregator at least
    assert "[2/2] stagnant_tiny_lr_sgd" in out


def test_update_ratio_cost_benchmark_times_both_ways():
    out = _run("update_ratio_cost.py", "--device", "cpu", "--models", "gpt-tiny", "--reps", "2")
    for way in ("full copy", "stride sample"):
        cells = next(c for c in (_row_cells(line) for line in out.splitlines()) if c and c[2] == way)
        assert cells[0] == "gpt-tiny" and int(cells[1]) > 0 and float(cells[3]) > 0


def _row_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| gpt") else []


def test_hook_costs_benchmark_times_every_piece_in_place_and_warm():
    out = _run("hook_costs.py", "--steps", "2")
    for piece in ("every-step gradient check", "gradient statistics", "weight statistics without max-abs"):
        in_place, warm = (float(cell) for cell in _row(out, piece)[1:3])
        assert in_place > 0 and warm > 0
