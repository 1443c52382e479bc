"""midefend.training: batch augmentation, defense stages, the training loop and train_target.

Everything trains on a tiny real data set (scikit-learn's 8x8 digits 0-4,
upsampled to 16x16) with a narrow ``midefend/resnet_small``, a few seconds per test.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import devices
from midefend.architectures import build_model
from midefend.data import ClassificationData
from midefend.errors import ConfigError, DataError
from midefend.training import BatchAugment, TrainResult, default_rank, defense_stages, evaluate, train_classifier
from midefend.training.augment import get_augment
from midefend.training.stages import DEFENSES

TINY_NET = {"widths": (8, 16, 32), "depths": (1, 1, 1)}


@pytest.fixture(scope="module")
def tiny() -> tuple[ClassificationData, ClassificationData]:
    """scikit-learn digits 0-4 at 16x16: 30 training and 10 test images per class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = torch.from_numpy(digits.target) < 5
    images = torch.from_numpy(digits.images).float()[keep].unsqueeze(1) / 16.0
    images = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(digits.target)[keep].long()
    data = ClassificationData(images.clamp(0, 1).contiguous(), labels, [str(d) for d in range(5)], name="sk-digits")
    small = data.subset(torch.cat([torch.nonzero(labels == c).flatten()[:40] for c in range(5)]))
    return small.split(train_per_class=30, seed=0)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("midefend/resnet_small", num_classes=5, in_chans=1, **TINY_NET)


def fit(model, train, test=None, **kwargs) -> TrainResult:
    settings = {"epochs": 8, "lr": 3e-3, "batch_size": 16, "progress": False, "augment": "none"}
    return train_classifier(model, train, test, **(settings | kwargs))


@pytest.fixture(scope="module")
def trained(tiny):
    """A tiny NoDef model trained to high confidence (the starting point of CALoR)."""
    train, test = tiny
    result = fit(tiny_model(), train, test, epochs=15)
    return result


class TestBatchAugment:
    def test_identity_and_flip_are_exact(self):
        x = torch.rand(5, 3, 9, 7)
        assert BatchAugment()(x) is x
        torch.testing.assert_close(BatchAugment(flip=True, flip_p=1.0)(x), x.flip(-1), atol=1e-6, rtol=0)
        torch.testing.assert_close(BatchAugment(flip=True, flip_p=0.0)(x), x, atol=1e-6, rtol=0)

    def test_matches_a_bilinear_reference(self):
        # Reference: warp each output pixel centre through theta, then bilinear interpolation
        # with border clamping, written out pixel by pixel.
        x = torch.rand(4, 2, 6, 5, dtype=torch.float64)
        augment = BatchAugment(shift=0.2, scale=(0.8, 1.2), rotate=30.0, flip=True)
        got = augment(x, generator=torch.Generator().manual_seed(1))
        theta = augment.sample_theta(4, torch.Generator().manual_seed(1))
        _, _, height, width = x.shape
        expected = torch.empty_like(x)
        for b in range(4):
            for i in range(height):
                for j in range(width):
                    u, v = (2 * j + 1) / width - 1, (2 * i + 1) / height - 1
                    u_in = theta[b, 0, 0] * u + theta[b, 0, 1] * v + theta[b, 0, 2]
                    v_in = theta[b, 1, 0] * u + theta[b, 1, 1] * v + theta[b, 1, 2]
                    px = min(max(((u_in + 1) * width - 1) / 2, 0.0), width - 1.0)
                    py = min(max(((v_in + 1) * height - 1) / 2, 0.0), height - 1.0)
                    x0, y0 = int(math.floor(px)), int(math.floor(py))
                    x1, y1 = min(x0 + 1, width - 1), min(y0 + 1, height - 1)
                    wx, wy = px - x0, py - y0
                    expected[b, :, i, j] = (
                        x[b, :, y0, x0] * (1 - wx) * (1 - wy)
                        + x[b, :, y0, x1] * wx * (1 - wy)
                        + x[b, :, y1, x0] * (1 - wx) * wy
                        + x[b, :, y1, x1] * wx * wy
                    )
        torch.testing.assert_close(got, expected, atol=1e-9, rtol=0)

    def test_seeded_and_per_sample(self):
        x = torch.rand(6, 1, 16, 16).expand(6, 1, 16, 16).contiguous()
        same = x[:1].expand(6, 1, 16, 16).contiguous()
        augment = get_augment("strong")
        a = augment(same, generator=torch.Generator().manual_seed(3))
        b = augment(same, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b)
        assert not torch.allclose(a[0], a[1])  # every sample gets its own warp
        theta = augment.sample_theta(1000, torch.Generator().manual_seed(0))
        zoom = 1 / theta[:, 1, :2].norm(dim=1)  # rows of R / s have norm 1 / s
        assert 0.9 - 1e-9 <= zoom.min() and zoom.max() <= 1.1 + 1e-9
        assert theta[:, :, 2].abs().max() <= 0.2 + 1e-9  # translation 2 * shift
        assert (theta[:, 0, 0] < 0).float().mean().item() == pytest.approx(0.5, abs=0.06)  # flips

    def test_errors(self):
        with pytest.raises(ConfigError, match=r"shift must lie in \[0, 0.5\) \(a fraction of the image side\), got 0.7"):
            BatchAugment(shift=0.7)
        with pytest.raises(ConfigError, match=r"scale must be \(low, high\) with 0 < low <= high, got \(1.2, 1.0\)"):
            BatchAugment(scale=(1.2, 1.0))
        with pytest.raises(ConfigError, match=r"rotate must lie in \[0, 180\] degrees, got -5"):
            BatchAugment(rotate=-5)
        with pytest.raises(ConfigError, match=r"augment must be one of none, flip, light, strong, digits or a BatchAugment, got 'heavy'"):
            get_augment("heavy")
        with pytest.raises(ConfigError, match=r"x must be a \(B, C, H, W\) batch, got shape \(3, 8, 8\)"):
            BatchAugment(shift=0.1)(torch.zeros(3, 8, 8))


class TestStages:
    def test_recipes(self):
        assert [(s.name, s.loss, s.erase) for s in defense_stages("nodef", epochs=5, lr=1e-3)] == [("train", "ce", None)]
        (midre,) = defense_stages("midre", epochs=5, lr=1e-3, erase_max=0.8)
        assert midre.erase == (0.1, 0.8)
        calor = defense_stages("calor", epochs=30, lr=1e-3, pretrain_epochs=60, ca_epochs=10, ca_lr=1e-4, head_lr_mult=10.0)
        assert [(s.name, s.epochs, s.lr, s.loss, s.harden_before) for s in calor] == [
            ("pretrain", 60, 1e-3, "ce", False),
            ("head", 30, 1e-3, "ce", True),
            ("ca", 10, 1e-4, "ca", False),
        ]
        assert calor[1].head_lr_mult == 10.0 and calor[2].augment is None and calor[2].erase is None
        both = defense_stages("midre+calor", epochs=3, lr=1e-3)
        assert [s.erase for s in both] == [(0.1, 0.4), None]
        ca_only = defense_stages("calor", epochs=0, lr=1e-3, ca_epochs=2)
        assert [(s.name, s.harden_before) for s in ca_only] == [("ca", True)]

    def test_errors(self):
        with pytest.raises(ConfigError, match="defense must be one of nodef, midre, calor, midre\\+calor, got 'dp'"):
            defense_stages("dp", epochs=1, lr=1e-3)
        with pytest.raises(ConfigError, match="epochs must be an integer >= 1, got 0"):
            defense_stages("nodef", epochs=0, lr=1e-3)
        with pytest.raises(ConfigError, match="lr must be a positive finite number, got -0.1"):
            defense_stages("nodef", epochs=1, lr=-0.1)
        with pytest.raises(ConfigError, match=r"erase_max must lie in \(0.1, 1\] \(MIDRE's a_h, e.g. 0.4 or 0.8\), got 1.5"):
            defense_stages("midre", epochs=1, lr=1e-3, erase_max=1.5)
        with pytest.raises(ConfigError, match="defense 'calor' needs epochs > 0 or ca_epochs > 0"):
            defense_stages("calor", epochs=0, lr=1e-3, ca_epochs=0)

    def test_default_rank(self):
        assert [default_rank(c) for c in (2, 5, 40, 75, 530)] == [2, 2, 16, 30, 30]


class TestTrainClassifier:
    def test_lowers_the_loss_and_learns(self, tiny, trained):
        train, test = tiny
        history = trained.history
        assert [row["epoch"] for row in history] == list(range(1, 16))
        assert history[-1]["loss"] < 0.25 * history[0]["loss"]
        assert trained.test_accuracy >= 0.9 and trained.train_accuracy >= 0.95
        assert {"stage", "loss", "train_accuracy", "confidence", "lr", "seconds"} <= set(history[0])
        assert [row["epoch"] for row in history if "test_accuracy" in row] == [5, 10, 15]
        assert not trained.model.training
        again = evaluate(trained.model, test, mean=trained.mean, std=trained.std)
        assert again["accuracy"] == trained.test_accuracy

    def test_same_seed_same_weights(self, tiny):
        train, _ = tiny
        runs = [fit(tiny_model(), train, epochs=2, seed=7, augment="strong", defense="midre") for _ in range(2)]
        other = fit(tiny_model(), train, epochs=2, seed=8, augment="strong", defense="midre")
        first, second = (r.model.state_dict() for r in runs)
        assert all(torch.equal(first[k], second[k]) for k in first)
        assert not all(torch.equal(first[k], other.model.state_dict()[k]) for k in first)
        assert [r["loss"] for r in runs[0].history] == [r["loss"] for r in runs[1].history]

    def test_leaves_the_global_rng_alone(self, tiny):
        train, _ = tiny
        model = tiny_model()
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        fit(model, train, epochs=1)
        assert torch.equal(torch.rand(3), expected)

    @pytest.mark.parametrize("defense", DEFENSES)
    def test_each_recipe_end_to_end(self, tiny, trained, defense, monkeypatch):
        from midefend.defenses import erasing
        from midefend.defenses.heads import LowRankTanhHead

        calls = []
        original = erasing.random_erase_batch

        def spy(x, **kwargs):
            calls.append(kwargs)
            return original(x, **kwargs)

        monkeypatch.setattr(erasing, "random_erase_batch", spy)
        train, test = tiny
        model = copy.deepcopy(trained.model) if "calor" in defense else tiny_model()
        result = fit(model, train, test, defense=defense, epochs=2, ca_epochs=2, rank=3, erase_max=0.8)
        stages = [row["stage"] for row in result.history]
        heads = [m for m in result.model.modules() if isinstance(m, LowRankTanhHead)]
        assert result.defense["name"] == defense
        if "calor" in defense:
            assert stages == ["head"] * 2 + ["ca"] * 2
            assert len(heads) == 1 and heads[0].rank == 3 and result.defense["rank"] == 3
            assert result.hardening is not None
        else:
            assert stages == ["train"] * 2 and not heads
        if "midre" in defense:
            assert len(calls) == 2 * math.ceil(len(train) / 16)  # every CE batch, none in the CA stage
            assert calls[0]["scale"] == (0.1, 0.8) and calls[0]["ratio"] == (1.0, 1.0) and calls[0]["value"] == "mean"
            assert result.defense["erase_scale"] == [0.1, 0.8]
        else:
            assert not calls
        assert 0.0 <= result.test_accuracy <= 1.0

    def test_ca_moves_confidence_toward_its_optimum(self, tiny, trained):
        # The same seed and head stage, without and with the CA fine-tune: L_CA = p_y**b * log p_y
        # is minimal at p_y = exp(-1/b), so a confident CE model (p_y ~ 1) must move down toward it.
        # Default ca_params="head": fine-tuning everything at this lr cost 10-18 test points here.
        train, test = tiny
        b = 8.0
        target = math.exp(-1 / b)
        # The linear-regime warm start keeps the CE model's confidence (p_y ~ 1); the saturating default
        # starts closer to the optimum, which would leave too little room to see the move.
        common = {"defense": "calor", "rank": 4, "epochs": 3, "ca_b": b, "head_init": "svd", "linear_range": 0.1}
        before = fit(copy.deepcopy(trained.model), train, test, ca_epochs=0, **common)
        after = fit(copy.deepcopy(trained.model), train, test, ca_epochs=4, ca_lr=1e-3, **common)
        assert before.train_confidence > target + 0.1
        # Closer to the optimum by a clear margin (a step may overshoot it slightly: Adam, tiny data).
        assert abs(after.train_confidence - target) < abs(before.train_confidence - target) - 0.02
        assert after.history[-1]["stage"] == "ca" and after.defense["ca_b"] == b and after.defense["ca_params"] == "head"
        assert after.train_accuracy >= before.train_accuracy - 0.05  # tiny data: at most one or two images
        assert after.test_accuracy >= before.test_accuracy - 0.1  # 50 test images: at most 5 more mistakes

    @pytest.mark.parametrize("ca_params", ["head", "all"])
    def test_head_only_ca_leaves_the_backbone_untouched(self, tiny, trained, ca_params):
        train, test = tiny
        common = {"defense": "calor", "rank": 4, "epochs": 2}
        start = fit(copy.deepcopy(trained.model), train, test, ca_epochs=0, **common).model
        before = copy.deepcopy(start.state_dict())
        # the same seed gives a bit-identical head stage, so every difference comes from the CA stage
        after = fit(copy.deepcopy(trained.model), train, test, ca_epochs=2, ca_lr=1e-3, ca_params=ca_params, **common).model
        state = after.state_dict()
        head = {name for name in state if name.startswith(tuple(self._head_prefixes(after)))}
        assert head and all(name in before for name in state)
        changed = {name for name in state if not torch.equal(state[name], before[name])}
        assert changed & head  # the head learned
        assert all(p.grad is None for p in after.parameters())  # no stale gradients left on the model
        if ca_params == "head":  # weights and BatchNorm statistics of the backbone are bit-identical
            assert changed <= head
        else:
            assert changed - head

    @staticmethod
    def _head_prefixes(model):
        from midefend.defenses.heads import LowRankTanhHead

        return [name + "." for name, module in model.named_modules() if isinstance(module, LowRankTanhHead)]

    def test_step_schedule_and_sgd(self, tiny):
        train, _ = tiny
        result = fit(tiny_model(), train, epochs=10, lr=0.01, optimizer="sgd", schedule="step")
        lrs = [row["lr"] for row in result.history]
        assert lrs[:6] == pytest.approx([0.01] * 6)
        assert lrs[6:8] == pytest.approx([0.001] * 2) and lrs[8:] == pytest.approx([0.0001] * 2)
        cosine = fit(tiny_model(), train, epochs=2, lr=0.01, schedule="cosine")
        assert cosine.history[0]["lr"] == pytest.approx(0.005, abs=1e-3) and cosine.history[1]["lr"] == pytest.approx(0.0)

    def test_errors(self, tiny):
        train, _ = tiny
        model = tiny_model()
        with pytest.raises(ConfigError, match="optimizer must be one of adamw, sgd, got 'adam'"):
            fit(model, train, optimizer="adam")
        with pytest.raises(ConfigError, match="schedule must be one of cosine, step, constant, got 'linear'"):
            fit(model, train, schedule="linear")
        with pytest.raises(ConfigError, match="batch_size must be an integer >= 2, got 1"):
            fit(model, train, batch_size=1)
        with pytest.raises(ConfigError, match=r"mean and std need 1 values \(std > 0\) for 1-channel images"):
            fit(model, train, mean=(0.5, 0.5, 0.5))
        with pytest.raises(ConfigError, match="eval_every must be an integer >= 0"):
            fit(model, train, eval_every=-1)
        with pytest.raises(DataError, match="training set 'sk-digits' has 1 images; need at least 2"):
            fit(model, train.subset([0]))
        with pytest.raises(ConfigError, match="training diverged in stage 'train' epoch 1"):
            fit(model, train, lr=1e6, optimizer="sgd", epochs=1)

    def test_bad_rank_is_refused_before_pretraining(self, tiny, monkeypatch):
        from midefend.training import loop

        def no_training(*args, **kwargs):
            raise AssertionError("an epoch ran before the rank was checked")

        monkeypatch.setattr(loop._Step, "epoch", no_training)
        with pytest.raises(ConfigError, match=r"^rank must be in \[1, 5\] for ResNetSmall.fc \(min\(in_features=\d+, num_classes=5\)\), got 6$"):
            fit(tiny_model(), tiny[0], defense="calor", rank=6, pretrain_epochs=50)

    @pytest.mark.parametrize("device", devices())
    def test_devices(self, tiny, device):
        train, test = tiny
        result = fit(tiny_model(), train, test, epochs=1, device=device, defense="midre")
        assert next(result.model.parameters()).device.type == device
        assert result.config["amp"] is (device == "cuda")


class TestResume:
    """An interrupted run, started again with the same arguments, ends with the same weights."""

    @staticmethod
    def model():
        torch.manual_seed(0)
        return build_model("midefend/vgg_small", num_classes=5, in_chans=1, widths=(8, 16), hidden=16)  # has dropout

    # end of the pretrain stage; inside the hardened head stage; inside the head-only CA stage
    @pytest.mark.parametrize("stop_after", [2, 3, 5])
    def test_interrupted_equals_uninterrupted(self, tiny, tmp_path, monkeypatch, stop_after):
        from midefend.training import progress

        train, test = tiny
        settings = {"defense": "midre+calor", "pretrain_epochs": 2, "epochs": 2, "ca_epochs": 2, "rank": 3, "augment": "strong"}
        reference = fit(self.model(), train, test, **settings)
        state = tmp_path / "run.pt"
        original = progress.TrainingProgress.update
        calls = []

        def interrupt(self, row):
            original(self, row)
            calls.append(row)
            if len(calls) == stop_after:
                raise KeyboardInterrupt

        monkeypatch.setattr(progress.TrainingProgress, "update", interrupt)
        with pytest.raises(KeyboardInterrupt):
            fit(self.model(), train, test, resume=state, **settings)
        monkeypatch.setattr(progress.TrainingProgress, "update", original)
        resumed = fit(self.model(), train, test, resume=state, **settings)
        expected = reference.model.state_dict()
        assert all(torch.equal(expected[k], v) for k, v in resumed.model.state_dict().items())
        assert [r["loss"] for r in resumed.history] == [r["loss"] for r in reference.history]
        assert resumed.test_accuracy == reference.test_accuracy
        again = fit(self.model(), train, test, resume=state, **settings)  # finished: returns at once
        assert len(again.history) == 6
        assert all(p.requires_grad for p in resumed.model.parameters())  # the CA stage's freeze is undone
        assert all(torch.equal(expected[k], v) for k, v in again.model.state_dict().items())

    def test_refuses_another_runs_state(self, tiny, tmp_path):
        train, _ = tiny
        state = tmp_path / "run.pt"
        fit(self.model(), train, epochs=1, resume=state)
        with pytest.raises(ConfigError, match=r"resume file .*run.pt belongs to a different run"):
            fit(self.model(), train, epochs=2, resume=state)
        state.write_bytes(b"garbage")
        from midefend.errors import CheckpointError

        with pytest.raises(CheckpointError, match=r"cannot read training state .*run.pt"):
            fit(self.model(), train, epochs=1, resume=state)
