"""Data-parallel and sharded jobs under real torchrun (gloo on CPU) against the real service."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.distributed_job import reference_layer_norms

JOB = Path(__file__).with_name("distributed_job.py")


def _torchrun(nprocs: int, *args: str, timeout: float = 240) -> str:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nprocs}"]
    result = subprocess.run([*command, str(JOB), *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _wait_for(fetch, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.mark.parametrize("user_comm_hook", [False, True], ids=["ddp", "ddp-with-users-comm-hook"])
def test_nan_from_one_ranks_batch_is_attributed_to_that_rank(service, http, user_comm_hook):
    # DDP takes one communication hook per model and watch() registers one: a user's own (fp16 compression
    # here), registered after watch(), used to raise; it now reduces inside gradwatch's.
    run = f"ddp-poison-{uuid.uuid4().hex[:6]}"
    out = _torchrun(
        4,
        "--mode=ddp",
        f"--endpoint={service.url}",
        f"--run-name={run}",
        "--steps=40",
        "--poison-rank=2",
        "--poison-step=27",
        *(["--user-comm-hook"] if user_comm_hook else []),
    )
    if user_comm_hook:
        assert out.count("user comm hook calls 40") == 4, out

    def nonfinite():
        status, items = http.get_json(f"/v1/runs/{run}/diagnoses")
        return [d for d in items or [] if d["symptom"] == "nonfinite"] if status == 200 else []

    (diagnosis,) = _wait_for(nonfinite)
    # Step 27 is not a statistics step and ranks 0, 1, 3 saw finite losses there:
    # only rank 2's own loss and pre-reduction gradients say where it began.
    assert diagnosis["onset_step"] == 27
    assert diagnosis["rank"] == 2
    assert diagnosis["evidence"]["origin_ranks"] == [2]
    assert diagnosis["evidence"]["origin_hosts"] == [socket.gethostname()]
    status, runs = http.get_json("/v1/runs")
    (entry,) = [r for r in runs if r["run"] == run]
    assert entry["world_size"] == 4


@pytest.mark.parametrize("nprocs", [2, 4])
def test_fsdp2_layer_norms_equal_the_unsharded_computation(service, http, nprocs):
    run = f"fsdp{nprocs}-{uuid.uuid4().hex[:6]}"
    steps = 3
    _torchrun(nprocs, "--mode=fsdp", f"--endpoint={service.url}", f"--run-name={run}", f"--steps={steps}")

    def layers():
        status, body = http.get_json(f"/v1/runs/{run}/layers")
        return body if status == 200 and body["step"] == steps - 1 and body["grad_norm"] else None

    body = _wait_for(layers)
    assert body, f"no layer statistics for step {steps - 1}"
    reference = reference_layer_norms(steps)
    assert body["layers"] == list(reference)
    for name, grad, weight in zip(body["layers"], body["grad_norm"], body["weight_norm"], strict=True):
        assert math.isclose(grad, reference[name]["grad_norm"], rel_tol=1e-5), (name, grad, reference[name])
        assert math.isclose(weight, reference[name]["weight_norm"], rel_tol=1e-5), (name, weight, reference[name])
