"""torch.distributed plumbing shared by training and verification: torchrun detection, process group, rank helpers.

midefend runs under ``torchrun`` (``torch.distributed.run``) without a launcher
of its own: torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address in each process's environment, and :func:`process_group`
turns that into an initialised process group — ``nccl`` when the run computes
on CUDA, ``gloo`` on the CPU. A world of one process (or no torchrun at all) is
the ordinary single-process run: nothing is initialised.

>>> env_world({})  # no torchrun
>>> env_world({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
World(rank=1, size=4, local_rank=1)
>>> backend_for(torch.device("cpu")), backend_for(torch.device("cuda", 0))
('gloo', 'nccl')
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import ConfigError, MidefendError

__all__ = ["RankFailed", "World", "backend_for", "check_all_ranks", "current_world", "detect_world", "env_world", "is_main_process", "local_device", "process_group"]


class RankFailed(MidefendError):
    """Another rank of a distributed run failed; this rank stops too (the message names the rank and its error)."""


@dataclass(frozen=True)
class World:
    """Where this process stands in a distributed run."""

    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints and reports."""
        return self.rank == 0


def env_world(environ: Mapping[str, str] | None = None) -> World | None:
    """The :class:`World` torchrun describes in ``environ`` (default ``os.environ``); ``None`` outside torchrun or for one process."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        size, rank = int(env["WORLD_SIZE"]), int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(
            f"torchrun environment is malformed: WORLD_SIZE={env.get('WORLD_SIZE')!r}, RANK={env.get('RANK')!r}, LOCAL_RANK={env.get('LOCAL_RANK')!r}"
        ) from None
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise ConfigError(f"torchrun environment is inconsistent: RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local_rank}")
    return World(rank, size, local_rank) if size > 1 else None


def current_world() -> World | None:
    """The :class:`World` of an initialised default process group of more than one rank, else ``None``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    env = env_world()
    local_rank = env.local_rank if env is not None else dist.get_rank()
    return World(dist.get_rank(), dist.get_world_size(), local_rank)


def detect_world() -> World | None:
    """The run's :class:`World`: an initialised process group's, else torchrun's environment's (``None``: one process)."""
    return current_world() if dist.is_available() and dist.is_initialized() else env_world()


def is_main_process() -> bool:
    """Whether this process writes files: one process, or rank 0 of a distributed run."""
    world = detect_world()
    return world is None or world.is_main


def backend_for(device: torch.device) -> str:
    """``"nccl"`` for CUDA devices, ``"gloo"`` otherwise (the CPU)."""
    return "nccl" if device.type == "cuda" else "gloo"


def local_device(device: str | torch.device, world: World | None) -> torch.device:
    """This rank's device: ``"cuda"`` becomes ``cuda:<LOCAL_RANK>`` (one GPU per process, torchrun's convention); others as given."""
    dev = torch.device(device)
    if world is not None and dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", world.local_rank)
    return dev


@contextlib.contextmanager
def process_group(device: str | torch.device) -> Iterator[World | None]:
    """Join the torchrun process group (once per process) and yield the :class:`World` (``None`` for one process).

    A process group that is already initialised (an earlier midefend call, or a
    user's own DDP script) is used as it is. One initialised here stays open for
    later calls in the same process (a script that trains NoDef, then CALoR):
    re-creating a gloo group in a process is not reliable. It is destroyed at exit.
    """
    if dist.is_available() and dist.is_initialized():
        yield current_world()
        return
    world = env_world()
    if world is None:
        yield None
        return
    if not dist.is_available():
        raise ConfigError("torchrun started this process but this torch build has no torch.distributed")
    dev = local_device(device, world)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend_for(dev), device_id=dev if dev.type == "cuda" else None)
    atexit.register(_destroy)
    yield world


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_all_ranks(error: BaseException | None) -> None:
    """A collective: every rank passes its own failure (or ``None``); if any rank failed, every rank raises.

    Without it a rank that fails before a collective leaves the others waiting
    in it until the timeout (30 minutes by default). The failing rank re-raises
    its own exception; the others raise :class:`RankFailed` naming the rank.
    """
    world = current_world()
    if world is None:
        if error is not None:
            raise error
        return
    message = None if error is None else (str(error).splitlines()[0] if str(error) else type(error).__name__)
    messages: list[str | None] = [None] * world.size
    dist.all_gather_object(messages, message)
    if error is not None:
        raise error
    for rank, text in enumerate(messages):
        if text is not None:
            raise RankFailed(f"rank {rank} of {world.size} failed: {text}")
