"""Judge an attack's reconstructions: every metric of :mod:`~midefend.evaluation.metrics` at once.

The evaluation model must be *independent* of the target (another
architecture, trained on the same private data): a reconstruction counts as a
success only if a model that never took part in the attack recognises the
class. The target's own verdict is reported next to it, because the DESIGN
probe showed that a low attack accuracy can also mean the optimisation failed
(saturated gradients), not that the defense hid the identity: if the target
itself does not see the class in the reconstructions, the attack did not
converge.

>>> # metrics = evaluate_attack(result, evaluator, private_train, target=target, test=private_test)
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .classifier import Classifier
from .feasibility import fid_not_computable
from .metrics import accuracy, attack_accuracy, frechet_distance, knn_distance, topk_hits


def natural_accuracy(model: Classifier, data: Any, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on a data set with ``.images`` in ``[0, 1]`` and ``.labels``."""
    return accuracy(model.predict(data.images, batch_size=batch_size), data.labels)


def evaluate_attack(
    result: Any,
    evaluator: Classifier,
    private: Any,
    *,
    target: Classifier | None = None,
    test: Any = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """All metrics of one attack run.

    Args:
        result: an :class:`~midefend.attacks.AttackResult`.
        evaluator: the independent evaluation model.
        private: the target's private *training* data (``.images``, ``.labels``),
            the reference of the KNN distance and the FID.
        target: the attacked model; adds its natural accuracy on ``test`` and its
            own accuracy / confidence on the reconstructions.
        test: held-out private data for the natural accuracy.

    Returns:
        a JSON-serialisable dict: ``accuracy`` (or ``None``), ``attack_acc_top1``,
        ``attack_acc_top1_std``, ``attack_acc_top5``, ``attack_acc_top5_std``,
        ``knn_distance``, ``fid`` (``None`` when it cannot be computed, with the reason in
        ``not_computed["fid"]``), ``target_acc_top1``,
        ``target_confidence_mean``, and ``per_class`` rows.
    """
    images, labels = result.flat()
    wanted = set(result.classes)
    mask = torch.tensor([int(c) in wanted for c in private.labels.tolist()], dtype=torch.bool)
    if not mask.any():
        raise ConfigError("the private data holds no image of the attacked classes")
    logits = evaluator.predict(images, batch_size=batch_size)
    if logits.shape[1] <= max(result.classes):
        raise ConfigError(f"the evaluation model has {logits.shape[1]} classes but class {max(result.classes)} was attacked")
    top1, top5 = attack_accuracy(logits, labels, k=1), attack_accuracy(logits, labels, k=5)
    recon_feats = evaluator.predict(images, batch_size=batch_size, features=True)
    private_feats = evaluator.predict(private.images[mask], batch_size=batch_size, features=True)
    private_labels = private.labels[mask]
    metrics: dict[str, Any] = {
        "accuracy": None,
        "attack_acc_top1": top1.mean,
        "attack_acc_top1_std": top1.std,
        "attack_acc_top5": top5.mean,
        "attack_acc_top5_std": top5.std,
        "knn_distance": knn_distance(recon_feats, labels, private_feats, private_labels),
        "fid": None,
        "target_acc_top1": None,
        "target_confidence_mean": float(result.target_confidence.float().mean()),
        "num_reconstructions": int(images.shape[0]),
    }
    fid_reason = fid_not_computable(int(recon_feats.shape[0]), int(private_feats.shape[0]))
    if fid_reason is None:
        metrics["fid"] = frechet_distance(recon_feats, private_feats)
    else:
        metrics["not_computed"] = {"fid": fid_reason}
    target_hits = None
    if target is not None:
        target_hits = topk_hits(target.predict(images, batch_size=batch_size), labels, 1).float()
        metrics["target_acc_top1"] = float(target_hits.mean())
        if test is not None:
            metrics["accuracy"] = natural_accuracy(target, test, batch_size=batch_size)
    k = result.images.shape[1]
    eval_hits1 = topk_hits(logits, labels, 1).float().view(-1, k)
    eval_hits5 = topk_hits(logits, labels, 5).float().view(-1, k)
    metrics["per_class"] = [
        {
            "class": int(c),
            "attack_acc_top1": float(eval_hits1[i].mean()),
            "attack_acc_top5": float(eval_hits5[i].mean()),
            "target_acc_top1": float(target_hits.view(-1, k)[i].mean()) if target_hits is not None else None,
            "target_confidence": float(result.target_confidence[i].float().mean()),
        }
        for i, c in enumerate(result.classes)
    ]
    return metrics


__all__ = ["evaluate_attack", "natural_accuracy"]
