"""``midefend train``: train a target (or evaluation) model with a defense and save a checkpoint.

    midefend train --data orl --defense midre --erase-max 0.8 --out midre.safetensors
    midefend train --data orl --defense calor --rank 16 --init nodef.safetensors --out calor.safetensors
    midefend train --data orl --defense nls --smoothing -0.05 --out nls.safetensors
    midefend train --data digits --arch midefend/vgg_small --augment digits --out eval.safetensors
    midefend train --data orl --arch facenet --size 96 --backbone-freeze 0.5 --out facenet-nodef.safetensors

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
from ._common import BUILTIN_DEFENSES, app, check_defense, console, handle_errors


@app.command("train")
@handle_errors
def train(
    data: Annotated[str, typer.Option("--data", help="'orl' ($MIDEFEND_ORL_DIR), 'digits', or a folder of class subfolders.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.safetensors).", dir_okay=False)],
    arch: Annotated[str, typer.Option("--arch", help="Architecture, e.g. midefend/resnet_small, timm/resnet18.")] = (
        "midefend/resnet_small"
    ),
    defense: Annotated[str, typer.Option("--defense", help=f"One of {', '.join(sorted(BUILTIN_DEFENSES))} (or a defense your --arch-module registers).")] = "nodef",
    rank: Annotated[Optional[int], typer.Option("--rank", help="CALoR head rank (default: 40% of the classes, 2..30).")] = None,
    erase_max: Annotated[float, typer.Option("--erase-max", help="MIDRE a_h: erased area ~ U[0.1, a_h].")] = 0.4,
    smoothing: Annotated[float, typer.Option("--smoothing", help="NLS label-smoothing factor (negative).")] = -0.05,
    beta: Annotated[float, typer.Option("--beta", help="MID: weight of the KL term.")] = 1e-2,
    hsic_x: Annotated[float, typer.Option("--hsic-x", help="BiDO: weight of HSIC(input, hidden).")] = 0.05,
    hsic_y: Annotated[float, typer.Option("--hsic-y", help="BiDO: weight of HSIC(label, hidden).")] = 0.5,
    freeze: Annotated[float, typer.Option("--freeze", help="TL: frozen leading fraction of the parameters.")] = 0.5,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Training epochs (default per data set).")] = None,
    calor_epochs: Annotated[int, typer.Option("--calor-epochs", help="Fine-tune epochs (CALoR head stage, TL).")] = 10,
    calor_lr: Annotated[float, typer.Option("--calor-lr", help="Fine-tune learning rate (CALoR head stage, TL).")] = 1e-3,
    head_init: Annotated[
        str, typer.Option("--head-init", help="CALoR head start: svd-lstsq (saturated, default), svd (copy) or random.")
    ] = "svd-lstsq",
    linear_range: Annotated[
        float, typer.Option("--linear-range", help="RMS of the tanh input at the warm start (2: saturating; 0.1: linear).")
    ] = 2.0,
    head_activation: Annotated[
        str, typer.Option("--head-activation", help="tanh (CALoR), sigmoid, relu or identity (the paper's Table 5).")
    ] = "tanh",
    ca_lr: Annotated[
        Optional[float], typer.Option("--ca-lr", help="CALoR confidence-adaptation learning rate (default 1e-4; authors 2e-5).")
    ] = None,
    ca_params: Annotated[
        Optional[str], typer.Option("--ca-params", help="What the CA fine-tune trains: head (default) or all (authors).")
    ] = None,
    ca_optimizer: Annotated[
        str, typer.Option("--ca-optimizer", help="default (the run's optimiser) or authors (SGD 0.9, MultiStepLR 3,4).")
    ] = "default",
    ca_epochs: Annotated[int, typer.Option("--ca-epochs", help="CALoR confidence-adaptation epochs.")] = 5,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default per data set).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Batch size (default per data set).")] = None,
    augment: Annotated[Optional[str], typer.Option("--augment", help="none, flip, light, strong or digits.")] = None,
    size: Annotated[Optional[int], typer.Option("--size", help="Image side in pixels (default per data set).")] = None,
    channels: Annotated[Optional[int], typer.Option("--channels", help="1 (grey) or 3 (RGB).")] = None,
    init: Annotated[
        Optional[Path], typer.Option("--init", help="Start from this checkpoint (e.g. NoDef for CALoR).", dir_okay=False)
    ] = None,
    backbone_freeze: Annotated[
        Optional[float], typer.Option("--backbone-freeze", help="--arch facenet: fraction of the pre-trained trunk kept frozen (0-1).")
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
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got {str(out)!r}")
    check_defense(defense)  # an unknown name fails here, with the known ones, before any data is read
    from ..training.targets import train_target

    if not out.parent.exists():
        raise ConfigError(f"--out folder {str(out.parent)!r} does not exist")
    arch_options = None
    if backbone_freeze is not None:
        if arch not in ("facenet", "midefend/facenet"):
            raise ConfigError(f"--backbone-freeze applies to --arch facenet (a pre-trained backbone), got --arch {arch}")
        arch_options = {"freeze": backbone_freeze}
    result = train_target(
        data,
        arch_options=arch_options,
        arch=arch,
        defense=defense,
        rank=rank,
        erase_max=erase_max,
        smoothing=smoothing,
        beta=beta,
        hsic_x=hsic_x,
        hsic_y=hsic_y,
        freeze=freeze,
        epochs=epochs,
        calor_epochs=calor_epochs,
        calor_lr=calor_lr,
        ca_epochs=ca_epochs,
        ca_lr=ca_lr,
        ca_params=ca_params,
        ca_optimizer=ca_optimizer,
        head_init=head_init,
        linear_range=linear_range,
        head_activation=head_activation,
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
    from ..distributed import is_main_process

    if not is_main_process():
        return  # torchrun: rank 0 reports
    accuracy = f"{result.test_accuracy:.1%}" if result.test_accuracy is not None else "n/a"
    console.print(
        f"{defense} {arch} on {data}: test accuracy {accuracy}, "
        f"train confidence {result.train_confidence:.3f}, {result.seconds:.0f} s -> {out}",
        highlight=False,
        soft_wrap=True,
    )
