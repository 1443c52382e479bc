"""The prior's reach (midefend.evaluation.reach) and IF-GMI (midefend.attacks.ifgmi) on tiny synthetic priors."""

from __future__ import annotations

import json

import pytest
from attack_fixtures import tiny_world  # noqa: F401  (session fixture: tiny models, data, prior)
import torch
import torch.nn as nn

from midefend.attacks.ifgmi import IFGMIAttack, project_l1_ball
from midefend.attacks.priors import DCGANGenerator, GenerativePrior
from midefend.errors import AttackError, ConfigError
from midefend.evaluation.classifier import Classifier
from midefend.evaluation.identity import NearestIdentityEvaluator
from midefend.evaluation.reach import REACH_WARNING, JudgeReach, ReachReport, SpaceReach, prior_reach, reach_warning, save_reach_grid

IDS, SIDE = 10, 8


def faces(seed: int = 0):
    """10 identities: a random 8×8 prototype each; 3 gallery photos and 1 held-out photo per identity (prototype + noise)."""
    g = torch.Generator().manual_seed(seed)
    proto = torch.rand(IDS, 1, SIDE, SIDE, generator=g)
    noisy = lambda n: (proto.repeat_interleave(n, 0) + 0.08 * torch.randn(IDS * n, 1, SIDE, SIDE, generator=g)).clamp(0, 1)  # noqa: E731
    labels = lambda n: torch.arange(IDS).repeat_interleave(n)  # noqa: E731
    return noisy(3), labels(3), noisy(1), labels(1)


class Flatten(nn.Module):
    """A pixel "recogniser": the image itself as its embedding (a nearest-neighbour judge)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


class TablePrior(nn.Module):
    """A lookup-table generator: image = softmax(4 z) · table (it can draw exactly the table's images)."""

    name = "table"

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.latent_dim = table.shape[0]
        self.calls = 0

    def sample_latents(self, n, *, generator=None, device=None):
        return torch.randn(n, self.latent_dim, generator=generator)

    def forward(self, z):
        self.calls += 1
        return torch.einsum("bn,nchw->bchw", (4 * z).softmax(1), self.table)


class NoisePrior(TablePrior):
    """A prior of noise: a fixed random map of a 4-d latent, nothing like a face."""

    def __init__(self) -> None:
        super().__init__(torch.zeros(1, 1, SIDE, SIDE))
        self.weight = torch.randn(4, SIDE * SIDE, generator=torch.Generator().manual_seed(7))
        self.latent_dim = 4

    def forward(self, z):
        self.calls += 1
        return torch.sigmoid(z @ self.weight).view(-1, 1, SIDE, SIDE)


def judge():
    gallery, gallery_labels, _, _ = faces()
    return NearestIdentityEvaluator(Flatten(), gallery, gallery_labels, num_classes=IDS, name="pixels")


BUDGET = {"pool": 100, "starts": 2, "steps": 60, "lr": 0.1, "levels": []}


class TestReach:
    def test_a_prior_that_contains_the_photos_reaches_them(self):
        _, _, photos, labels = faces()
        distractors = torch.rand(20, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(3))
        report = prior_reach(TablePrior(torch.cat([photos, distractors])), photos, labels, {"pixels": judge()}, **BUDGET)
        latent = report.space("latent")
        assert report.real["pixels"].top1 == 1.0
        assert latent.judges["pixels"].top1 >= 0.9 and latent.mse < 0.01
        assert report.expressed() >= 0.9 and reach_warning(report) is None

    def test_a_prior_of_noise_stays_near_chance_and_warns(self):
        _, _, photos, labels = faces()
        report = prior_reach(NoisePrior(), photos, labels, {"pixels": judge()}, **BUDGET)
        assert report.chance_top1 == pytest.approx(0.1)
        assert report.space("latent").judges["pixels"].top1 <= 0.3  # chance 0.1 over 10 photos
        assert reach_warning(report) == REACH_WARNING

    def test_the_objective_calls_no_judge(self):
        """The judges look only at finished projections: one whose forward raises does not disturb the search,
        and every prediction comes after the last call of the generator."""
        _, _, photos, labels = faces()
        prior = TablePrior(photos)
        seen_at: list[int] = []

        class Raising(nn.Module):
            def forward(self, x):
                raise RuntimeError("the reach objective must not call a judge")

            def predict(self, images):
                seen_at.append(prior.calls)
                return -torch.cdist(images.flatten(1), photos.flatten(1))

        report = prior_reach(prior, photos, labels, {"raising": Raising()}, **BUDGET)
        assert report.space("latent").judges["raising"].top1 >= 0.9
        assert seen_at and all(at == prior.calls for at in seen_at)

    def test_feature_spaces_json_and_grid(self, tmp_path):
        _, _, photos, labels = faces()
        prior = GenerativePrior(DCGANGenerator(latent_dim=4, channels=1, width=4, image_size=8))
        report = prior_reach(prior, photos, labels, {"pixels": judge()}, pool=8, starts=1, steps=3, feature_steps=3, radius=0.2, levels=None)
        assert [s.space for s in report.spaces] == ["latent", "features@0"]
        feature = report.space("features@0")
        assert feature.radius == 0.2 and feature.moved <= 0.2 + 1e-5
        again = ReachReport.from_json(json.loads(json.dumps(report.to_json())))
        assert again == report
        grid = save_reach_grid(report, tmp_path / "reach.png")
        from PIL import Image

        assert Image.open(grid).size == (2 + 3 * (SIDE + 2), 2 + IDS * (SIDE + 2))  # real | latent | features@0
        with pytest.raises(ConfigError, match="carries no images"):
            save_reach_grid(again, tmp_path / "none.png")
        with pytest.raises(ConfigError, match=r"not a reach report \(format None\)"):
            ReachReport.from_json({})

    def test_warning_threshold_is_relative_to_the_real_photos(self):
        def report(top1: float, real: float, independent: bool = True) -> ReachReport:
            row = SpaceReach("latent", None, 0.01, {"j": JudgeReach(top1, top1, independent)})
            return ReachReport("p", 10, 10, 0.1, {}, {"j": JudgeReach(real, real, independent)}, [row])

        assert reach_warning(report(0.3, 0.5)) is None  # 60 % of what the judge sees in the real photos
        assert reach_warning(report(0.2, 0.5)) == REACH_WARNING
        assert reach_warning(report(0.2, 0.0)) is None  # a judge that recognises nobody says nothing


class TestL1Ball:
    def test_hand_computed_projection(self):
        # |x| sorted 3, 1, 0.5; θ = (3 + 1 − 3) / 2 = 0.5 puts (2.5, 0.5, 0) on the sphere of radius 3.
        x = torch.tensor([[3.0, -1.0, 0.5], [0.2, -0.1, 0.0], [1.0, 1.0, 1.0]])
        out = project_l1_ball(x, torch.tensor([3.0, 1.0, 0.0]))
        assert torch.equal(out, torch.tensor([[2.5, -0.5, 0.0], [0.2, -0.1, 0.0], [0.0, 0.0, 0.0]]))

    def test_lands_on_the_sphere(self):
        x = torch.randn(6, 500, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        out = project_l1_ball(x, 3.0)
        assert torch.allclose(out.abs().sum(1), torch.full((6,), 3.0, dtype=torch.float64))
        with pytest.raises(ConfigError, match="finite non-negative"):
            project_l1_ball(x, -1.0)

    def test_ifgmi_keeps_its_features_in_the_ball(self):
        attack = IFGMIAttack(per_class=1, radius=0.25)
        centre = torch.rand(3, 4, 4, 4)
        radius = 0.25 * centre.flatten(1).abs().sum(1)
        attack._phase = (0, centre, radius)
        params = centre + torch.randn(3, 4, 4, 4)
        attack.after_step(params)
        moved = (params - centre).flatten(1).abs().sum(1)
        assert torch.all(moved <= radius * (1 + 1e-6)) and torch.allclose(moved, radius, rtol=1e-5)


class Templates(nn.Module):
    """A target whose class c is the template image T_c: logits −20 · mean squared distance."""

    def __init__(self, templates: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("templates", templates)

    def forward(self, x):
        return -20 * (x.flatten(1)[:, None] - self.templates.flatten(1)[None]).pow(2).mean(-1)


class TestIFGMI:
    def test_features_reach_what_the_latent_cannot(self):
        torch.manual_seed(0)
        prior = GenerativePrior(DCGANGenerator(latent_dim=2, channels=1, width=4, image_size=16))  # 2-d latent: a thin image set
        templates = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
        target = Classifier(Templates(templates), input_size=(1, 16, 16), mean=(0.0,), std=(1.0,))
        common = {"per_class": 1, "candidates_factor": 1, "steps": 40, "init_pool": 16, "augment": "none", "selection_augs": 0, "layer_steps": 60,
                  "layer_lr": 0.05, "precision": "fp32"}
        latent = IFGMIAttack(levels=[], **common).run(target, prior)
        features = IFGMIAttack(levels=[1], radius=None, **common).run(target, prior)
        # Same latent search; the 8×8 feature maps then draw what the 2-d latent cannot (seeded: 0.51 -> 0.68).
        assert features.target_confidence.mean() > latent.target_confidence.mean() + 0.1
        assert features.config["levels"] == [1] and latent.config["levels"] == []

    def test_options_and_prior_checks(self):
        with pytest.raises(ConfigError, match=r"levels must be increasing without repeats"):
            IFGMIAttack(levels=[1, 0])
        with pytest.raises(ConfigError, match=r"radius must be a non-negative number"):
            IFGMIAttack(radius=-0.1)
        prior = GenerativePrior(DCGANGenerator(latent_dim=2, channels=1, width=4, image_size=16))
        with pytest.raises(AttackError, match=r"the prior has feature levels 0\.\.1, asked for \[0, 2\]"):
            IFGMIAttack(levels=[0, 2]).check_prior(prior)
        attack = IFGMIAttack(per_class=1, candidates_factor=1, steps=10, layer_steps=5, levels=[0, 1])
        assert attack.total_steps() == 20 and attack.cost(3)["renders"] == 3 * 20


class TestVerify:
    """``midefend verify`` measures the reach before the attacks; ``--no-reach`` skips it; ``--dry-run`` prices it."""

    def test_report_carries_the_reach(self, tiny_world, tmp_path):
        from typer.testing import CliRunner

        from midefend.cli import app

        w = tiny_world
        base = ["verify", w.paths["target"], "--eval-model", w.paths["eval"], "--data", w.folder, "--prior", w.paths["prior"],
                "--attack", "ppa", "--steps", "2", "--per-class", "1", "--quiet"]
        run = lambda *extra: CliRunner().invoke(app, [str(a) for a in [*base, *extra]])  # noqa: E731
        result = run("--out", tmp_path / "on", "--classes", "0-1")
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / "on" / "report.json").read_text())
        reach = ReachReport.from_json(report["reach"])
        assert [s.space for s in reach.spaces] == ["latent"] and reach.images == 2
        assert set(reach.real) == {"evaluation model"} and not reach.real["evaluation model"].independent
        assert (tmp_path / "on" / report["reach"]["grid"]).is_file()
        assert (REACH_WARNING in report["verdict"]) == any(REACH_WARNING in n for n in report["notes"])
        off = run("--out", tmp_path / "off", "--classes", "0-1", "--no-reach")
        assert off.exit_code == 0, off.output
        assert "reach" not in json.loads((tmp_path / "off" / "report.json").read_text())
        dry = run("--dry-run", "--classes", "0-1")
        assert dry.exit_code == 0 and "prior reach" in dry.output and "prior reach" not in run("--dry-run", "--no-reach").output
