"""Aligned 150×150 RGB face chips for dlib's recogniser, with a recorded centre-crop fallback.

dlib's ResNet was trained on chips cut by ``dlib.get_face_chip`` around 5
landmarks; unaligned input costs it much of its accuracy (on ORL, see
docs/judges.md). Each image goes through:

1. **RGB, uint8**: grey is repeated to three channels; values are clamped to
   ``[0, 1]`` and rounded to 0-255.
2. **Resize for the detector**: the HOG frontal detector finds faces of about
   80 px and up, so an image whose shorter side is under :data:`MIN_SIDE` px is
   upsampled (bilinear) until it is :data:`MIN_SIDE`; one whose longer side is over
   :data:`MAX_SIDE` is shrunk (antialiased). ORL's 112×92 frames become 273×224,
   a 64×64 reconstruction 224×224.
3. **Detect**: the HOG detector without further upsampling; if it finds no
   face, once more on the image with a :data:`PAD` border (edge pixels
   repeated), which finds faces that fill the whole frame (tight crops such as
   midefend's 64×64 ORL faces). The highest-scoring detection is kept.
4. **Align**: 5-point landmarks, then ``get_face_chip(img, shape, size=150)``
   (padding 0.25, dlib's default and the one its recogniser expects).
5. **Fallback**: no face in either pass -> the largest centred square of the
   image resized to 150×150, and the image is recorded as *not aligned*
   (:meth:`FaceAligner.align` returns the flag; callers count and report it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: Side of the chips dlib's recogniser takes.
CHIP_SIZE = 150
#: Images with a shorter side below this are upsampled to it before detection.
MIN_SIDE = 224
#: Images with a longer side above this are shrunk to it before detection.
MAX_SIDE = 1024
#: Border added (fraction of the longer side, each side) for the second detection pass.
PAD = 0.25


def to_rgb(image: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` with C 1 or 3 -> ``(3, H, W)`` float clamped to ``[0, 1]``."""
    image = image.float().clamp(0.0, 1.0)
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def resize_for_detection(image: torch.Tensor, *, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> torch.Tensor:
    """``image`` ``(3, H, W)`` scaled (aspect kept) so its shorter side is at least ``min_side`` and its longer at most ``max_side``.

    >>> tuple(resize_for_detection(torch.zeros(3, 112, 92)).shape)
    (3, 273, 224)
    >>> tuple(resize_for_detection(torch.zeros(3, 300, 400)).shape)
    (3, 300, 400)
    """
    h, w = image.shape[-2:]
    scale = 1.0
    if min(h, w) < min_side:
        scale = min_side / min(h, w)
    elif max(h, w) > max_side:
        scale = max_side / max(h, w)
    if scale == 1.0:
        return image
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=scale < 1.0)[0].clamp(0.0, 1.0)


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` in ``[0, 1]`` -> a contiguous ``(H, W, 3)`` uint8 array (what dlib reads)."""
    return np.ascontiguousarray((image * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy())


def centre_crop_chip(image: torch.Tensor, size: int = CHIP_SIZE) -> np.ndarray:
    """The fallback chip: the largest centred square of ``image`` ``(3, H, W)``, resized to ``size``, as uint8 HWC.

    >>> centre_crop_chip(torch.ones(3, 112, 92)).shape
    (150, 150, 3)
    """
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[:, top : top + side, left : left + side]
    chip = F.interpolate(square[None], size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)[0]
    return to_uint8_hwc(chip.clamp(0.0, 1.0))


class FaceAligner:
    """Detect, landmark and cut one face chip per image (see the module docstring for the steps).

    Args:
        dlib: the ``dlib`` module.
        detector: ``dlib.get_frontal_face_detector()``.
        landmarks: a 5-point ``dlib.shape_predictor``.
    """

    def __init__(self, dlib: Any, detector: Any, landmarks: Any, *, chip_size: int = CHIP_SIZE, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE, pad: float = PAD) -> None:
        self.dlib, self.detector, self.landmarks = dlib, detector, landmarks
        self.chip_size, self.min_side, self.max_side, self.pad = chip_size, min_side, max_side, pad

    def _detect(self, pixels: np.ndarray) -> Any | None:
        boxes, scores, _ = self.detector.run(pixels, 0, 0.0)
        if len(boxes) == 0:
            return None
        return boxes[int(np.argmax(scores))]

    def align(self, image: torch.Tensor) -> tuple[np.ndarray, bool]:
        """``image`` ``(C, H, W)`` in ``[0, 1]`` -> ``(chip (150, 150, 3) uint8, aligned)``; ``aligned`` False: the centre-crop fallback."""
        rgb = to_rgb(image.detach().cpu())
        big = resize_for_detection(rgb, min_side=self.min_side, max_side=self.max_side)
        candidates = [big]
        if self.pad > 0:
            p = max(1, round(self.pad * max(big.shape[-2:])))
            candidates.append(F.pad(big[None], (p, p, p, p), mode="replicate")[0])
        for candidate in candidates:
            pixels = to_uint8_hwc(candidate)
            box = self._detect(pixels)
            if box is not None:
                shape = self.landmarks(pixels, box)
                chip = np.ascontiguousarray(self.dlib.get_face_chip(pixels, shape, size=self.chip_size))
                return chip, True
        return centre_crop_chip(rgb, self.chip_size), False


__all__ = ["CHIP_SIZE", "MAX_SIDE", "MIN_SIDE", "PAD", "FaceAligner", "centre_crop_chip", "resize_for_detection", "to_rgb", "to_uint8_hwc"]
