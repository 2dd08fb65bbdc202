"""Two aggregator shards on a real two-node local Ray cluster; one shard is killed mid-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("sharded_cluster.py")


def test_two_shards_on_two_nodes_survive_a_shard_kill_with_correct_diagnoses(tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "RAY_TMPDIR": str(Path(os.environ.get("RAY_TMPDIR", "/tmp")))}
    # Its own process and its own Ray cluster: this pytest process is already attached to the session's.
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["nodes"] == 2
    assert report["shards"]["poisoned"] != report["shards"]["healthy"]
    assert report["killed_at_step"] is not None and report["killed_at_step"] >= 15
    assert report["job_exit_codes"] == [0, 0], report["job_output_tail"]
    runs = {r["run"]: r for r in report["runs"]}
    poisoned, healthy = report["poisoned"]["run"], report["healthy"]["run"]
    for run in (poisoned, healthy):  # one run list over both shards, every rank's last step in
        assert runs[run]["world_size"] == 4 and runs[run]["ranks"] == [0, 1, 2, 3] and runs[run]["step"] == 59
    (diagnosis,) = report["poisoned"]["diagnoses"]
    assert diagnosis["symptom"] == "nonfinite" and diagnosis["onset_step"] == 40 and diagnosis["rank"] == 2
    assert report["healthy"]["diagnoses"] == []
    assert report["metrics_runs"] == sorted([poisoned, healthy])  # one /metrics view over both shards
