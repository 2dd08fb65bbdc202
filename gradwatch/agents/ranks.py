"""Where this process sits in a distributed job."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def detect_rank() -> RankInfo:
    """Rank from an initialised ``torch.distributed``, else torchrun's environment, else rank 0 of 1."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return RankInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    except (ImportError, RuntimeError):
        pass
    try:
        rank = int(os.environ.get("RANK", 0))
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    except ValueError:
        return RankInfo()
    if world_size < 1 or not 0 <= rank < world_size:
        return RankInfo()
    return RankInfo(rank, world_size, local_rank)
