"""MIDRE random erasing (Nguyen et al., "Random Erasing vs. Model Inversion"): train on images
with one random box erased (area ``U[0.1, 0.4]`` or ``U[0.1, 0.8]``, square, ImageNet-mean fill).

:mod:`.params` decides what to erase, :mod:`.functional` writes it (torch; one Triton launch on
CUDA), :mod:`.transforms` connect the two for a DataLoader or a training step.
"""

from .functional import erase_boxes_, random_erase_batch
from .params import IMAGENET_MEAN, EraseBoxes, FillSpec, fill_spec, sample_boxes
from .transforms import BatchRandomErasing, RandomErasingTransform

__all__ = ["BatchRandomErasing", "EraseBoxes", "FillSpec", "IMAGENET_MEAN", "RandomErasingTransform",
           "erase_boxes_", "fill_spec", "random_erase_batch", "sample_boxes"]  # fmt: skip
