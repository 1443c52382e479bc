"""``midefend inspect`` and ``midefend harden``: look into a checkpoint, and harden one.

    midefend inspect model.safetensors            # a table, from the header alone
    midefend inspect model.safetensors --json     # the same as JSON (plus every tensor)
    midefend inspect model.safetensors --check    # also rebuild the model and load it strictly
    midefend inspect calor.safetensors --regime   # the low-rank head's tanh regime on its training images
    midefend harden nodef.safetensors calor.safetensors --rank 16

``inspect`` never reads tensor data (unless ``--check``) and never unpickles.
``harden`` loads IN, replaces its classifier head(s) by CALoR's low-rank tanh
head (SVD warm start by default) and writes OUT atomically; it refuses to
overwrite an existing OUT unless ``--force``. The hardened model still needs
CALoR's fine-tune (``midefend train --defense calor --init OUT``) to be a defense.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..errors import AlreadyHardenedError, ConfigError
from ._common import app, console, err_console, handle_errors

__all__ = ["harden_command", "inspect_command"]


@app.command("inspect")
@handle_errors
def inspect_command(
    ckpt: Annotated[Path, typer.Argument(metavar="CKPT", help="A midefend .safetensors checkpoint.", exists=True, dir_okay=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the header as JSON instead of a table.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Also rebuild the model and load its weights strictly (reads the tensors).")
    ] = False,
    regime: Annotated[
        bool, typer.Option("--regime", help="Measure the low-rank head's regime (tanh saturation) on the training images.")
    ] = False,
    data: Annotated[
        Optional[str], typer.Option("--data", help="With --regime: orl, digits or a folder (default: the recorded data).")
    ] = None,
) -> None:
    """Show a checkpoint's architecture, classes, input, head(s), defense and size (header only)."""
    from ..io.header import read_checkpoint_header  # the header only: no torch import unless --check or --regime

    info = read_checkpoint_header(ckpt)
    if check:
        from ..io.checkpoints import load_checkpoint

        load_checkpoint(ckpt)  # raises on any mismatch, NaN or unknown architecture
    if regime:
        from ..evaluation.regime import checkpoint_regime

        info = {**info, "head_regime": checkpoint_regime(ckpt, data)}
    if as_json:
        if check:
            info = {**info, "check": "ok"}
        typer.echo(json.dumps(info, indent=2))
        return
    console.print(_info_table(info))
    if check:
        console.print("[green]check:[/] the model rebuilds and its weights load strictly")


@app.command("harden")
@handle_errors
def harden_command(
    src: Annotated[Path, typer.Argument(metavar="IN", help="Checkpoint to harden (.safetensors).", exists=True, dir_okay=False)],
    dst: Annotated[Path, typer.Argument(metavar="OUT", help="Checkpoint to write (.safetensors).")],
    rank: Annotated[int, typer.Option("--rank", help="Rank r of the low-rank head, 1 <= r <= min(features, classes).")],
    activation: Annotated[str, typer.Option("--activation", help="tanh (CALoR), sigmoid, relu or identity.")] = "tanh",
    norm: Annotated[bool, typer.Option("--norm/--no-norm", help="Put a BatchNorm1d before the head (as CALoR).")] = True,
    init: Annotated[str, typer.Option("--init", help="svd: warm start from the trained head; random.")] = "svd",
    head: Annotated[
        Optional[list[str]], typer.Option("--head", help="Dotted path of a head (repeat for several); default: found.")
    ] = None,
    reharden: Annotated[
        bool, typer.Option("--reharden", help="Replace heads that are already low-rank (needs --init random).")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
    calibration_data: Annotated[
        Optional[Path],
        typer.Option("--calibration-data", help="Class folder of training images: fits the warm start and reports the accuracy before and after.", exists=True, file_okay=False),
    ] = None,
) -> None:
    """Replace the classifier head(s) of IN by a low-rank tanh head and write OUT."""
    from ..defenses.surgery import harden
    from ..io.checkpoints import load_checkpoint, save_checkpoint

    if dst.is_dir():
        raise ConfigError(f"OUT {str(dst)!r} is a folder, expected a .safetensors file name")
    if dst.exists() and not force:
        raise ConfigError(f"OUT {str(dst)!r} already exists; pass --force to overwrite it")
    if not dst.parent.is_dir():
        raise ConfigError(f"the folder of OUT {str(dst.parent)!r} does not exist")
    ckpt = load_checkpoint(src)
    before = _head_parameters(ckpt.model, head)
    from .harden_inputs import calibration_from_folder, hardened_defense

    calibration = calibration_from_folder(ckpt, calibration_data) if calibration_data is not None else None
    try:
        with warnings.catch_warnings(record=True) as caught:
            # Shown as one-line notes below instead of Python's two-line warning format.
            warnings.simplefilter("always", UserWarning)
            report = harden(
                ckpt.model, rank=rank, activation=activation, norm=norm, init=init, head=head, allow_rehardening=reharden,
                calibration=calibration,
            )
    except AlreadyHardenedError as exc:
        # The library's hint names the Python argument; name the CLI flags instead.
        raise AlreadyHardenedError(f"{str(exc).split(';')[0]}; pass --reharden --init random to replace it") from None
    for warning in caught:
        err_console.print(f"[yellow]note:[/] {warning.message}", highlight=False, soft_wrap=True)
    hardened = report.model
    after = {path: _count(hardened.get_submodule(path)) for path in report.head_paths}
    save_checkpoint(
        hardened,
        dst,
        arch=ckpt.arch,
        arch_kwargs=ckpt.arch_kwargs,
        num_classes=ckpt.num_classes,
        classes=ckpt.classes,
        input_size=ckpt.input_size,
        mean=ckpt.mean,
        std=ckpt.std,
        defense=hardened_defense(ckpt.defense, report.to_dict()),
        # The source's extra (e.g. its test accuracy) describes the model before surgery.
        extra={"hardened_from": src.name, "source_extra": ckpt.extra},
    )
    console.print(f"hardened {report.model_class} (rank {report.rank}, {report.activation}, norm={report.norm}, init={report.init})")
    for item in report.heads:
        old = before.get(item.path)
        old_text = f"{old:,}" if old is not None else "?"
        console.print(
            f"  {item.path}: {item.in_features} features -> {item.num_classes} classes, now rank {item.rank}: "
            f"{old_text} -> {after[item.path]:,} parameters"
        )
    if report.accuracy_before is not None:
        console.print(f"accuracy on the calibration data: {report.accuracy_before:.1%} before, {report.accuracy_after:.1%} after the surgery (no fine-tuning yet)")
    console.print(f"wrote {dst}")
    console.print("next: fine-tune it (CALoR's CA loss) before relying on it as a defense")


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _head_parameters(model: Any, head: Optional[list[str]]) -> dict[str, int]:
    # The heads harden() will replace, counted before the surgery (for the summary only);
    # find_head_paths raises the same typed error harden() would.
    from ..defenses.head_locations import find_head_paths

    out = {}
    for path in find_head_paths(model, head):
        try:
            out[path] = _count(model.get_submodule(path))
        except AttributeError:  # a wrong --head path: harden() names it next
            pass
    return out


def _info_table(info: dict[str, Any]) -> Table:
    table = Table(title=str(info["path"]), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    kwargs = ", ".join(f"{k}={v!r}" for k, v in info["arch_kwargs"].items())
    table.add_row("architecture", info["arch"] + (f" ({kwargs})" if kwargs else ""))
    table.add_row("classes", _classes_text(info["num_classes"], info.get("classes")))
    table.add_row("input size", " x ".join(str(v) for v in info["input_size"]) + "  (C x H x W)")
    table.add_row("normalisation", f"mean {_floats(info['mean'])}, std {_floats(info['std'])}")
    table.add_row("head(s)", _heads_text(info.get("hardening")))
    table.add_row("defense", _json_text(info.get("defense")))
    recorded = (info.get("extra") or {}).get("head_regime")
    if info.get("head_regime") or recorded:
        table.add_row("head regime", _regime_text(info.get("head_regime") or {"data": "training record", "heads": recorded}))
    if info.get("extra"):
        table.add_row("extra", _json_text(info["extra"]))
    table.add_row("tensors", f"{info['num_tensors']:,} ({info['num_parameters']:,} values)")
    table.add_row("bytes", f"{info['tensor_bytes']:,} of tensors, {info['file_bytes']:,} on disk ({_human(info['file_bytes'])})")
    table.add_row("format", f"midefend checkpoint v{info['format_version']}, written by midefend {info.get('midefend_version', '?')}")
    return table


def _classes_text(count: int, names: Optional[list[str]]) -> str:
    if not names:
        return f"{count} (names not recorded: verify assumes torchvision ImageFolder order)"
    shown = ", ".join(names[:5]) + (f", ... {names[-1]}" if count > 5 else "")
    return f"{count}: {shown}"


def _heads_text(hardening: Optional[dict[str, Any]]) -> str:
    if not hardening:
        return "original (not hardened)"
    parts = []
    for item in hardening.get("heads", []):
        parts.append(
            f"{item.get('path')}: low-rank {hardening.get('activation')} head, rank {item.get('rank')}, "
            f"{item.get('in_features')} -> {item.get('num_classes')}, norm={hardening.get('norm')}"
        )
    return "\n".join(parts) or _json_text(hardening)


def _regime_text(regime: dict[str, Any]) -> str:
    lines = [
        f"{path or 'head'}: pre-activation RMS {r['pre_rms']:.3g}, {r['saturated']:.1%} saturated (|z| > 2), "
        f"mean {r['activation']}' {r['mean_slope']:.3g}"
        for path, r in regime["heads"].items()
    ]
    return "\n".join(lines + [f"({regime['data']})"])


def _floats(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _json_text(value: Any) -> str:
    return "none" if value is None else json.dumps(value, sort_keys=True)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{n} B"
        size /= 1024
    return f"{n} B"  # pragma: no cover
