"""A sharded gradwatch service on a real two-node local Ray cluster, run as its own process.

    python tests/integration/sharded_cluster.py OUT.json

Starts a Ray head and a second Ray node on this machine, ``gradwatch serve``'s
service with two aggregator shards, and two 4-rank DDP jobs under torchrun
whose runs hash to different shards (one with a NaN in rank 2's batch). Midway
it kills the poisoned run's shard; Ray restarts it. Writes what the service
answered afterwards to OUT.json for the test to check. (Its own process: a
pytest process is already connected to the session's single-node Ray.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JOB = Path(__file__).with_name("distributed_job.py")


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _run_names(shards: int) -> tuple[str, str]:
    from gradwatch.wire import shard_of

    tag = uuid.uuid4().hex[:6]
    names = [f"sharded-{tag}-{i}" for i in range(64)]
    poisoned = names[0]
    healthy = next(n for n in names if shard_of(n, shards) != shard_of(poisoned, shards))
    return poisoned, healthy


def _torchrun(url: str, run: str, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    command += [str(JOB), "--mode=ddp", f"--endpoint={url}", f"--run-name={run}", "--steps=60", "--step-sleep=0.1"]
    return subprocess.Popen([*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main(out: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from gradwatch.service.server import BackgroundService, Service
    from gradwatch.wire import shard_of

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, namespace="gradwatch", log_to_driver=False)
    result: dict = {"nodes": len([n for n in ray.nodes() if n["Alive"]])}
    background = BackgroundService(Service(port=0, name="sharded", shards=2, address=cluster.address)).start()
    try:
        url = background.url
        service = background.service
        poisoned, healthy = _run_names(2)
        jobs = [
            _torchrun(url, poisoned, "--poison-rank=2", "--poison-step=40"),
            _torchrun(url, healthy),
        ]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill the shard once the poisoned run is well under way
            runs = {r["run"]: r for r in _get(url + "/v1/runs")}
            if runs.get(poisoned, {}).get("step", -1) >= 15:
                break
            time.sleep(0.2)
        victim = service.actors[shard_of(poisoned, 2)]
        result["killed_at_step"] = runs.get(poisoned, {}).get("step")
        ray.kill(victim, no_restart=False)
        outputs = [job.communicate(timeout=300)[0] for job in jobs]
        result["job_exit_codes"] = [job.returncode for job in jobs]
        result["job_output_tail"] = [o[-2000:] for o in outputs]
        time.sleep(3)
        result["runs"] = _get(url + "/v1/runs")
        result["poisoned"] = {"run": poisoned, "diagnoses": _get(url + f"/v1/runs/{poisoned}/diagnoses")}
        result["healthy"] = {"run": healthy, "diagnoses": _get(url + f"/v1/runs/{healthy}/diagnoses")}
        with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
            metrics = response.read().decode()
        result["metrics_runs"] = sorted(
            {
                line.split('run="')[1].split('"')[0]
                for line in metrics.splitlines()
                if line.startswith("gradwatch_step{")
            }
        )
        result["shards"] = {"poisoned": shard_of(poisoned, 2), "healthy": shard_of(healthy, 2)}
    finally:
        background.stop()
        ray.shutdown()
        cluster.shutdown()
    Path(out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.path.insert(0, str(ROOT))
    main(sys.argv[1])
