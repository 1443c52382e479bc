"""``verify --dry-run``: what a verify run will cost, before it runs.

Each planned attack reports its cost in images through the target
(:meth:`~midefend.attacks.Attack.cost`): ``optimisation`` (forward and
backward: classes × candidates × steps × erasures per step), ``selection`` and
``init`` (forward only). A short timing on this machine — a few forward and
backward passes of the prior and the target on one batch, as the attack runs
them, and the target alone forward, as the selection runs it — turns the image counts into an
estimate of the wall time. It is an
estimate: the machine's load, the chunking and the evaluation add to it.
"""

from __future__ import annotations

import time
from typing import Any

import torch


def _time_per_image(target: Any, prior: Any, device: str, precision: str, batch: int = 64, rounds: int = 2) -> dict[str, float]:
    """Seconds per image on one batch of the size attacks use, as they run (``channels_last``, autocast):
    ``step`` (prior + target, forward and backward), ``target_step`` (the target alone, forward and
    backward: what an extra EOT erasure costs) and ``forward`` (the target alone: selection, initial scoring)."""
    from ..attacks.base import channels_last_context, resolve_precision
    from ..attacks.priors import adapt_images, inference_prior

    target, prior = target.for_inference(), inference_prior(prior)  # as the attacks run them
    dev = torch.device(device)
    c, h, w = target.input_size
    autocast = {"device_type": dev.type, "dtype": torch.bfloat16, "enabled": resolve_precision(precision, dev) == "bf16"}

    def render(params: torch.Tensor) -> torch.Tensor:
        return adapt_images(prior(params), channels=c, size=(h, w)) if prior is not None else params

    def backward(x: torch.Tensor, through_prior: bool) -> None:
        x = x.clone().requires_grad_(True)
        with torch.autocast(**autocast):
            loss = target(render(x) if through_prior else x).float().logsumexp(1).sum()
        loss.backward()

    def forward(x: torch.Tensor) -> None:
        with torch.inference_mode():
            target(x)

    params = (prior.sample_latents(batch, generator=torch.Generator().manual_seed(0)) if prior is not None else torch.rand(batch, c, h, w)).to(dev)
    with torch.inference_mode():
        rendered = render(params).float()
    work = {"step": lambda: backward(params, True), "target_step": lambda: backward(rendered, False), "forward": lambda: forward(rendered)}
    times: dict[str, list[float]] = {key: [] for key in work}
    with channels_last_context(target, prior):  # as the attacks run them
        for i in range(rounds + 1):  # the first round warms up (allocations, kernel choice) and is not counted
            for key, job in work.items():
                start = time.perf_counter()
                job()
                if i:
                    times[key].append(time.perf_counter() - start)
    return {key: min(values) / batch for key, values in times.items()}


def estimate_run(run: Any, *, device: str = "cpu", repeats: int = 1, reach: bool = True, log: Any = None) -> dict[str, Any]:
    """The cost of a prepared verify run (``prepare_verify``): what ``verify --dry-run`` prints and ``--budget`` plans from.

    Returns ``{"attacks": [{name, adaptive, threat_model, optimisation, selection, init, kept,
    seconds}], "reach" (the prior-reach step, ``None`` with ``reach=False``), "skipped", "classes", "repeats",
    "seconds_per_image", "total_seconds"}``;
    the image counts are per run of all the classes, the seconds include the repeats.
    """
    num_classes = len(run.classes) if run.classes is not None else run.target_ckpt.num_classes
    timing: dict[tuple[bool, str], dict[str, float]] = {}
    rows = []
    for plan in run.planned:
        attack = plan.build()
        prior = run.prior if type(attack).uses_prior else None
        key = (prior is not None, attack.options.get("precision", "auto"))
        if key not in timing:
            if log is not None:
                log(f"dry run: timing the target{' through the prior' if prior is not None else ''} on this machine ...")
            timing[key] = _time_per_image(run.target, prior, device, key[1])
        t = timing[key]
        # An attack's own cost() may leave fields out (a query attack has no renders of its own): 0 / all.
        cost = {"optimisation": 0, "selection": 0, "init": 0, "kept": 0, **attack.cost(num_classes)}
        cost.setdefault("renders", cost["optimisation"])
        # Each step renders once and runs the target once per erasure: one full step, the rest target-only.
        extra = cost["optimisation"] - cost["renders"]
        seconds = repeats * (cost["renders"] * t["step"] + extra * t["target_step"] + (cost["selection"] + cost["init"]) * t["forward"])
        rows.append({"name": plan.label, "adaptive": plan.adaptive, "threat_model": plan.threat_model, **cost, "seconds": round(seconds, 1)})
    reach_row = None
    if reach and run.prior is not None:  # verify's reach step (midefend.evaluation.reach), before the attacks
        from .reach import estimate_reach

        if log is not None:
            log("dry run: timing the prior-reach step ...")
        reach_row = estimate_reach(run, device)
    return {
        "attacks": rows,
        "reach": reach_row,
        "skipped": run.skipped,
        "classes": num_classes,
        "repeats": repeats,
        "seconds_per_image": {("prior" if k[0] else "pixels") + f"/{k[1]}": v for k, v in timing.items()},
        "total_seconds": round(sum(r["seconds"] for r in rows) + (reach_row["seconds"] if reach_row else 0.0), 1),
    }


def render_estimate(estimate: dict[str, Any], *, title: str = "verify") -> str:
    """The estimate as plain text lines (what ``--dry-run`` prints)."""
    lines = [f"dry run: {title}: {estimate['classes']} classes, {estimate['repeats']} run(s) per attack"]
    for row in estimate["attacks"]:
        lines.append(
            f"  {row['name']:<22} {row['optimisation']:>10,} images forward+backward, {row['selection'] + row['init']:>9,} forward only, "
            f"{row['kept']:>5} kept; about {row['seconds'] / 60:.1f} min"
        )
    if estimate.get("reach"):
        r = estimate["reach"]
        lines.append(f"  {'prior reach':<22} {r['backward']:>10,} images forward+backward through the prior ({r['photos']} photos; {', '.join(r['spaces'])}); about {r['seconds'] / 60:.1f} min")
    for skipped in estimate["skipped"]:
        lines.append(f"  not run: {skipped['attack']} ({skipped['reason']})")
    lines.append(f"estimated attack time: about {estimate['total_seconds'] / 60:.1f} min (from a short timing on this machine; evaluation not included)")
    return "\n".join(lines)


__all__ = ["estimate_run", "render_estimate"]
