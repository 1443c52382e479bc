"""The dlib judge as a module: ``embed(images) -> (B, 128)``, ``aligned(images) -> (B,)`` bool.

dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``: a
29-layer ResNet trained by Davis King with a metric loss on about 3 million
faces, 128-d output, two faces of one person lie within about 0.6 of each
other) embeds aligned 150×150 RGB chips (:mod:`.aligner`). It runs in dlib's
own C++ on the CPU: no gradient flows through it (a judge, not a loss), and
the module holds no torch parameters, so its :attr:`DlibFace.device` is always
the CPU.

Results are cached per image, by content: ``aligned(images)`` after
``embed(images)`` (or after embedding the same images in other batches)
detects nothing again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import ConfigError
from .aligner import CHIP_SIZE, FaceAligner, centre_crop_chip, to_rgb

EMBEDDING_SIZE = 128
#: Images remembered, least recently used dropped first: an embedded image keeps 128 floats, one only
#: aligned so far keeps its 150×150×3 chip until it is embedded (at most 4096 × 67 kB = 276 MB).
CACHE_SIZE = 4096


def check_images(images: Any, who: str = "the dlib face judge") -> torch.Tensor:
    """``images`` as a detached CPU float tensor, or a one-line ConfigError: non-empty ``(B, C, H, W)``, C 1 or 3, float, finite."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0 or min(images.shape[2:]) == 0:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"{who} embeds non-empty (B, C, H, W) images with C 1 or 3, got {got}")
    if not images.is_floating_point():
        raise ConfigError(f"{who} embeds float images in [0, 1], got dtype {images.dtype}")
    images = images.detach().cpu().float().contiguous()
    bad = ~torch.isfinite(images).flatten(1).all(dim=1)
    if bad.any():
        raise ConfigError(f"{who} got {int(bad.sum())} image(s) with NaN or infinite values (first: index {int(bad.nonzero()[0])})")
    return images


class DlibFace(nn.Module):
    """dlib's face-recognition ResNet behind midefend's recogniser interface.

    Args:
        dlib: the ``dlib`` module; ``detector``, ``landmarks``, ``recognition``: its
            HOG frontal detector, 5-point shape predictor and ResNet
            (:func:`~midefend.dlibface.load_dlibface` builds them).
        align: False skips detection: every image is centre-cropped (for measuring
            what alignment is worth; a judge should keep the default).
        batch_size: chips per call into dlib.
    """

    name = "dlib"
    description = "dlib face-recognition ResNet (dlib_face_recognition_resnet_model_v1, metric, 128-d), on aligned 150×150 chips"
    input_size = CHIP_SIZE
    embedding_size = EMBEDDING_SIZE

    def __init__(self, dlib: Any, detector: Any, landmarks: Any, recognition: Any, *, align: bool = True, batch_size: int = 32) -> None:
        super().__init__()
        self.aligner = FaceAligner(dlib, detector, landmarks)
        self.recognition = recognition
        self.align = align
        self.batch_size = batch_size
        self._cache: OrderedDict[str, tuple[torch.Tensor | None, bool, np.ndarray | None]] = OrderedDict()

    @property
    def device(self) -> torch.device:
        """Always the CPU: dlib computes there."""
        return torch.device("cpu")

    def train(self, mode: bool = True) -> DlibFace:
        return super().train(False)

    @staticmethod
    def _key(image: torch.Tensor) -> str:
        return f"{hashlib.blake2b(image.numpy().tobytes(), digest_size=16).hexdigest()}{tuple(image.shape)}"

    def _remember(self, key: str, value: tuple[torch.Tensor | None, bool, np.ndarray | None]) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def _chip(self, image: torch.Tensor) -> tuple[np.ndarray, bool]:
        if not self.align:
            return centre_crop_chip(to_rgb(image), self.input_size), False
        return self.aligner.align(image)

    def _align_all(self, images: torch.Tensor) -> list[tuple[str, bool]]:
        """Chip every image not seen yet: ``(cache key, aligned)`` for each of ``images`` in order."""
        out = []
        for image in images:
            key = self._key(image)
            if key not in self._cache:
                chip, ok = self._chip(image)
                self._remember(key, (None, ok, chip))
            out.append((key, self._cache[key][1]))
        return out

    def aligned(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: True where a face was detected and aligned, False where the centre-crop fallback was used."""
        return torch.tensor([ok for _, ok in self._align_all(check_images(images))], dtype=torch.bool)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in ``[0, 1]`` (C 1 or 3, any size) -> ``(B, 128)`` float32 on the CPU (not differentiable)."""
        images = check_images(images)
        out: list[torch.Tensor] = []
        for start in range(0, images.shape[0], self.batch_size):  # chunks: a chunk's entries outlive its own use
            keys = [key for key, _ in self._align_all(images[start : start + self.batch_size])]
            todo = list(dict.fromkeys(k for k in keys if self._cache[k][0] is None))
            if todo:
                vectors = self.recognition.compute_face_descriptor([self._cache[k][2] for k in todo])
                for key, vector in zip(todo, vectors):
                    self._remember(key, (torch.tensor(np.asarray(vector), dtype=torch.float32), self._cache[key][1], None))
            out.extend(self._cache[k][0] for k in keys)  # type: ignore[misc]
        return torch.stack(out)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, align={self.align}, chips={self.input_size}x{self.input_size}, dim={self.embedding_size}"


__all__ = ["CACHE_SIZE", "EMBEDDING_SIZE", "DlibFace", "check_images"]
