"""``verify --dry-run``: what a verify run will cost, before it runs.

Each planned attack reports its cost in images through the target
(:meth:`~midefend.attacks.Attack.cost`): ``optimisation`` (forward and
backward: classes × candidates × steps × erasures per step), ``selection`` and
``init`` (forward only). A short timing on this machine — a few forward and
backward passes of the prior and the target on one batch, as the attack runs
them — turns the image counts into an estimate of the wall time. It is an
estimate: the machine's load, the chunking and the evaluation add to it.
"""

from __future__ import annotations

import time
from typing import Any

import torch


def _time_per_image(target: Any, prior: Any, device: str, precision: str, batch: int = 32, rounds: int = 2) -> tuple[float, float]:
    """Seconds per image: ``(forward + backward, forward only)`` of prior + target, measured on one batch."""
    from ..attacks.base import resolve_precision
    from ..attacks.priors import adapt_images

    dev = torch.device(device)
    c, h, w = target.input_size
    autocast = {"device_type": dev.type, "dtype": torch.bfloat16, "enabled": resolve_precision(precision, dev) == "bf16"}

    def images(params: torch.Tensor) -> torch.Tensor:
        return adapt_images(prior(params), channels=c, size=(h, w)) if prior is not None else params

    params = (prior.sample_latents(batch, generator=torch.Generator().manual_seed(0)) if prior is not None else torch.rand(batch, c, h, w)).to(dev)
    timings = []
    for i in range(rounds + 1):
        p = params.clone().requires_grad_(True)
        start = time.perf_counter()
        with torch.autocast(**autocast):
            loss = target(images(p)).float().logsumexp(1).sum()
        loss.backward()
        if i:
            timings.append(time.perf_counter() - start)
    fb = min(timings) / batch
    with torch.inference_mode():
        start = time.perf_counter()
        target(images(params).float())
        fwd = (time.perf_counter() - start) / batch
    return fb, fwd


def estimate_verify(checkpoint: Any, *, repeats: int = 1, **kwargs: Any) -> dict[str, Any]:
    """The cost of ``verify(checkpoint, repeats=repeats, **kwargs)`` without running it.

    Returns ``{"attacks": [{name, adaptive, threat_model, optimisation, selection, init, kept,
    seconds}], "skipped", "classes", "repeats", "seconds_per_image", "total_seconds"}``;
    the image counts are per run of all the classes, the seconds include the repeats.
    """
    from .verify import prepare_verify

    kwargs.pop("out_dir", None)
    run = prepare_verify(checkpoint, **kwargs)
    num_classes = len(run.classes) if run.classes is not None else run.target_ckpt.num_classes
    timing: dict[tuple[bool, str], tuple[float, float]] = {}
    rows = []
    for plan in run.planned:
        attack = plan.build()
        prior = run.prior if type(attack).uses_prior else None
        key = (prior is not None, attack.options.get("precision", "auto"))
        if key not in timing:
            timing[key] = _time_per_image(run.target, prior, kwargs.get("device", "cpu"), key[1])
        fb, fwd = timing[key]
        cost = attack.cost(num_classes)
        seconds = repeats * (cost["optimisation"] * fb + (cost["selection"] + cost["init"]) * fwd)
        rows.append({"name": plan.label, "adaptive": plan.adaptive, "threat_model": plan.threat_model, **cost, "seconds": round(seconds, 1)})
    return {
        "attacks": rows,
        "skipped": run.skipped,
        "classes": num_classes,
        "repeats": repeats,
        "seconds_per_image": {("prior" if k[0] else "pixels") + f"/{k[1]}": {"forward_backward": v[0], "forward": v[1]} for k, v in timing.items()},
        "total_seconds": round(sum(r["seconds"] for r in rows), 1),
    }


def render_estimate(estimate: dict[str, Any], *, title: str = "verify") -> str:
    """The estimate as plain text lines (what ``--dry-run`` prints)."""
    lines = [f"dry run: {title}: {estimate['classes']} classes, {estimate['repeats']} run(s) per attack"]
    for row in estimate["attacks"]:
        lines.append(
            f"  {row['name']:<22} {row['optimisation']:>10,} images forward+backward, {row['selection'] + row['init']:>9,} forward only, "
            f"{row['kept']:>5} kept; about {row['seconds'] / 60:.1f} min"
        )
    for skipped in estimate["skipped"]:
        lines.append(f"  not run: {skipped['attack']} ({skipped['reason']})")
    lines.append(f"estimated attack time: about {estimate['total_seconds'] / 60:.1f} min (from a short timing on this machine; evaluation not included)")
    return "\n".join(lines)


__all__ = ["estimate_verify", "render_estimate"]
