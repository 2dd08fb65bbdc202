"""A small distributed training job for the integration tests, launched by real torchrun (gloo, CPU).

    python -m torch.distributed.run --standalone --nproc-per-node N distributed_job.py \
        --mode ddp|fsdp --endpoint URL --run-name NAME [--poison-rank R --poison-step S] [--steps K] [--user-comm-hook]

Every rank trains its slice of one global batch per step, instrumented as a
user would: ``gradwatch.watch(model, optimizer, run=...)`` then ``mon.step(loss)``.
``reference_layer_norms`` trains the same model on the whole batch in one
process, for comparing the sharded statistics with the unsharded truth.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.distributed as dist
from torch import nn

GLOBAL_BATCH = 32
DIM = 16


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(DIM, 24), nn.Tanh(), nn.Linear(24, 24), nn.LayerNorm(24), nn.Tanh(), nn.Linear(24, 3)
    )


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(GLOBAL_BATCH, DIM, generator=gen)
    y = (x[:, :3].argmax(dim=1)).long()
    return x, y


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def reference_layer_norms(steps: int) -> dict[str, dict[str, float]]:
    """Per-layer gradient and weight norms at the last of ``steps`` whole-batch steps, in one process."""
    model = make_model()
    optimizer = make_optimizer(model)
    out: dict[str, dict[str, float]] = {}
    for step in range(steps):
        x, y = global_batch(step)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grads = {
            name: math.sqrt(sum(float(p.grad.pow(2).sum()) for p in m.parameters(recurse=False)))
            for name, m in model.named_modules()
            if any(True for _ in m.parameters(recurse=False))
        }
        optimizer.step()
        weights = {
            name: math.sqrt(sum(float(p.detach().pow(2).sum()) for p in m.parameters(recurse=False)))
            for name, m in model.named_modules()
            if any(True for _ in m.parameters(recurse=False))
        }
        out = {name: {"grad_norm": grads[name], "weight_norm": weights[name]} for name in grads}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["ddp", "fsdp"], required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--run-name", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--poison-rank", type=int, default=-1)
    parser.add_argument("--poison-step", type=int, default=-1)
    parser.add_argument("--step-sleep", type=float, default=0.0, help="seconds to idle per step (a slower job)")
    parser.add_argument(
        "--user-comm-hook", action="store_true", help="register DDP fp16 compression after watch(), as a user would"
    )
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    import gradwatch  # after init_process_group, as most training scripts do

    model = make_model()
    if args.mode == "ddp":
        model = nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        for module in model:
            if isinstance(module, (nn.Linear, nn.LayerNorm)):
                fully_shard(module)
        fully_shard(model)
    optimizer = make_optimizer(model)
    per_rank = GLOBAL_BATCH // world
    stats_every = 1 if args.mode == "fsdp" else 5
    with gradwatch.watch(
        model, optimizer, run=args.run_name, endpoint=args.endpoint, flush_interval=0.1, stats_every=stats_every
    ) as mon:
        hook_calls = [0]
        if args.user_comm_hook:
            from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import fp16_compress_hook

            def compress(state, bucket):  # type: ignore[no-untyped-def]
                hook_calls[0] += 1
                return fp16_compress_hook(state, bucket)

            model.register_comm_hook(state=None, hook=compress)
        for step in range(args.steps):
            x, y = global_batch(step)
            x, y = x[rank * per_rank : (rank + 1) * per_rank].clone(), y[rank * per_rank : (rank + 1) * per_rank]
            if rank == args.poison_rank and step == args.poison_step:
                x[0, 0] = float("nan")  # one bad reading in this rank's batch only
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            mon.step(loss.detach())
            time.sleep(args.step_sleep)
    if args.user_comm_hook:
        print(f"rank {rank}: user comm hook calls {hook_calls[0]}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
