"""Which judges an attack gets: a trained evaluation model and/or independent face recognisers.

``verify`` and ``compare`` accept ``eval_model`` as a checkpoint path, the name of a registered face
recogniser (``"facenet"``, ``"dlib"``; :mod:`~midefend.evaluation.recognisers`), or a list of these.

**The rule on face data** (ORL, or folders declared as faces): when no judge is named, every
installed face recogniser judges — FaceNet and dlib — and ``verify`` says so in one line. On other
data an evaluation model must be named. A checkpoint evaluation model (trained on the private data,
the papers' "attack accuracy") is never counted as independent; a recogniser is independent unless
the target is built on its own network (:func:`~midefend.evaluation.consensus.shares_backbone`).

The headline is the consensus of the independent recognisers
(:func:`~midefend.evaluation.consensus.identity_verdict`); the evaluation model's numbers stay in
``metrics`` beside it (``metrics["identity"]`` holds the verdict, ``metrics[<recogniser>]`` each
recogniser's top-1/top-5, δ_face and its agreement with the evaluation model).

>>> split_eval_specs(["eval.safetensors", "FaceNet", "dlib"], known=("facenet", "dlib"))
(['eval.safetensors'], ['facenet', 'dlib'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from .classifier import Classifier
from .consensus import JudgeInput, identity_verdict, shares_backbone
from .evaluate import evaluate_attack
from .identity import NearestIdentityEvaluator, identity_metrics

FACENET = "facenet"
#: The data-set names that hold faces (the face recognisers are then the default judges).
FACE_DATA = ("orl",)


def split_eval_specs(eval_model: Any, *, known: Sequence[str] = (FACENET,)) -> tuple[list[Any], list[str]]:
    """``(checkpoints, recogniser names)`` from ``None``, one spec, or a list of specs (names matched case-insensitively)."""
    specs = [] if eval_model is None else list(eval_model) if isinstance(eval_model, (list, tuple)) else [eval_model]
    lowered = {n.lower() for n in known}
    names = [s.lower() for s in specs if isinstance(s, str) and s.lower() in lowered]
    return [s for s in specs if not (isinstance(s, str) and s.lower() in lowered)], list(dict.fromkeys(names))


@dataclass
class FaceJudge:
    """A face recogniser with the private gallery, and whether it is independent of this target."""

    evaluator: NearestIdentityEvaluator
    description: str
    independent: bool = True
    note: str | None = None

    @property
    def name(self) -> str:
        return self.evaluator.name


@dataclass
class Evaluators:
    """The trained evaluation model (its checkpoint and classifier) and the face recognisers, in order."""

    trained_ckpt: Any = None
    trained: Classifier | None = None
    faces: list[FaceJudge] = field(default_factory=list)

    @property
    def primary(self) -> Any:
        """The judge of the papers' metrics (KNN, FID, attack accuracy): the trained model, else the first recogniser."""
        if self.trained is not None:
            return self.trained
        return self.faces[0].evaluator if self.faces else None

    def face(self, name: str) -> FaceJudge | None:
        return next((f for f in self.faces if f.name == name), None)

    def describe(self) -> list[dict[str, Any]]:
        """One entry per judge for the report: name, what network it is, and whether it is independent."""
        out = []
        if self.trained_ckpt is not None:
            out.append({"name": "eval", "kind": "evaluation model", "path": str(self.trained_ckpt.path) if getattr(self.trained_ckpt, "path", None) else None,
                        "description": f"{self.trained_ckpt.arch} trained on the private data", "independent": False,
                        "note": "trained on the private data: accepts adversarial features (the papers' metric)"})
        for f in self.faces:
            out.append({"name": f.name, "kind": "face recogniser", "path": None, "description": f.description, "independent": f.independent, "note": f.note})
        return out


def _recogniser_names() -> list[str]:
    from .recognisers import registered_recognisers

    return registered_recognisers()


def build_evaluators(eval_model: Any, *, target_ckpt: Any, train: Any, device: str, load: Any, faces: bool | None = None) -> Evaluators:
    """Resolve ``eval_model`` (see the module docstring) against the target and its private data.

    ``load`` turns a path into a loaded checkpoint (``verify``'s loader); ``faces`` declares the data
    as faces (``None``: detected from the data set's name).
    """
    from ..dlibface.loader import INSTALL_HINT as DLIB_HINT
    from ..facenet.loader import INSTALL_HINT as FACENET_HINT
    from .recognisers import available_recognisers, load_recogniser

    checkpoints, names = split_eval_specs(eval_model, known=_recogniser_names())
    if len(checkpoints) > 1:
        raise ConfigError(f"give at most one trained evaluation model (and/or {', '.join(repr(n) for n in _recogniser_names())}), got {len(checkpoints)}")
    face_data = faces if faces is not None else getattr(train, "name", None) in FACE_DATA
    if not checkpoints and not names:
        if not face_data:
            raise ConfigError("no evaluation model: pass --eval-model EVAL.safetensors (an independent model trained on the private data), or --eval-model facenet for face data")
        names = available_recognisers()
        if not names:
            raise ConfigError(f"no evaluation model: the face recognisers, the default on face data, are not installed (FaceNet: {FACENET_HINT}; dlib: {DLIB_HINT}); or pass --eval-model EVAL.safetensors")
    out = Evaluators()
    if checkpoints:
        spec = checkpoints[0]
        if isinstance(spec, (str, Path)) and not Path(spec).is_file():
            raise ConfigError(f"evaluation model {str(spec)!r} is neither a face recogniser ({', '.join(_recogniser_names())}) nor an existing checkpoint file")
        out.trained_ckpt = load(spec, device)
        if out.trained_ckpt.num_classes != target_ckpt.num_classes:
            raise ConfigError(f"the evaluation model has {out.trained_ckpt.num_classes} classes but the target has {target_ckpt.num_classes}")
        out.trained = Classifier.from_checkpoint(out.trained_ckpt).to(device)
    arch = getattr(target_ckpt, "arch", None)
    for name in names:
        module = load_recogniser(name, device=device)
        shared = shares_backbone(name, arch)
        out.faces.append(
            FaceJudge(
                NearestIdentityEvaluator(module, train.images, train.labels, num_classes=target_ckpt.num_classes, name=name, share=True),
                description=getattr(module, "description", name), independent=not shared,
                note=f"not independent: the target ({arch}) is built on {name}'s own network" if shared else None,
            )
        )
    return out


def judge(result: Any, evaluators: Evaluators, private: Any, *, target: Any = None, test: Any = None) -> dict[str, Any]:
    """The papers' metrics by the primary judge, each recogniser's verdict, and the identity verdict (``metrics["identity"]``)."""
    metrics = evaluate_attack(result, evaluators.primary, private, target=target, test=test)
    metrics["evaluator"] = evaluators.trained.name if evaluators.trained is not None else evaluators.faces[0].name
    images, labels = result.flat()
    eval_scores = evaluators.trained.predict(images) if evaluators.trained is not None else None
    inputs = []
    for face in evaluators.faces:
        metrics[face.name] = identity_metrics(result, face.evaluator, other_scores=eval_scores)
        aligned = getattr(face.evaluator.embedder, "aligned", None)
        fallbacks = int((~aligned(images)).sum()) if callable(aligned) else None
        metrics[face.name]["fallbacks"] = fallbacks
        inputs.append(JudgeInput(face.name, face.description, face.evaluator.predict(images), independent=face.independent, note=face.note, fallbacks=fallbacks))
    num_classes = (eval_scores.shape[1] if eval_scores is not None else evaluators.faces[0].evaluator.num_classes)
    evaluator = JudgeInput("eval", "evaluation model trained on the private data", eval_scores, independent=False) if eval_scores is not None else None
    metrics["identity"] = identity_verdict(labels, inputs, num_classes=num_classes, evaluator=evaluator).to_json()
    return metrics


__all__ = ["FACENET", "Evaluators", "FaceJudge", "build_evaluators", "judge", "split_eval_specs"]
