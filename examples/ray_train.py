"""Ray Train with gradwatch: workers hand reports straight to the aggregator actor.

Start the service on the Ray cluster first, then run this driver on it:

    gradwatch serve --address auto --name default     # on the cluster (once)
    python examples/ray_train.py --address auto --workers 2

Each worker calls ``gradwatch.watch(..., endpoint="actor://default")``: no HTTP
port between workers and the service. Ranks come from Ray Train's context.
"""

from __future__ import annotations

import argparse


def train_loop(config: dict) -> None:
    import torch
    from ray import train
    from torch import nn

    import gradwatch

    torch.manual_seed(0)
    model = train.torch.prepare_model(nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    rank = train.get_context().get_world_rank()
    gen = torch.Generator().manual_seed(rank)
    with gradwatch.watch(model, optimizer, run=config["run"], endpoint=config["endpoint"], flush_interval=0.1) as mon:
        for step in range(config["steps"]):
            x = torch.randn(16, 8, generator=gen)
            if rank == config.get("poison_rank") and step == config.get("poison_step"):
                x[0, 0] = float("nan")  # a bad reading in this worker's batch only
            loss = nn.functional.mse_loss(model(x), x[:, :1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            mon.step(loss.detach())


def main() -> None:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    parser.add_argument("--service", default="default", help="the --name given to gradwatch serve")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--run", default="ray-train-example")
    args = parser.parse_args()
    ray.init(address=args.address)
    TorchTrainer(
        train_loop,
        train_loop_config={"run": args.run, "endpoint": f"actor://{args.service}", "steps": args.steps},
        scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=False),
        run_config=RunConfig(name=args.run),
    ).fit()


if __name__ == "__main__":
    main()
