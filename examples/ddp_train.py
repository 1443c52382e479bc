"""Harden your own DistributedDataParallel loop: torchrun, one process per GPU (or CPU processes with gloo).

The loop below is a plain DDP loop (``init_process_group``, a ``DistributedSampler``,
``DistributedDataParallel``); the lines marked ``# midefend:`` add the defenses:

1. MIDRE: ``random_erase_batch`` erases one box per image of each rank's batch,
   with a generator seeded per rank (a different stream on each rank,
   reproducible for a fixed number of processes);
2. CALoR: ``harden`` swaps the head of the *unwrapped* model for a low-rank tanh
   head (SVD warm start; every rank calibrates on the same images, and DDP
   broadcasts rank 0's weights when it wraps the model again), its BatchNorm
   synchronised on GPUs (``SyncBatchNorm``); a short cross-entropy fine-tune,
   then the confidence-adaptation fine-tune of the head;
3. ``save_checkpoint`` on rank 0 only.

Run it::

    torchrun --nproc_per_node 4 examples/ddp_train.py --orl ../shared/data/orl_faces --out hardened.safetensors
    torchrun --nproc_per_node 2 examples/ddp_train.py --quick     # CPU, gloo: seconds
    python examples/ddp_train.py --quick                           # one process, no torchrun

``--orl`` defaults to ``$MIDEFEND_ORL_DIR``; ``--batch-size`` is the global batch
(each of N processes loads batch-size / N images per step).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from midefend.data import load_dataset
from midefend.defenses import ConfidenceAdaptationLoss, LowRankTanhHead, harden, random_erase_batch
from midefend.io import save_checkpoint

MEAN, STD = (0.5,), (0.5,)


def flip_half(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch (faces are symmetric enough)."""
    mask = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if not dist.is_initialized():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - MEAN[0]) / STD[0]


def run_epochs(model, loader, optimizer, epochs, loss_fn, device, *, aug_gen, erase_gen=None, only=None) -> None:
    for epoch in range(epochs):
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        model.train(only is None)
        for module in only or ():
            module.train()
        for x, y in loader:
            x, y = flip_half(x.to(device), aug_gen), y.to(device)
            if erase_gen is not None:  # midefend: MIDRE, one square box per image, ImageNet-mean fill, in [0, 1]
                x = random_erase_batch(x, scale=(0.1, 0.4), ratio=(1.0, 1.0), value="mean", generator=erase_gen)
            loss = loss_fn(model(normalize(x)), y)
            optimizer.zero_grad()
            loss.backward()  # DDP averages the gradients of all ranks here
            optimizer.step()
        if not dist.is_initialized() or dist.get_rank() == 0:
            print(f"  epoch {epoch + 1}/{epochs}: loss {loss.item():.4f} (last batch, rank 0)", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orl", type=Path, default=os.environ.get("MIDEFEND_ORL_DIR"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", default=os.environ.get("MIDEFEND_EXAMPLES_QUICK") == "1")
    args = parser.parse_args(argv)
    if args.orl is None:
        parser.error("give --orl PATH or set MIDEFEND_ORL_DIR")

    # -- torchrun sets RANK, WORLD_SIZE, LOCAL_RANK; without it this is an ordinary one-process run
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if distributed:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if args.batch_size % world:
        parser.error(f"--batch-size {args.batch_size} must be divisible by the {world} processes")
    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    size, epochs, rank_r = (32, 1, 3) if args.quick else (args.size, args.epochs, args.rank)

    # ORL faces cropped to the face and resized, grey, in [0, 1]; 7 images per identity for training
    train_data, _ = load_dataset(args.orl, size=size, channels=1)
    if args.quick:  # 5 identities
        keep = train_data.labels < 5
        train_data = type(train_data)(train_data.images[keep], train_data.labels[keep], train_data.classes[:5], name="orl-5")
    sampler = DistributedSampler(train_data, shuffle=True, seed=0, drop_last=True) if distributed else None
    loader = DataLoader(train_data, batch_size=args.batch_size // world, sampler=sampler, shuffle=sampler is None, drop_last=True)
    num_classes = train_data.num_classes

    # -- ordinary training with erasing on each rank's batch
    model = timm.create_model("resnet18", pretrained=False, num_classes=num_classes, in_chans=1).to(device)
    aug_gen = torch.Generator(device=device).manual_seed(1000 + rank)  # flips: a stream per rank
    erase_gen = torch.Generator(device=device).manual_seed(1 + rank)  # midefend: erasing boxes, a stream per rank
    ddp = wrap(model, device)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-3, weight_decay=0.05)
    run_epochs(ddp, loader, optimizer, epochs, F.cross_entropy, device, aug_gen=aug_gen, erase_gen=erase_gen)

    # -- CALoR: harden the unwrapped model (every rank calibrates on the same un-augmented images), wrap again
    calibration = normalize(train_data.images[:256].to(device))
    report = harden(model, rank=rank_r, calibration=calibration)  # midefend: low-rank tanh head, SVD warm start
    heads = [m for m in model.modules() if isinstance(m, LowRankTanhHead)]
    if distributed and device.type == "cuda":
        for head in heads:  # midefend: the head's BatchNorm sees the global batch (torch's SyncBatchNorm needs GPUs)
            head.norm = torch.nn.SyncBatchNorm.convert_sync_batchnorm(head.norm)
    ddp = wrap(model, device)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-3, weight_decay=0.05)
    run_epochs(ddp, loader, optimizer, max(1, epochs // 3), F.cross_entropy, device, aug_gen=aug_gen, erase_gen=erase_gen)

    # -- CALoR stage 2: confidence adaptation of the head only (the backbone frozen before DDP wraps it)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in (p for m in heads for p in m.parameters()):
        p.requires_grad_(True)
    ddp = wrap(model, device)
    ca_loss = ConfidenceAdaptationLoss(a=1.0, b=8.0)  # midefend: a * p_y**b * log p_y
    optimizer = torch.optim.AdamW([p for m in heads for p in m.parameters()], lr=1e-4)
    run_epochs(ddp, loader, optimizer, max(1, epochs // 6), ca_loss, device, aug_gen=aug_gen, only=heads)
    for p in model.parameters():
        p.requires_grad_(True)

    # -- rank 0 writes the checkpoint (the SyncBatchNorm state dict is a BatchNorm1d's: it loads into the plain head)
    if rank == 0:
        out = args.out or Path(tempfile.mkdtemp()) / "hardened.safetensors"
        save_checkpoint(  # midefend: self-describing safetensors checkpoint
            model.cpu(), out, arch="timm/resnet18", arch_kwargs={"in_chans": 1}, num_classes=num_classes,
            classes=train_data.classes,  # midefend's natural order s1, s2, ... (verify matches data by these names)
            input_size=(1, size, size), mean=MEAN, std=STD,
            defense={"name": "midre+calor", "erase_scale": [0.1, 0.4], "rank": rank_r, "ca_b": 8.0},
            extra={"world_size": world, "data": {"spec": str(Path(args.orl).resolve()), "split": {"train_per_class": 7, "seed": 0}}},
        )  # fmt: skip
        print(f"hardened {report.heads} on {world} process(es); saved {out}")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
