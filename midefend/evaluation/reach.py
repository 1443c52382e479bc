"""The prior's reach: which of the private identities can the generator draw at all?

Every generative attack searches a prior. If the prior cannot draw a person, no
attack through it reconstructs that person, and a low attack score is evidence
of a weak prior, not of privacy. :func:`prior_reach` measures this *before* any
attack: it projects held-out private photos into the prior with an objective
that involves **no judge** — pixel mean squared error between the photo and the
generator's image, in the photo's format — and then asks the judges (FaceNet,
dlib, the evaluation model: anything with ``predict(images) -> (N, C)``) whether
the projections still show the person.

A judge in the objective would manufacture exactly the features that judge looks
for (an adversarial example of the judge), so none is used: the judges only look
at the finished projections.

Search spaces (each reported separately):

- ``"latent"``: the generator's input, what PPA, PLG, GMI, NES and BREP search.
  The best ``starts`` of ``pool`` random latents per photo (by pixel MSE), then
  ``steps`` Adam steps on each; the start with the lowest final error is kept.
- ``"features@<level>"``: the generator's feature map at ``level`` (0: the 4×4
  map), what IF-GMI (:mod:`midefend.attacks.ifgmi`) searches. Starts from the
  latent projection's own features and moves them for ``feature_steps`` Adam steps
  within the l1 ball ``‖h − h₀‖₁ ≤ radius · ‖h₀‖₁`` (``radius=None``: no bound —
  the later layers then draw almost anything, so that number says little).

Per space and judge the report gives ``top1`` (the share of projections whose
nearest identity is the photo's person: with one photo per identity, the share of
identities the prior expresses), ``top5`` and the projection's pixel MSE; the
judges' scores on the real photos themselves are the ceiling. Everything is
seeded (``seed``) and runs a fixed budget.

:func:`reach_warning` turns a low reach into the report's plain-words warning.
"Low" is :data:`REACH_WARNING_THRESHOLD`: fewer than half of the identities a judge
recognises in the real photos are still recognised in the projections (for the
independent judges, the best of them). Half, because the warning says the prior
"cannot draw *most* of your identities"; relative to the real photos, so that a
judge that is itself weak on the data does not raise it.

>>> import torch
>>> from midefend.attacks.priors import DCGANGenerator, GenerativePrior
>>> prior = GenerativePrior(DCGANGenerator(latent_dim=8, channels=1, width=4, image_size=16))
>>> photos = torch.rand(3, 1, 16, 16)
>>> report = prior_reach(prior, photos, torch.tensor([0, 1, 2]), {}, pool=8, starts=1, steps=2, feature_steps=2, levels=[0])
>>> [s.space for s in report.spaces], report.identities
(['latent', 'features@0'], 3)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..errors import ConfigError
from ..models.images import adapt_images
from .metrics import topk_hits

#: Below this share of the real photos' recognised identities, the report warns (see the module docstring).
REACH_WARNING_THRESHOLD = 0.5
#: The warning's words.
REACH_WARNING = "this prior cannot draw most of your identities: a low attack score here is not evidence of privacy"
#: The default budget: enough to reproduce the face prior's measured reach on ORL, small beside verify's attacks.
DEFAULTS: dict[str, Any] = {"pool": 400, "starts": 2, "steps": 100, "lr": 0.05, "feature_steps": 100, "feature_lr": 0.01, "radius": 0.3, "seed": 0}


@dataclass
class JudgeReach:
    """One judge's verdict on a set of images: top-1 / top-5 nearest-identity accuracy."""

    top1: float
    top5: float
    independent: bool = True


@dataclass
class SpaceReach:
    """One search space: its pixel error and every judge's verdict on its projections.

    ``moved`` is, for a feature space, the mean relative l1 distance the features moved
    from the latent projection's own (``None`` for the latent space).
    """

    space: str
    level: int | None
    mse: float
    judges: dict[str, JudgeReach]
    radius: float | None = None
    moved: float | None = None


@dataclass
class ReachReport:
    """What :func:`prior_reach` measured (JSON: :meth:`to_json` / :meth:`from_json`; the images stay out of it)."""

    prior: str
    identities: int
    images: int
    chance_top1: float
    settings: dict[str, Any]
    real: dict[str, JudgeReach]
    spaces: list[SpaceReach]
    seconds: float = 0.0
    real_images: torch.Tensor | None = field(default=None, repr=False, compare=False)
    projections: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def space(self, name: str) -> SpaceReach:
        """The row of search space ``name`` (``"latent"``, ``"features@1"``, ...)."""
        for row in self.spaces:
            if row.space == name:
                return row
        raise ConfigError(f"no search space {name!r} in this reach report; it has {', '.join(r.space for r in self.spaces)}")

    def expressed(self, name: str = "latent") -> float | None:
        """The share of the recognisable identities the prior draws in space ``name``: ``top1`` of the projections
        over ``top1`` of the real photos, for the best independent judge (any judge when none is independent).
        ``None`` without judges, or when no judge recognises any real photo."""
        row = self.space(name)
        names = [j for j in row.judges if row.judges[j].independent] or list(row.judges)
        shares = [row.judges[j].top1 / self.real[j].top1 for j in names if self.real[j].top1 > 0]
        return max(shares) if shares else None

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("real_images", "projections")}
        out["format"] = "midefend-reach"
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReachReport:
        if data.get("format") != "midefend-reach":
            raise ConfigError(f"not a reach report (format {data.get('format')!r})")
        spaces = [SpaceReach(**{**s, "judges": {k: JudgeReach(**v) for k, v in s["judges"].items()}}) for s in data["spaces"]]
        real = {k: JudgeReach(**v) for k, v in data["real"].items()}
        fields = {k: data[k] for k in ("prior", "identities", "images", "chance_top1", "settings")}
        fields["seconds"] = data.get("seconds", 0.0)  # verify keeps the wall time in report["timing"]
        return cls(**fields, real=real, spaces=spaces)


def _judge(judge: Any, images: torch.Tensor, labels: torch.Tensor, independent: bool) -> JudgeReach:
    with torch.inference_mode():
        scores = judge.predict(images).float().cpu()
    k5 = min(5, scores.shape[1])
    return JudgeReach(float(topk_hits(scores, labels, 1).float().mean()), float(topk_hits(scores, labels, k5).float().mean()), independent)


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).flatten(1).mean(1)


def _fit(params: torch.Tensor, photos: torch.Tensor, draw: Any, steps: int, lr: float, project: Any = None) -> torch.Tensor:
    """Adam on ``params`` for ``steps`` steps against the pixel MSE of ``draw(params)`` to ``photos`` (no judge)."""
    params = params.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([params], lr=lr)
    for _ in range(steps):
        loss = _mse(draw(params), photos).sum()  # summed: each photo's gradient is independent of the batch
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if project is not None:
            with torch.no_grad():
                project(params)
    return params.detach()


def project_latent(prior: Any, photos: torch.Tensor, *, pool: int, starts: int, steps: int, lr: float, seed: int, batch: int = 64) -> torch.Tensor:
    """Latents ``(N, latent_dim)`` whose images are nearest ``photos`` in pixel MSE (see the module docstring)."""
    c, h, w = photos.shape[1:]

    def draw(z: torch.Tensor) -> torch.Tensor:
        return adapt_images(prior(z), channels=c, size=(h, w))

    g = torch.Generator().manual_seed(seed)
    candidates = prior.sample_latents(pool, generator=g).to(photos.device)
    with torch.no_grad():
        errors = torch.cat([torch.cdist(photos.flatten(1), draw(candidates[i : i + batch]).flatten(1)).pow(2) for i in range(0, pool, batch)], dim=1)
    best = errors.topk(min(starts, pool), dim=1, largest=False).indices  # (N, starts)
    out = []
    for i in range(0, photos.shape[0], max(1, batch // best.shape[1])):
        idx = best[i : i + max(1, batch // best.shape[1])]
        target = photos[i : i + idx.shape[0]].repeat_interleave(idx.shape[1], dim=0)
        z = _fit(candidates[idx.reshape(-1)], target, draw, steps, lr)
        with torch.no_grad():
            err = _mse(draw(z), target).view(idx.shape)
        out.append(z.view(*idx.shape, -1)[torch.arange(idx.shape[0]), err.argmin(1)])
    return torch.cat(out)


def project_features(prior: Any, photos: torch.Tensor, latents: torch.Tensor, level: int, *, steps: int, lr: float, radius: float | None, batch: int = 64) -> tuple[torch.Tensor, float]:
    """``(images, moved)``: the photos drawn from the generator's feature map at ``level``, searched within the
    relative l1 ball of ``radius`` around the latent projection's features; ``moved``: mean ‖h − h₀‖₁ / ‖h₀‖₁."""
    from ..attacks.ifgmi import project_l1_ball

    c, h, w = photos.shape[1:]

    def draw(features: torch.Tensor) -> torch.Tensor:
        return adapt_images(prior.from_features(features, level), channels=c, size=(h, w))

    images, moved = [], []
    for i in range(0, photos.shape[0], batch):
        with torch.no_grad():
            centre = prior.features(latents[i : i + batch], level)
        bound = None if radius is None else radius * centre.flatten(1).abs().sum(1)

        def project(features: torch.Tensor, centre: torch.Tensor = centre, bound: Any = bound) -> None:
            if bound is not None:
                features.copy_(centre + project_l1_ball((features - centre).flatten(1), bound).view_as(features))

        features = _fit(centre, photos[i : i + batch], draw, steps, lr, project)
        with torch.no_grad():
            images.append(draw(features).clamp(0, 1))
        moved.append((features - centre).flatten(1).abs().sum(1) / centre.flatten(1).abs().sum(1).clamp_min(1e-12))
    return torch.cat(images), float(torch.cat(moved).mean())


def prior_reach(
    prior: Any,
    photos: torch.Tensor,
    labels: torch.Tensor,
    judges: Mapping[str, Any],
    *,
    levels: Sequence[int] | None = None,
    independent: Sequence[str] | None = None,
    pool: int = DEFAULTS["pool"],
    starts: int = DEFAULTS["starts"],
    steps: int = DEFAULTS["steps"],
    lr: float = DEFAULTS["lr"],
    feature_steps: int = DEFAULTS["feature_steps"],
    feature_lr: float = DEFAULTS["feature_lr"],
    radius: float | None = DEFAULTS["radius"],
    seed: int = DEFAULTS["seed"],
    num_classes: int | None = None,
) -> ReachReport:
    """Project ``photos`` (held-out private images ``(N, C, H, W)`` in ``[0, 1]``, classes ``labels``) into
    ``prior`` by pixel MSE and judge the projections with every judge in ``judges`` (name -> object with
    ``predict(images) -> (N, num_classes)`` scores).

    Args:
        levels: feature levels to search besides the latent (default: every level the prior
            exposes; ``[]``: the latent only).
        independent: names of the judges that are independent of the private data (default: all).
        pool, starts, steps, lr: the latent search (best ``starts`` of ``pool`` random latents, Adam).
        feature_steps, feature_lr, radius: each feature level's search (relative l1 radius, ``None``: unbounded).
        seed: seeds the pool of latents.
        num_classes: for the chance level (default: the judges' score width, else ``max(label) + 1``).
    """
    for name, value in (("pool", pool), ("starts", starts)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if photos.ndim != 4 or labels.shape != photos.shape[:1] or photos.shape[0] == 0:
        raise ConfigError(f"reach needs photos (N, C, H, W) with labels (N,), got {tuple(photos.shape)} and {tuple(labels.shape)}")
    start = time.perf_counter()
    levels = list(range(getattr(prior, "num_levels", 0))) if levels is None else list(levels)
    independent_names = set(judges) if independent is None else set(independent)
    photos = photos.float()
    with torch.no_grad():
        device = next(iter(prior.parameters())).device if any(True for _ in prior.parameters()) else photos.device
    photos_dev = photos.to(device)
    latents = project_latent(prior, photos_dev, pool=pool, starts=starts, steps=steps, lr=lr, seed=seed)
    with torch.no_grad():
        c, h, w = photos.shape[1:]
        drawn = {"latent": (adapt_images(prior(latents), channels=c, size=(h, w)).clamp(0, 1), None)}
    for level in levels:
        images, moved = project_features(prior, photos_dev, latents, level, steps=feature_steps, lr=feature_lr, radius=radius)
        drawn[f"features@{level}"] = (images, moved)
    labels = labels.long().cpu()
    verdicts = {name: _judge(j, photos, labels, name in independent_names) for name, j in judges.items()}
    spaces = []
    for name, (images, moved) in drawn.items():
        images = images.float().cpu()
        space_judges = {jn: _judge(j, images, labels, jn in independent_names) for jn, j in judges.items()}
        level = None if name == "latent" else int(name.split("@")[1])
        spaces.append(SpaceReach(name, level, float(_mse(images, photos).mean()), space_judges, None if level is None else radius, moved))
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    settings = {"objective": "pixel mse", "pool": pool, "starts": starts, "steps": steps, "lr": lr, "feature_steps": feature_steps,
                "feature_lr": feature_lr, "radius": radius, "seed": seed, "levels": levels}
    return ReachReport(
        prior=str(getattr(prior, "name", type(prior).__name__)), identities=int(labels.unique().numel()), images=int(labels.numel()),
        chance_top1=1.0 / num_classes, settings=settings, real=verdicts, spaces=spaces, seconds=round(time.perf_counter() - start, 2),
        real_images=photos.cpu(), projections={name: images.float().cpu() for name, (images, _) in drawn.items()},
    )


def reach_warning(report: ReachReport, *, spaces: Sequence[str] = ("latent",), threshold: float = REACH_WARNING_THRESHOLD) -> str | None:
    """:data:`REACH_WARNING` when the best of ``spaces`` expresses fewer than ``threshold`` of the identities the
    judges recognise in the real photos (see :meth:`ReachReport.expressed`), else ``None``.

    ``spaces``: the search spaces the run's attacks search (the latent for PPA, PLG, GMI, NES, BREP).
    """
    shares = [s for s in (report.expressed(name) for name in spaces if any(r.space == name for r in report.spaces)) if s is not None]
    if not shares or max(shares) >= threshold:
        return None
    return REACH_WARNING


def save_reach_grid(report: ReachReport, path: str | Path) -> Path:
    """A PNG grid: one row per photo, *real | projection per search space* (columns in ``report.spaces`` order)."""
    from .reports import save_grid

    if report.real_images is None or not report.projections:
        raise ConfigError("this reach report carries no images (read back from JSON?): nothing to draw")
    stacked = torch.stack([report.projections[s.space] for s in report.spaces], dim=1)  # (N, spaces, C, H, W)
    return save_grid(path, report.real_images, stacked)


def held_out_photos(test: Any, classes: Sequence[int] | None, per_class: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` held-out photos of each class in ``classes`` (all when ``None``) from a private split."""
    wanted = sorted(set(int(c) for c in test.labels.tolist())) if classes is None else list(classes)
    index = [i for c in wanted for i in (test.labels == c).nonzero().flatten()[:per_class].tolist()]
    if not index:
        raise ConfigError("no held-out photos of the attacked classes to measure the prior's reach with")
    return test.images[index], test.labels[index]


def searched_spaces(planned: Sequence[Any]) -> list[str]:
    """The search spaces a verify run's planned attacks search: the latent, and IF-GMI's feature levels."""
    spaces = ["latent"]
    for plan in planned:
        if plan.attack == "ifgmi":
            spaces += [f"features@{level}" for level in plan.build().options["levels"] if f"features@{level}" not in spaces]
    return spaces


def summary_line(report: ReachReport) -> str:
    """One line: per search space, each judge's top-1 on the projections (and on the real photos)."""
    parts = []
    for row in report.spaces:
        parts.append(f"{row.space}: " + ", ".join(f"{name} {100 * j.top1:.0f} % (real {100 * report.real[name].top1:.0f} %)" for name, j in row.judges.items()))
    return f"{report.images} held-out photos projected by pixel MSE; " + "; ".join(parts) + f"; chance {100 * report.chance_top1:.1f} %"


def reach_for_verify(run: Any, *, out_dir: Path, **options: Any) -> tuple[dict[str, Any], str | None]:
    """``verify``'s reach step: ``(report["reach"], warning or None)`` for a prepared run (see ``prepare_verify``).

    One held-out photo per attacked class, judged by the face recognisers (FaceNet, dlib; independent unless they share the target's network) and the evaluation model
    where present (not independent: it was trained on the private data); the search spaces are those the
    planned attacks search (:func:`searched_spaces`). Writes ``reach-grid.png`` into ``out_dir``.
    """
    from ..attacks.priors import inference_prior

    try:
        photos, labels = held_out_photos(run.test, run.classes)
    except ConfigError as exc:  # no held-out photo of the attacked classes: say so, attack all the same
        return {"format": "midefend-reach", "skipped": str(exc), "summary": f"not measured ({exc})"}, None
    judges, independent = {}, []
    for face in run.judges.faces:  # the face recognisers; one sharing the target's network is not independent
        judges[face.name] = face.evaluator
        if face.independent:
            independent.append(face.name)
    if run.judges.trained is not None:
        judges["evaluation model"] = run.judges.trained
    spaces = searched_spaces(run.planned)
    levels = [int(s.split("@")[1]) for s in spaces[1:]]
    report = prior_reach(inference_prior(run.prior), photos, labels, judges, levels=levels, independent=independent, num_classes=run.target_ckpt.num_classes, **options)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = report.to_json()
    data["grid"] = save_reach_grid(report, out_dir / "reach-grid.png").name
    data["summary"] = summary_line(report)
    return data, reach_warning(report, spaces=spaces)


def reach_cost(num_photos: int, *, levels: int = 0, **options: Any) -> dict[str, int]:
    """Images through the prior for :func:`prior_reach`: ``forward`` (the pool) and ``backward`` (forward and backward)."""
    o = {**DEFAULTS, **options}
    return {"forward": o["pool"], "backward": num_photos * (o["starts"] * o["steps"] + levels * o["feature_steps"])}


def estimate_reach(run: Any, device: str, **options: Any) -> dict[str, Any]:
    """:func:`reach_cost` of a prepared verify run and its seconds from a short timing of the prior (``--dry-run``)."""
    from ..attacks.priors import inference_prior

    photos, _ = held_out_photos(run.test, run.classes)
    spaces = searched_spaces(run.planned)
    cost = reach_cost(photos.shape[0], levels=len(spaces) - 1, **options)
    prior = inference_prior(run.prior)
    z = prior.sample_latents(32, generator=torch.Generator().manual_seed(0)).to(device).requires_grad_(True)
    times = []
    for _ in range(3):  # the first round warms up
        start = time.perf_counter()
        prior(z).square().sum().backward()
        times.append(time.perf_counter() - start)
    per_image = min(times[1:]) / 32
    # A forward alone costs about a third of forward + backward; feature steps run only part of the generator (an upper bound).
    seconds = per_image * (cost["backward"] + cost["forward"] / 3)
    return {"spaces": spaces, "photos": int(photos.shape[0]), **cost, "seconds": round(seconds, 1)}


__all__ = [
    "DEFAULTS",
    "REACH_WARNING",
    "REACH_WARNING_THRESHOLD",
    "JudgeReach",
    "ReachReport",
    "SpaceReach",
    "estimate_reach",
    "held_out_photos",
    "prior_reach",
    "project_features",
    "project_latent",
    "reach_cost",
    "reach_for_verify",
    "reach_warning",
    "save_reach_grid",
    "searched_spaces",
    "summary_line",
]
