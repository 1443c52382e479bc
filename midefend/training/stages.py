"""The defense recipes, written as a list of training stages.

A :class:`Stage` is a run of epochs with one loss, one optimiser and one
learning-rate schedule. Each defense is a short list of them:

==============  =============================================================================
defense         stages
==============  =============================================================================
``nodef``       ``train``: cross-entropy, ``epochs`` at ``lr``
``midre``       ``train``: cross-entropy on randomly erased images (one square box per image,
                area ratio ``a_e ~ U[0.1, erase_max]``, MIDRE's ``a_h``; 0.4 or 0.8)
``calor``       [``pretrain``: cross-entropy, ``pretrain_epochs``, only if > 0]
                -> ``harden(model, rank)`` (low-rank tanh head, warm start in the saturating
                regime with ``up`` refitted by least squares; see docs/calor.md)
                -> ``head``: cross-entropy, ``epochs`` (may be 0) at ``calor_lr`` (default ``lr``),
                head at ``head_lr_mult`` times that
                -> ``ca``: confidence adaptation ``a * p_y**b * log p_y``, ``ca_epochs`` at
                ``ca_lr``, no erasing (the CALoR authors' stage 2 uses a flip only; midefend
                keeps the run's augmentation, which must not flip digits); trains the low-rank
                head only (``ca_params="head"``, backbone frozen) or everything (``"all"``)
``midre+calor`` as ``calor``, with random erasing in the cross-entropy stages
==============  =============================================================================

Why the head stage runs at the backbone's learning rate (``head_lr_mult=1``):
the warm start already reproduces the trained logits about as well as the
rank-``r`` code allows (linear: the NoDef model's 99.2% ORL test accuracy
before any training), so the head needs no catching up. With a saturated
warm start that keeps ``up``'s SVD scaling instead of refitting it, even a
10x head learning rate did not restore the logit scale in 10 epochs on ORL
(``p_y`` 0.45; ``benchmarks/calor_regime.py``).

Why CALoR starts from a trained backbone: a low-rank tanh head trained from
scratch keeps small logits (mean ``p_y`` about 0.14 in midefend's ORL probe),
and the CA loss then does nothing, since its gradient vanishes for ``p_y``
far below its minimiser ``exp(-1/b)``. The authors also start from pretrained
backbones. So ``calor`` expects a trained model, or ``pretrain_epochs > 0``.

>>> [s.name for s in defense_stages("calor", epochs=30, lr=1e-3, pretrain_epochs=60)]
['pretrain', 'head', 'ca']
>>> defense_stages("midre", epochs=60, lr=1e-3, erase_max=0.8)[0].erase
(0.1, 0.8)
"""

from __future__ import annotations

from dataclasses import dataclass

from .._validate import check_choice, check_int, check_positive_real
from ..errors import ConfigError

#: The defense names :func:`defense_stages` knows.
DEFENSES = ("nodef", "midre", "calor", "midre+calor")
#: What the CA fine-tune trains: the low-rank head only (default), or the whole model.
CA_PARAMS = ("head", "all")
#: The CA fine-tune's optimiser: the run's own (``"default"``), or the CALoR authors' stage 2
#: (``"authors"``: SGD momentum 0.9, no Nesterov, no weight decay, lr 2e-5, x0.1 after epochs 3 and 4,
#: the whole model).
CA_OPTIMIZERS = ("default", "authors")
#: ``(lr, milestones in epochs, params)`` of the authors' CA stage.
AUTHORS_CA = (2e-5, (3, 4), "all")


@dataclass(frozen=True)
class Stage:
    """One phase of training.

    Attributes:
        name: ``"train"``, ``"pretrain"``, ``"head"`` or ``"ca"`` (shown in progress and history).
        epochs: passes over the training set.
        lr: peak learning rate of the stage's fresh optimiser.
        loss: ``"ce"`` (cross-entropy) or ``"ca"`` (confidence adaptation).
        erase: ``(low, high)`` area-ratio range of random erasing, or ``None``.
        augment: augmentation preset name, or ``None`` for the run's default.
        harden_before: apply ``harden(model, rank=...)`` before this stage.
        head_lr_mult: learning-rate factor for the low-rank head's parameters.
        head_only: train only the low-rank head; the backbone is frozen and kept in eval
            mode (its BatchNorm statistics do not move either).
        optimizer: ``None`` (the run's optimiser and schedule) or ``"authors-sgd"`` (SGD momentum 0.9,
            no Nesterov, no weight decay, ``MultiStepLR`` x0.1 after the epochs in ``milestones``).
        milestones: epochs after which ``"authors-sgd"`` divides the learning rate by 10.
    """

    name: str
    epochs: int
    lr: float
    loss: str = "ce"
    erase: tuple[float, float] | None = None
    augment: str | None = None
    harden_before: bool = False
    head_lr_mult: float = 1.0
    head_only: bool = False
    optimizer: str | None = None
    milestones: tuple[int, ...] = ()


def check_defense(defense: str) -> str:
    """Return ``defense`` if midefend knows it, else a one-line ConfigError."""
    return check_choice("defense", defense, DEFENSES)


def defense_stages(
    defense: str,
    *,
    epochs: int,
    lr: float,
    erase_max: float = 0.4,
    pretrain_epochs: int = 0,
    head_lr_mult: float = 1.0,
    calor_lr: float | None = None,
    ca_epochs: int = 5,
    ca_lr: float | None = None,
    ca_params: str | None = None,
    ca_optimizer: str = "default",
) -> list[Stage]:
    """The stages of ``defense`` (table in the module docstring); validates every argument.

    ``ca_lr`` and ``ca_params`` default to 1e-4 and ``"head"``, or to the authors' 2e-5 and
    ``"all"`` with ``ca_optimizer="authors"``.
    """
    check_defense(defense)
    # CALoR may skip its head stage (epochs=0): then only the CA fine-tune runs on the hardened model.
    check_int("epochs", epochs, minimum=0 if "calor" in defense else 1)
    check_int("pretrain_epochs", pretrain_epochs, minimum=0)
    check_int("ca_epochs", ca_epochs, minimum=0)
    check_choice("ca_optimizer", ca_optimizer, CA_OPTIMIZERS)
    authors = ca_optimizer == "authors"
    ca_lr = (AUTHORS_CA[0] if authors else 1e-4) if ca_lr is None else ca_lr
    ca_params = (AUTHORS_CA[2] if authors else "head") if ca_params is None else ca_params
    check_positive_real("lr", lr)  # finite: an infinite learning rate is refused too
    check_positive_real("ca_lr", ca_lr)
    check_positive_real("head_lr_mult", head_lr_mult)
    check_choice("ca_params", ca_params, CA_PARAMS)
    calor_lr = lr if calor_lr is None else calor_lr
    check_positive_real("calor_lr", calor_lr)
    erase = None
    if defense.startswith("midre"):
        if isinstance(erase_max, bool) or not isinstance(erase_max, (int, float)) or not 0.1 < erase_max <= 1.0:
            raise ConfigError(f"erase_max must lie in (0.1, 1] (MIDRE's a_h, e.g. 0.4 or 0.8), got {erase_max!r}")
        erase = (0.1, float(erase_max))
    if defense in ("nodef", "midre"):
        return [Stage("train", epochs, lr, erase=erase)]
    stages = []
    if pretrain_epochs:
        stages.append(Stage("pretrain", pretrain_epochs, lr, erase=erase))
    if epochs:
        stages.append(Stage("head", epochs, calor_lr, erase=erase, harden_before=True, head_lr_mult=head_lr_mult))
    if ca_epochs:
        optimizer = {"optimizer": "authors-sgd", "milestones": AUTHORS_CA[1]} if authors else {}
        stages.append(
            Stage("ca", ca_epochs, ca_lr, loss="ca", harden_before=not epochs, head_only=ca_params == "head", **optimizer)
        )
    if not epochs and not ca_epochs:
        raise ConfigError(f"defense {defense!r} needs epochs > 0 or ca_epochs > 0, got epochs=0 and ca_epochs=0")
    return stages


__all__ = ["AUTHORS_CA", "CA_OPTIMIZERS", "CA_PARAMS", "DEFENSES", "Stage", "check_defense", "defense_stages"]
