"""GMI — the Generative Model-Inversion attack (Zhang et al., 2020).

Optimise latents ``z`` of a GAN trained on public data to minimise

    ``L(z) = L_prior(z) + λ · L_id(z)``,  ``L_prior = softplus(−D(G(z)))``,
    ``L_id = −log p_T(y | G(z))``,

where ``D`` is the GAN's discriminator: the prior term keeps the image
realistic (``softplus(−D) = −log σ(D)``, the non-saturating form for a
discriminator trained with BCE), the identity term (cross-entropy by default)
makes the target see class ``y``. GMI starts from random latents
(``init_pool=0``) and keeps them in ``[−clip, clip]`` after each step.
Needs a prior with a discriminator — one from
:func:`~midefend.attacks.prior_training.train_prior`, not the face GAN.

>>> GMIAttack().options["loss"], GMIAttack().options["identity_weight"]
('cross-entropy', 100.0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import AttackError, ConfigError
from .base import LatentAttack, _Context
from .priors import GenerativePrior
from .registry import register_attack


@register_attack("gmi")
class GMIAttack(LatentAttack):
    """Latent attack with an identity loss and the GAN discriminator as prior."""

    threat_model = "white-box"
    supports_adaptive = True
    defaults = {"loss": "cross-entropy", "lr": 0.02, "steps": 300, "init_pool": 0, "identity_weight": 100.0, "clip": 3.0}

    def validate_extra(self) -> None:
        super().validate_extra()
        o = self.options
        if not o["identity_weight"] > 0:
            raise ConfigError(f"identity_weight must be positive, got {o['identity_weight']!r}")
        if not o["clip"] > 0:
            raise ConfigError(f"clip must be positive, got {o['clip']!r}")

    def check_prior(self, prior: GenerativePrior | None) -> None:
        if prior is not None and not prior.has_discriminator:
            raise AttackError(
                f"attack 'gmi' needs a prior with a discriminator; prior {prior.name!r} has none "
                "(train one with train_prior, or use the 'ppa' attack)"
            )

    def objective(self, ctx: _Context, params: torch.Tensor, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        assert ctx.prior is not None
        identity = self.identity_loss(logits, targets)
        realness = ctx.prior.realness(ctx.prior(params)).float()
        return F.softplus(-realness) + self.options["identity_weight"] * identity

    def after_step(self, params: torch.Tensor) -> None:
        params.clamp_(-self.options["clip"], self.options["clip"])


__all__ = ["GMIAttack"]
