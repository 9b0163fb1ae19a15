"""The process group as the generator and trainer see it under torchrun.

Generation shards its prompts over the ranks of an initialised process group and gathers every
output back on every rank; one process (no torchrun, or WORLD_SIZE 1) is the same code with one
shard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def dist_info() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank0_decides(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a broadcast), so that ranks whose local files differ take the
    same branch around a collective operation; ``value`` itself without a process group."""
    _, world = dist_info()
    if world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def init_distributed() -> None:
    """Join the process group when launched by torchrun with several processes (WORLD_SIZE > 1),
    so the generator shards the work instead of every rank generating everything; no-op otherwise."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def sharded(items: Sequence[Any], work: Callable[[list[Any]], list[Any]], shard: bool = True) -> list[Any]:
    """``work`` on this rank's share of ``items`` (every ``world``-th one); under torch.distributed
    every rank gets all results back, in the order of ``items``."""
    rank, world = dist_info() if shard else (0, 1)
    mine = list(range(rank, len(items), world))
    local = work([items[i] for i in mine])
    if world == 1:
        return local
    import torch.distributed as dist

    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, list(zip(mine, local, strict=True)))
    out: list[Any] = [None] * len(items)
    for part in gathered:
        for i, o in part:
            if out[i] is not None:
                raise RuntimeError(f"generation shard overlap at prompt {i}")
            out[i] = o
    missing = [i for i, o in enumerate(out) if o is None]
    if missing:
        raise RuntimeError(f"generation shards missed prompts {missing[:10]}")
    return out
