"""The images a review shows: a run's reconstructions, and each candidate class's private training images.

Reconstructions are read back from the attack folders ``verify`` wrote
(``RUN_DIR/attacks/<name>/`` with ``attack.json`` and ``class_<c>.safetensors``;
a repeated attack's first run ``run0``; a single ``--attack`` run ``RUN_DIR/attack``),
in the flat class-major order of the attack result (and of ``identity.per_image``).

The private images come from the target's data as ``verify`` used it: the
checkpoint named in ``report.json`` (only its header is read, no weights) and
the recorded data spec, through :func:`~midefend.evaluation.private_data.load_private_data`
(same split, same preparation, the target's class order). ``data=`` or
``train_data=``/``test_data=`` override it, as for ``verify``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ..errors import DataError

__all__ = ["AttackImages", "attack_folder", "load_attack_images", "load_candidates", "png_bytes", "read_report"]


@dataclass(frozen=True)
class AttackImages:
    """One attack's reconstructions: ``images (M, C, H, W)`` in [0, 1] and the true class of each, flat, class-major."""

    name: str
    images: torch.Tensor
    labels: list[int]


def read_report(run_dir: Path) -> dict[str, Any]:
    """``RUN_DIR/report.json`` as a dict (a one-line DataError when missing or unreadable)."""
    path = run_dir / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{str(run_dir)!r} is not a verify run folder (no report.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{str(path)!r} is not readable JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(report, dict) or not isinstance(report.get("attacks"), list) or not report["attacks"]:
        raise DataError(f"{str(path)!r} is not a verify report with attack rows")
    return report


def attack_folder(run_dir: Path, name: str) -> Path:
    """Where attack ``name``'s per-class results are (the first run when the attack was repeated)."""
    for folder in (run_dir / "attacks" / name, run_dir / "attacks" / name / "run0", run_dir / "attack"):
        if (folder / "attack.json").is_file():
            return folder
    raise DataError(f"no reconstructions of attack {name!r} in {str(run_dir)!r} (expected attacks/{name}/attack.json)")


def load_attack_images(run_dir: Path, name: str) -> AttackImages:
    """Attack ``name``'s reconstructions, flat in class-major order (best first within a class)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = attack_folder(run_dir, name)
    state = json.loads((folder / "attack.json").read_text(encoding="utf-8"))
    parts, labels = [], []
    for c in state.get("classes") or []:
        path = folder / f"class_{int(c):05d}.safetensors"
        try:
            images = load_file(str(path))["images"]
        except (SafetensorError, OSError, KeyError) as exc:
            raise DataError(f"reconstructions {str(path)!r} are missing or damaged ({type(exc).__name__})") from None
        parts.append(images.float().clamp(0, 1))
        labels += [int(c)] * images.shape[0]
    if not parts:
        raise DataError(f"attack {name!r} in {str(folder)!r} has no reconstructions")
    return AttackImages(name, torch.cat(parts), labels)


def load_candidates(
    report: dict[str, Any], *, shots: int, data: str | None = None, train_data: str | None = None, test_data: str | None = None
) -> dict[int, torch.Tensor]:
    """Class index (the target's order) -> its first ``shots`` private training images ``(s, C, H, W)``."""
    from ..evaluation.private_data import load_private_data
    from ..io.header import read_checkpoint_header

    target = report.get("target") or {}
    if not target.get("path"):
        raise DataError("report.json records no target checkpoint path, so the private images cannot be found")
    header = read_checkpoint_header(target["path"])  # metadata only: no weights are read
    ckpt = SimpleNamespace(
        path=Path(target["path"]), extra=header.get("extra"), input_size=tuple(header["input_size"]), preprocess=header.get("preprocess"),
        classes=header.get("classes"), num_classes=header["num_classes"],
    )  # fmt: skip
    spec = data if data is not None or train_data is not None else (report.get("data") or {}).get("spec")
    if spec is None and train_data is None:
        raise DataError("report.json does not record where the private data is: pass --data, or --train-data and --test-data")
    train, _ = load_private_data(ckpt, spec, train_data=train_data, test_data=test_data)
    out: dict[int, torch.Tensor] = {}
    for c in sorted({int(x) for x in train.labels.tolist()}):
        out[c] = train.images[(train.labels == c).nonzero().flatten()[:shots]]
    return out


def png_bytes(image: torch.Tensor, *, min_side: int = 96) -> bytes:
    """A ``(C, H, W)`` image in [0, 1] as PNG bytes, enlarged (nearest neighbour) to at least ``min_side`` pixels."""
    from PIL import Image

    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array[..., :3])
    scale = max(1, -(-min_side // min(picture.size)))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
