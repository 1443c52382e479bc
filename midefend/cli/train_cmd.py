"""``midefend train``: train a target (or evaluation) model with a defense and save a checkpoint.

    midefend train --data orl --defense midre --erase-max 0.8 --out midre.safetensors
    midefend train --data orl --defense calor --rank 16 --init nodef.safetensors --out calor.safetensors
    midefend train --data digits --arch midefend/vgg_small --augment digits --out eval.safetensors
    midefend train --data orl --arch facenet --size 112 --freeze 0.5 --out facenet-nodef.safetensors

The checkpoint's metadata records the data (spec, classes, split), the
defense, the training settings and the test accuracy; ``midefend inspect``
shows them. With ``--resume`` the training state is saved after every epoch
next to the checkpoint (``OUT.state.pt``); the same command started again
continues where an interrupted run stopped, with the same final weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ConfigError
from ..training.stages import DEFENSES
from ._common import app, console, handle_errors


@app.command("train")
@handle_errors
def train(
    data: Annotated[str, typer.Option("--data", help="'orl' ($MIDEFEND_ORL_DIR), 'digits', or a folder of class subfolders.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.safetensors).", dir_okay=False)],
    arch: Annotated[str, typer.Option("--arch", help="Architecture, e.g. midefend/resnet_small, timm/resnet18.")] = (
        "midefend/resnet_small"
    ),
    defense: Annotated[str, typer.Option("--defense", help=f"One of {', '.join(DEFENSES)}.")] = "nodef",
    rank: Annotated[Optional[int], typer.Option("--rank", help="CALoR head rank (default: 40% of the classes, 2..30).")] = None,
    erase_max: Annotated[float, typer.Option("--erase-max", help="MIDRE a_h: erased area ~ U[0.1, a_h].")] = 0.4,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Training epochs (default per data set).")] = None,
    calor_epochs: Annotated[int, typer.Option("--calor-epochs", help="CALoR head-training epochs.")] = 10,
    calor_lr: Annotated[float, typer.Option("--calor-lr", help="CALoR head-stage learning rate.")] = 1e-4,
    ca_lr: Annotated[float, typer.Option("--ca-lr", help="CALoR confidence-adaptation learning rate.")] = 1e-4,
    ca_params: Annotated[
        str, typer.Option("--ca-params", help="What the CA fine-tune trains: head (low-rank head only) or all.")
    ] = "head",
    ca_epochs: Annotated[int, typer.Option("--ca-epochs", help="CALoR confidence-adaptation epochs.")] = 5,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default per data set).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Batch size (default per data set).")] = None,
    augment: Annotated[Optional[str], typer.Option("--augment", help="none, flip, light, strong or digits.")] = None,
    size: Annotated[Optional[int], typer.Option("--size", help="Image side in pixels (default per data set).")] = None,
    channels: Annotated[Optional[int], typer.Option("--channels", help="1 (grey) or 3 (RGB).")] = None,
    init: Annotated[
        Optional[Path], typer.Option("--init", help="Start from this checkpoint (e.g. NoDef for CALoR).", dir_okay=False)
    ] = None,
    freeze: Annotated[
        Optional[float], typer.Option("--freeze", help="--arch facenet: fraction of the pre-trained trunk kept frozen (0-1).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of initialisation and training.")] = 0,
    split_seed: Annotated[int, typer.Option("--split-seed", help="Seed of the train/test split.")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")] = "cpu",
    resume: Annotated[
        bool, typer.Option("--resume", help="Save the training state after every epoch (OUT.state.pt) and continue from it.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a model on DATA with a defense and write a checkpoint."""
    from ..training.targets import train_target

    if out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got {str(out)!r}")
    if not out.parent.exists():
        raise ConfigError(f"--out folder {str(out.parent)!r} does not exist")
    arch_options = None
    if freeze is not None:
        if arch not in ("facenet", "midefend/facenet"):
            raise ConfigError(f"--freeze applies to --arch facenet (a pre-trained backbone), got --arch {arch}")
        arch_options = {"freeze": freeze}
    result = train_target(
        data,
        arch_options=arch_options,
        arch=arch,
        defense=defense,
        rank=rank,
        erase_max=erase_max,
        epochs=epochs,
        calor_epochs=calor_epochs,
        calor_lr=calor_lr,
        ca_epochs=ca_epochs,
        ca_lr=ca_lr,
        ca_params=ca_params,
        lr=lr,
        batch_size=batch_size,
        augment=augment,
        size=size,
        channels=channels,
        split_seed=split_seed,
        seed=seed,
        init=init,
        device=device,
        out=out,
        progress=not quiet,
        resume=out.with_name(out.name + ".state.pt") if resume else None,
    )
    accuracy = f"{result.test_accuracy:.1%}" if result.test_accuracy is not None else "n/a"
    console.print(
        f"{defense} {arch} on {data}: test accuracy {accuracy}, "
        f"train confidence {result.train_confidence:.3f}, {result.seconds:.0f} s -> {out}",
        highlight=False,
        soft_wrap=True,
    )
