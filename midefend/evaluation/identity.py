"""Judge reconstructions with a face recogniser: nearest private identity and δ_face.

A trained evaluation model answers "which class is this?" with logits. A face
recogniser such as FaceNet answers in an embedding space instead: a
reconstruction shows person ``c`` if its embedding lies nearest to ``c``'s
private training images (the *gallery*). :class:`NearestIdentityEvaluator`
turns that into the interface the rest of the evaluation uses
(``predict(images) -> scores (N, C)``, ``predict(images, features=True) ->
embeddings``), so :func:`~midefend.evaluation.evaluate.evaluate_attack` judges
with it unchanged:

=================  ===================================================================
quantity           definition
=================  ===================================================================
class distance     ``d(x, c) = min_j ‖e(x) − e(p_j)‖₂`` over the gallery images ``p_j``
                   of class ``c`` (``e``: the unit embedding)
score              ``−d(x, c)``: top-k attack accuracy = the true class among the k
                   nearest identities
δ_face             mean over reconstructions of ``d(x, y)``, ``y`` the attacked class
                   (CALoR's definition: the l2 distance to the nearest private image)
agreement          fraction of reconstructions on which two evaluators give the same
                   top-1 verdict (both hit, or both miss)
=================  ===================================================================

>>> gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
>>> d = class_distances(torch.tensor([[0.8, 0.6]]), gallery, torch.tensor([0, 1, 1]), num_classes=2)
>>> [round(v, 4) for v in d[0].tolist()]  # class 0: |(.8,.6)-(1,0)|; class 1: nearest is (.6,.8)
[0.6325, 0.2828]
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from .metrics import topk_hits


def class_distances(query: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor, *, num_classes: int) -> torch.Tensor:
    """``(N, num_classes)`` distance of each query to its nearest gallery item of each class (``inf``: none)."""
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1] or gallery_labels.shape != gallery.shape[:1]:
        raise ConfigError(f"class_distances needs query (N, D), gallery (M, D) and labels (M,), got {tuple(query.shape)}, {tuple(gallery.shape)}, {tuple(gallery_labels.shape)}")
    dists = torch.cdist(query.double().cpu(), gallery.double().cpu())  # (N, M)
    out = torch.full((query.shape[0], num_classes), float("inf"), dtype=torch.float64)
    index = gallery_labels.cpu().long()[None, :].expand_as(dists)
    return out.scatter_reduce(1, index, dists, reduce="amin", include_self=True)


def delta_face(distances: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over reconstructions of the distance to their own class's nearest gallery image."""
    own = distances.gather(1, labels.cpu().long()[:, None]).squeeze(1)
    if torch.isinf(own).any():
        missing = sorted({int(c) for c in labels.cpu()[torch.isinf(own)]})
        raise ConfigError(f"no private images of class(es) {missing[:5]} to measure δ_face against")
    return float(own.mean())


def agreement(scores_a: torch.Tensor, scores_b: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of reconstructions on which both evaluators' top-1 verdicts (hit or miss) coincide."""
    return float((topk_hits(scores_a, labels, 1) == topk_hits(scores_b, labels, 1)).float().mean())


def leave_one_out_accuracy(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of items whose nearest *other* item (l2) has the same label: a recogniser's sanity check.

    >>> leave_one_out_accuracy(torch.tensor([[0.0], [0.1], [5.0], [5.2], [0.2]]), torch.tensor([0, 0, 1, 1, 1]))  # only 0.2 (class 1) is nearest to class 0
    0.8
    """
    dists = torch.cdist(embeddings.double().cpu(), embeddings.double().cpu())
    dists.fill_diagonal_(float("inf"))
    return float((labels.cpu()[dists.argmin(dim=1)] == labels.cpu()).double().mean())


class NearestIdentityEvaluator(nn.Module):
    """An embedder + the private gallery, behaving like a classifier whose logits are ``−distance``.

    Args:
        embedder: a module with ``embed(images in [0, 1]) -> (B, D)`` (e.g. :func:`~midefend.facenet.load_facenet`).
        gallery_images, gallery_labels: the private training images and their classes.
        num_classes: the class count (default: ``max(label) + 1``).
        batch_size: images per embedder call (FaceNet at 160 px: 32 keeps memory near 1 GB).

    Embeddings are cached by content, so the gallery and the reconstructions are
    embedded once even when several metrics ask for them; with ``share=True``
    the cache is shared by every evaluator of that ``name`` in the process (for
    an embedder with fixed weights, such as FaceNet: ``compare`` then embeds the
    private gallery once for all its models).
    """

    _shared: dict[str, torch.Tensor] = {}

    def __init__(self, embedder: nn.Module, gallery_images: torch.Tensor, gallery_labels: torch.Tensor, *, num_classes: int | None = None, name: str = "facenet", batch_size: int = 32, share: bool = False) -> None:
        super().__init__()
        if gallery_images.ndim != 4 or gallery_labels.shape != gallery_images.shape[:1] or gallery_images.shape[0] == 0:
            raise ConfigError(f"the gallery must be non-empty (N, C, H, W) images with (N,) labels, got {tuple(gallery_images.shape)} and {tuple(gallery_labels.shape)}")
        self.embedder = embedder
        self.name = name
        self.batch_size = batch_size
        self.num_classes = int(num_classes if num_classes is not None else int(gallery_labels.max()) + 1)
        self.gallery_images, self.gallery_labels = gallery_images, gallery_labels.long()
        self._cache: dict[str, torch.Tensor] = NearestIdentityEvaluator._shared if share else {}

    @property
    def device(self) -> torch.device:
        """Where the embedder's weights are; an embedder without torch parameters (dlib) says, or the CPU."""
        params = self.embedder.parameters() if hasattr(self.embedder, "parameters") else iter(())
        first = next(params, None)
        if first is not None:
            return first.device
        return torch.device(getattr(self.embedder, "device", "cpu"))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(N, D)``, float32 on the CPU, without autograd (cached by content)."""
        images = images.detach().float().cpu().contiguous()
        key = f"{self.name}:{hashlib.blake2b(images.numpy().tobytes(), digest_size=16).hexdigest()}{tuple(images.shape)}"
        if key not in self._cache:
            if len(self._cache) >= 16:  # a bound for long-lived processes; a verify run needs about 3 entries
                self._cache.clear()
            outs = []
            with torch.inference_mode():
                for start in range(0, images.shape[0], self.batch_size):
                    outs.append(self.embedder.embed(images[start : start + self.batch_size].to(self.device)).float().cpu())
            if not outs:
                raise ConfigError("predict needs at least one image, got an empty batch")
            self._cache[key] = torch.cat(outs)
        return self._cache[key]

    def distances(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, num_classes)`` class distances of ``images`` to the gallery (see :func:`class_distances`)."""
        return class_distances(self.embed(images), self.embed(self.gallery_images), self.gallery_labels, num_classes=self.num_classes)

    def predict(self, images: torch.Tensor, *, batch_size: int = 256, features: bool = False) -> torch.Tensor:
        """Scores ``−distance`` ``(N, C)`` (nearest identity first), or the embeddings with ``features=True``."""
        del batch_size  # the embedder's own batch size bounds memory
        if features:
            return self.embed(images)
        return (-self.distances(images)).float()


def identity_metrics(result: Any, evaluator: NearestIdentityEvaluator, *, other_scores: torch.Tensor | None = None) -> dict[str, Any]:
    """FaceNet's verdict on an attack: top-1/top-5 nearest-identity accuracy, δ_face, agreement with ``other_scores``."""
    from .metrics import attack_accuracy

    images, labels = result.flat()
    distances = evaluator.distances(images)
    scores = -distances
    top1, top5 = attack_accuracy(scores, labels, k=1), attack_accuracy(scores, labels, k=5)
    out: dict[str, Any] = {
        "evaluator": evaluator.name,
        "attack_acc_top1": top1.mean,
        "attack_acc_top1_std": top1.std,
        "attack_acc_top5": top5.mean,
        "attack_acc_top5_std": top5.std,
        "delta_face": delta_face(distances, labels),
        "agreement": agreement(other_scores, scores, labels) if other_scores is not None else None,
    }
    return out


__all__ = ["NearestIdentityEvaluator", "agreement", "class_distances", "delta_face", "identity_metrics", "leave_one_out_accuracy"]
