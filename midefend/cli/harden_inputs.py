"""What ``midefend harden`` adds around the surgery: calibration images from a folder, and the defense record.

- :func:`calibration_from_folder`: the images of a class folder prepared for the
  checkpoint (its preprocessing, size and normalisation), labelled in its class
  order by name, as the ``(inputs, labels)`` pair ``harden`` takes;
- :func:`hardened_defense`: the checkpoint's defense field after the surgery, so
  a hardened file never claims ``nodef`` (and says it is not fine-tuned yet).

>>> hardened_defense({"name": "nodef"}, {"rank": 8, "activation": "tanh", "head_paths": ["fc"]})["name"]
'calor'
>>> hardened_defense({"name": "midre", "erase_scale": [0.1, 0.4]}, {"rank": 8, "activation": "tanh", "head_paths": ["fc"]})["name"]
'midre+calor'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def hardened_defense(defense: dict[str, Any] | None, hardening: dict[str, Any]) -> dict[str, Any]:
    """``defense`` with CALoR's head surgery recorded (``fine_tuned: False`` until a CA stage has run)."""
    before = dict(defense or {})
    name = before.get("name") or "nodef"
    if "calor" not in name:
        name = "calor" if name in ("nodef", "none") else f"{name}+calor"
    return {**before, "name": name, "rank": hardening["rank"], "activation": hardening["activation"], "heads": hardening["head_paths"], "fine_tuned": False}


def calibration_from_folder(ckpt: Any, folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, labels)``: ``folder``'s images normalised for ``ckpt``, labels in its class order."""
    from ..evaluation.class_order import model_classes
    from ..data.class_names import relabel_to
    from ..evaluation.private_data import preparation
    from ..data.folders import load_image_folder

    prep = preparation(ckpt)
    data = load_image_folder(folder, size=prep["size"], channels=prep["channels"], box=prep["box"], crop=prep["crop"])
    names, _ = model_classes(ckpt, data.classes)
    data = relabel_to(data, names, what=f"calibration data {str(folder)!r}")
    return ckpt.normalize(data.images), data.labels


__all__ = ["calibration_from_folder", "hardened_defense"]
