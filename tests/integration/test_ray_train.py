"""A Ray Train job whose workers hand reports straight to the aggregator actor (no HTTP hop)."""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("ray.train.torch", reason="ray[train] is part of the test extra; install it with `make install`")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ray_train.py"
_spec = importlib.util.spec_from_file_location("gradwatch_ray_train_example", EXAMPLE)
example = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = example  # cloudpickle pickles a module's functions by value only if it is registered
_spec.loader.exec_module(example)


def test_ray_train_workers_report_to_the_actor_and_the_nan_origin_is_named(service, http, tmp_path):
    from ray import cloudpickle as ray_cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    # The example's loop, by value: Ray workers cannot import the examples folder.
    ray_cloudpickle.register_pickle_by_value(example)
    run = f"raytrain-{uuid.uuid4().hex[:6]}"
    trainer = TorchTrainer(
        example.train_loop,
        train_loop_config={
            "run": run,
            "endpoint": f"actor://{service.service.name}",
            "steps": 40,
            "poison_rank": 1,
            "poison_step": 23,
        },
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=str(tmp_path), name=run),
    )
    trainer.fit()

    deadline = time.monotonic() + 20
    found = []
    while not found and time.monotonic() < deadline:
        status, items = http.get_json(f"/v1/runs/{run}/diagnoses")
        found = [d for d in items or [] if d["symptom"] == "nonfinite"] if status == 200 else []
        time.sleep(0.2)
    (diagnosis,) = found
    assert diagnosis["onset_step"] == 23 and diagnosis["rank"] == 1
    status, runs = http.get_json("/v1/runs")
    (entry,) = [r for r in runs if r["run"] == run]
    assert entry["world_size"] == 2 and entry["ranks"] == [0, 1]
