"""Where this process sits in a distributed job: rank, world size, local rank."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _ray_train_rank() -> RankInfo | None:
    """Ray Train's worker context, when this process is a Ray Train worker (Ray already imported)."""
    if "ray.train" not in sys.modules:
        return None
    try:
        from ray import train

        context = train.get_context()
        rank, world_size = context.get_world_rank(), context.get_world_size()
        local_rank = context.get_local_rank()
    except Exception:  # noqa: BLE001 - not inside a Ray Train worker, or an older Ray: fall back
        return None
    if rank is None or world_size is None:
        return None
    return RankInfo(int(rank), int(world_size), int(local_rank or 0))


def detect_rank() -> RankInfo:
    """Rank from ``torch.distributed`` when initialised, else Ray Train's context, else torchrun/Slurm's environment."""
    local_rank = _env_int("LOCAL_RANK", _env_int("SLURM_LOCALID", 0))
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return RankInfo(dist.get_rank(), dist.get_world_size(), local_rank)
    except (ImportError, RuntimeError):
        pass
    ray_rank = _ray_train_rank()
    if ray_rank is not None:
        return ray_rank
    rank = _env_int("RANK", _env_int("SLURM_PROCID", 0))
    world_size = _env_int("WORLD_SIZE", _env_int("SLURM_NTASKS", 1))
    if world_size < 1 or not 0 <= rank < world_size:
        return RankInfo()
    return RankInfo(rank, world_size, max(local_rank, 0))
