"""PPA — Plug & Play Attacks (Struppek et al., 2022), with a DCGAN prior.

Optimise generator latents so that the target assigns the class, through a
fresh random crop and flip at every step, with the Poincaré loss (default;
``loss="max-margin"``, ``"logit"`` or ``"cross-entropy"`` also work). Start
from the best ``candidates`` of ``init_pool`` random latents per class and,
at the end, keep the ``per_class`` candidates whose class confidence is most
robust under augmentation (see :mod:`midefend.attacks.base`).

Defaults are the ones that worked on ORL: Adam ``lr=0.1``, 200 steps, a pool
of 2,000 latents.

>>> Attack = PPAAttack(per_class=2, candidates=4)
>>> Attack.options["loss"], Attack.options["init_pool"]
('poincare', 2000)
"""

from __future__ import annotations

from .base import LatentAttack
from .registry import register_attack


@register_attack("ppa")
class PPAAttack(LatentAttack):
    """Latent-space attack with the Poincaré loss, augmentation and robust final selection."""

    defaults = {"init_pool": 2000}


__all__ = ["PPAAttack"]
