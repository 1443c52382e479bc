"""PLG-MI — pseudo-label guided model inversion (Yuan et al., AAAI 2023), white-box.

1. Public data (``public``): ``None`` — ``public_samples`` images of the
   attack's prior (the face GAN for face targets); ``"digits-public"`` —
   digits 5–9 (GMI's public split, for the digits demo); or a folder of class
   subfolders (labels ignored).
2. The target pseudo-labels them and a conditional GAN is trained on the
   ``top_n`` most confident images per class
   (:mod:`~midefend.attacks.conditional_prior`: ``gan_steps`` hinge-GAN
   steps from the prior's weights, with the target's max-margin loss weighted
   by ``alpha``). The GAN is saved as safetensors under ``cache_dir``
   (default ``$MIDEFEND_CACHE`` or ``~/.cache/midefend``, then ``plg/``),
   named by a hash of the target's and prior's weights, the public data and
   these settings, and reused by every later run with the same inputs.
3. Per class, latents of the class-conditional generator are optimised with
   the max-margin loss ``−z_y + max_{j≠y} z_j`` through a fresh random crop
   and flip at every step (the engine of :mod:`~midefend.attacks.base`).

Cost on ORL (40 classes, face GAN, 2 busy CPU cores): the GAN stage is paid
once per target (sampling and labelling 2,000 public faces, then 200 GAN
steps of batch 32), the attack stage is a short PPA-sized optimisation (60
steps, 4 candidates); preset ``"fast"``: 1,000 public faces, 80 GAN steps,
30 attack steps. The measured times are in ``benchmarks/RESULTS.md``. The GAN
is a short CPU fine-tune, not the paper's GPU-trained SNGAN: judge PLG-MI's
numbers here as a lower bound of what the published attack reaches.

>>> PLGAttack.threat_model, PLGAttack().options["loss"]
('white-box', 'max-margin')
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import AttackError, ConfigError
from ..evaluation.classifier import Classifier
from .base import AttackResult, LatentAttack, _Context, _module_digest
from .conditional_prior import ConditionalPrior, load_conditional_prior, pseudo_label, save_conditional_prior, train_conditional_prior
from .priors import DCGANGenerator, GenerativePrior
from .registry import register_attack

DIGITS_PUBLIC = "digits-public"


def default_cache_dir() -> Path:
    """``$MIDEFEND_CACHE`` or ``~/.cache/midefend``."""
    return Path(os.environ.get("MIDEFEND_CACHE") or Path.home() / ".cache" / "midefend")


@register_attack("plg")
class PLGAttack(LatentAttack):
    """Latent attack in a conditional GAN trained on target-pseudo-labelled public data."""

    threat_model = "white-box"
    defaults = {
        "loss": "max-margin",
        "steps": 60,
        "init_pool": 0,
        "public": None,
        "public_samples": 2000,
        "top_n": 20,
        "gan_steps": 200,
        "gan_batch": 32,
        "gan_lr": 1e-4,
        "alpha": 0.2,
        "cache_dir": None,
    }
    presets = {"fast": {"steps": 30, "gan_steps": 80, "public_samples": 1000}}

    def validate_extra(self) -> None:
        super().validate_extra()
        o = self.options
        for key in ("public_samples", "top_n", "gan_steps", "gan_batch"):
            if not isinstance(o[key], int) or isinstance(o[key], bool) or o[key] < 1:
                raise ConfigError(f"{key} must be a positive integer, got {o[key]!r}")
        for key in ("gan_lr", "alpha"):
            if not (isinstance(o[key], (int, float)) and o[key] >= 0) or (key == "gan_lr" and o[key] == 0):
                raise ConfigError(f"{key} must be a {'positive' if key == 'gan_lr' else 'non-negative'} number, got {o[key]!r}")
        if o["init_pool"] != 0:
            raise ConfigError("plg starts from random latents of its conditional generator: leave init_pool at 0")
        if o["public"] is not None and not isinstance(o["public"], str):
            raise ConfigError(f"public must be None, {DIGITS_PUBLIC!r} or a folder path, got {o['public']!r}")

    def check_prior(self, prior: GenerativePrior | None) -> None:
        if prior is not None and not isinstance(getattr(prior, "generator", None), DCGANGenerator):
            raise AttackError(f"attack {self.name!r} fine-tunes a midefend DCGAN prior; prior {getattr(prior, 'name', '?')!r} is not one")

    def run(self, target: Classifier, prior: GenerativePrior | None = None, **kwargs: Any) -> AttackResult:
        """:meth:`Attack.run <midefend.attacks.base.Attack.run>` after the conditional-GAN stage (trained or cached)."""
        if not isinstance(target, Classifier) or prior is None:
            return super().run(target, prior, **kwargs)  # the engine's own errors
        device = kwargs.get("device")
        dev = torch.device(device) if device is not None else target.mean.device
        self._class_list(kwargs.get("classes"), self._num_classes(target, dev))  # bad classes fail before the GAN is trained
        start = time.perf_counter()
        self._cond, stage = self.conditional_prior(target, prior, device=dev, progress=bool(kwargs.get("progress")))
        stage["seconds"] = round(time.perf_counter() - start, 2)
        result = super().run(target, self._cond.prior, **kwargs)
        result.config["conditional_gan"] = stage
        return result

    def cost(self, num_classes: int) -> dict[str, int]:
        """The latent attack's cost plus, when the GAN is not cached yet, its stage: the public images
        labelled (forward) and ``gan_steps × gan_batch`` generated images through the target (forward and backward)."""
        out = super().cost(num_classes)
        out["optimisation"] += self.options["gan_steps"] * self.options["gan_batch"]
        out["init"] += self.options["public_samples"]
        return out

    def init_params(self, ctx: _Context, classes: list[int], gens: list[torch.Generator]) -> torch.Tensor:
        assert ctx.prior is not None
        k = self.options["candidates"]
        z = [ctx.prior.sample_latents(k, generator=g) for g in gens]
        return torch.cat([self._cond.class_latents(zc, torch.full((k,), c)) for zc, c in zip(z, classes)])

    # ------------------------------------------------------------------ stage 1

    def conditional_prior(self, target: Classifier, prior: GenerativePrior, *, device: Any = "cpu", progress: bool = False) -> tuple[ConditionalPrior, dict[str, Any]]:
        """The conditional GAN for ``target``: from the cache, or pseudo-label + train + save."""
        o = self.options
        settings = {k: o[k] for k in ("public", "public_samples", "top_n", "gan_steps", "gan_batch", "gan_lr", "alpha", "seed")}
        key = hashlib.sha256(
            json.dumps({"target": _module_digest(target.model), "prior": _module_digest(prior), **settings}, sort_keys=True).encode()
        ).hexdigest()[:20]
        path = Path(o["cache_dir"] or default_cache_dir()) / "plg" / f"plg-{key}.safetensors"
        if path.is_file():
            cond, info = load_conditional_prior(path)
            return cond.to(device), {**info, "path": str(path), "cached": True}
        images = self.public_images(prior, device)
        probs = target.to(device).predict(images).softmax(dim=1)
        index, labels = pseudo_label(probs, o["top_n"])
        num_classes = probs.shape[1]
        cond = train_conditional_prior(
            prior, target, images[index], labels, num_classes=num_classes, steps=o["gan_steps"], batch_size=o["gan_batch"],
            lr=o["gan_lr"], alpha=o["alpha"], seed=o["seed"], device=device, progress=progress,
        )
        info = {"public_images": int(images.shape[0]), "pseudo_labelled": int(index.numel()),
                "classes_without_images": int((torch.bincount(labels, minlength=num_classes) == 0).sum())}
        save_conditional_prior(cond, path, info)
        return cond.to(device), {**info, "path": str(path), "cached": False}

    def public_images(self, prior: GenerativePrior, device: Any) -> torch.Tensor:
        """The public images (``(N, C, H, W)`` in ``[0, 1]``, the prior's format) named by ``public``."""
        spec = self.options["public"]
        size, channels = prior.image_size, prior.channels
        if spec is None:
            z = prior.sample_latents(self.options["public_samples"], generator=torch.Generator().manual_seed(self.options["seed"]))
            with torch.inference_mode():
                return torch.cat([prior.to(device)(z[i : i + 250].to(device)).float().cpu() for i in range(0, z.shape[0], 250)])
        if spec == DIGITS_PUBLIC:
            from ..data.digits import load_digits

            train, test = load_digits("public", size=size, channels=channels)
            return torch.cat([train.images, test.images])
        from ..data.folders import load_image_folder

        folder = Path(spec)
        if not folder.is_dir():
            raise AttackError(f"public data {spec!r} is neither None, {DIGITS_PUBLIC!r} nor a folder")
        return load_image_folder(folder, size=size, channels=channels).images


__all__ = ["DIGITS_PUBLIC", "PLGAttack", "default_cache_dir"]
