"""Data-parallel training under torchrun: what :func:`~midefend.training.train_classifier` changes on several processes.

Started by ``torchrun --nproc_per_node N`` (or multi-node torchrun), the loop
joins the process group (:func:`midefend.distributed.process_group`: NCCL on
CUDA, gloo on the CPU) and trains with :class:`~torch.nn.parallel.DistributedDataParallel`:

* **The global batch stays as configured.** Every rank draws the same
  shuffling permutation (the loop's seeded data generator), cuts the same
  global batches of ``batch_size`` images and trains on its own contiguous
  slice of ``batch_size / N`` of them (a ``ConfigError`` unless ``N`` divides
  ``batch_size``) — a distributed sampler without padding. DDP averages the
  gradients, so one step equals the single-process step on the global batch;
  an incomplete last global batch is dropped (``drop_last``), so every rank
  takes the same number of steps.
* **Augmentation** parameters are drawn for the whole global batch from the
  shared stream and each rank applies its slice: exactly the single-process
  warps. **Erasing boxes** come from a per-rank generator (rank ``r`` seeds
  ``seed + 1 + r * 1_000_003``; rank 0 is the single-process stream): a
  different stream per rank, reproducible for a fixed world size. The global
  RNG (dropout) is seeded per rank the same way (``seed + r * 1_000_003``). So a
  MIDRE run (or a model with dropout) on ``N`` processes is not identical to one
  process; without erasing and dropout the runs agree up to float summation order.
* **BatchNorm in the low-rank head** is synchronised across ranks: on CUDA it
  becomes :class:`torch.nn.SyncBatchNorm`; on the CPU (gloo), where torch's
  SyncBatchNorm refuses to run, :class:`CrossRankBatchNorm1d` computes the batch
  statistics over all ranks with a differentiable all-reduce. Other BatchNorm
  layers of the backbone keep per-rank statistics, as in plain DDP (convert them
  yourself with ``SyncBatchNorm.convert_sync_batchnorm`` for small per-rank batches).
* **The SVD warm start** of ``harden`` is calibrated on 512 training images
  that every rank draws from the same stream: each rank sees the same features,
  so the feature statistics agree on every rank without a reduction (and DDP
  broadcasts rank 0's parameters when it wraps the hardened model).
* **Checkpoint and resume**: rank 0 writes the checkpoint and the resume file
  (atomically); the per-rank streams (erasing generator, global RNG) are
  gathered into the resume file so each rank continues its own. The training
  record holds ``world_size``; resuming with another world size is refused (the
  fingerprint includes it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from ..distributed import World
from ..errors import ConfigError

#: Added per rank to the erasing generator's seed: distinct streams for any realistic world size.
RANK_SEED_STRIDE = 1_000_003

__all__ = ["CrossRankBatchNorm1d", "DataParallelPlan", "RANK_SEED_STRIDE", "plan_data_parallel", "sync_head_norms", "unsync_head_norms"]


def plan_data_parallel(world: World | None, batch_size: int) -> DataParallelPlan | None:
    """The :class:`DataParallelPlan` of this rank, or ``None`` for one process; checks that the world size divides ``batch_size``."""
    if world is None:
        return None
    if batch_size % world.size:
        raise ConfigError(
            f"batch_size {batch_size} is the global batch and must be divisible by the {world.size} processes of this torchrun "
            f"(each trains on batch_size / {world.size}); use a multiple of {world.size}"
        )
    if batch_size // world.size < 2:
        raise ConfigError(f"batch_size {batch_size} leaves {batch_size // world.size} image per process; BatchNorm needs at least 2")
    return DataParallelPlan(world, batch_size)


@dataclass
class DataParallelPlan:
    """How this rank takes part in a data-parallel run (see the module docstring)."""

    world: World
    batch_size: int

    @property
    def local_batch(self) -> int:
        return self.batch_size // self.world.size

    def steps_per_epoch(self, n: int) -> int:
        """Full global batches only: every rank steps equally often."""
        return n // self.batch_size

    def global_batches(self, n: int, generator: torch.Generator):
        """The single-process shuffling, cut into full global batches."""
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - self.batch_size + 1, self.batch_size):
            yield order[start : start + self.batch_size]

    def local(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (images, labels or augmentation parameters)."""
        b = self.local_batch
        return batch[self.world.rank * b : (self.world.rank + 1) * b]

    def erase_seed(self, seed: int) -> int:
        """The seed of this rank's erasing generator (rank 0: the single-process ``seed + 1``)."""
        return (seed + 1 + self.world.rank * RANK_SEED_STRIDE) % 2**64

    def rng_seed(self, seed: int) -> int:
        """The seed of this rank's global RNG (dropout; rank 0: the single-process ``seed``)."""
        return (seed + self.world.rank * RANK_SEED_STRIDE) % 2**64

    def augment(self, augment: Any, images: torch.Tensor, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """This rank's slice of the global ``batch``, warped with its slice of the single-process draw."""
        mine = images[self.local(batch)]
        if augment.is_identity:
            return mine
        return augment.warp(mine, self.local(augment.sample_theta(len(batch), generator)))

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in DDP (whose construction broadcasts rank 0's parameters and buffers to every rank)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)  # syncs rank 0's buffers at init and each forward

    def rank_streams(self, erase_gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
        """Every rank's erasing-generator and global-RNG states (a collective), for the resume file rank 0 writes."""
        return self.gather({"erase_gen": erase_gen.get_state(), "rng_cpu": torch.get_rng_state()})

    def restore_streams(self, saved: dict[str, Any], erase_gen: torch.Generator) -> None:
        """Continue this rank's own streams from a resume file (refused if it was written by another world size)."""
        streams = saved.get("rank_streams")
        if not isinstance(streams, list) or len(streams) != self.world.size:
            raise ConfigError(f"the resume file was not written by a run of {self.world.size} processes")
        mine = streams[self.world.rank]
        erase_gen.set_state(mine["erase_gen"].to(erase_gen.get_state().device))
        torch.set_rng_state(mine["rng_cpu"])

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over ranks (a new tensor)."""
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (pickled), on every rank, in rank order."""
        out: list[Any] = [None] * self.world.size
        dist.all_gather_object(out, value)
        return out


class CrossRankBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics are those of the batch over all ranks (for gloo on the CPU).

    The per-rank sums ``(Σx, Σx², n)`` are added over ranks by a
    differentiable all-reduce (its backward sums the gradients), so the backward
    pass carries each rank's share of the gradient through the shared mean and
    variance, as :class:`torch.nn.SyncBatchNorm` does on GPUs. In eval mode, or
    outside an initialised process group, it is a plain ``BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        stats = torch.cat([x.sum(0), (x * x).sum(0), x.new_full((1,), float(x.shape[0]))])
        stats = _AllSum.apply(stats)
        m = self.num_features
        count = stats[2 * m]
        mean = stats[:m] / count
        var = (stats[m : 2 * m] / count - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                momentum = 0.1 if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(var.detach() * count / (count - 1), alpha=momentum)
                self.num_batches_tracked.add_(1)
        out = (x - mean) * torch.rsqrt(var + self.eps)
        return out * self.weight + self.bias if self.affine else out


class _AllSum(torch.autograd.Function):
    """Sum over ranks; the gradient of each rank's input is the sum over ranks of the output's gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


def sync_head_norms(model: nn.Module, device: torch.device) -> None:
    """Replace the BatchNorm of every low-rank head by its synchronised form (in place, weights kept)."""
    from ..defenses.heads import LowRankTanhHead

    for head in (m for m in model.modules() if isinstance(m, LowRankTanhHead)):
        for name, child in list(head.named_children()):
            if type(child) is nn.BatchNorm1d:
                setattr(head, name, _synced(child, device))


def unsync_head_norms(model: nn.Module) -> None:
    """Turn synchronised head norms back into plain ``BatchNorm1d`` (the returned and saved model is the single-process one)."""
    from ..defenses.heads import LowRankTanhHead

    for head in (m for m in model.modules() if isinstance(m, LowRankTanhHead)):
        for name, child in list(head.named_children()):
            if isinstance(child, (nn.SyncBatchNorm, CrossRankBatchNorm1d)):
                plain = nn.BatchNorm1d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
                plain.load_state_dict(child.state_dict())
                plain.train(child.training)
                setattr(head, name, plain.to(child.running_mean.device if child.running_mean is not None else "cpu"))


def _synced(norm: nn.BatchNorm1d, device: torch.device) -> nn.Module:
    kind = nn.SyncBatchNorm if device.type == "cuda" else CrossRankBatchNorm1d
    synced = kind(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
    synced.load_state_dict(norm.state_dict())
    synced.train(norm.training)
    return synced.to(device)

