"""Tiny models, data and prior shared by the attack and CLI tests (one session fixture).

scikit-learn's 8×8 digits, zero-padded to 16×16 and written as a PNG class
folder (so the CLI can read it as ``--data FOLDER``): private classes 0–4
(the target's), public 5–9 (the prior's), as in GMI's MNIST split. The target
is a narrow ``midefend/resnet_small``, the evaluation model a narrow
``midefend/vgg_small`` (another architecture), both trained with a plain loop
on the folder's training split; the prior is a small DCGAN on the public digits.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from midefend.architectures import build_model

MEAN, STD = (0.5,), (0.5,)
TARGET_ARCH, TARGET_KW = "midefend/resnet_small", {"widths": [8, 16], "depths": [1, 1]}
EVAL_ARCH, EVAL_KW = "midefend/vgg_small", {"widths": [8, 16], "hidden": 32, "drop_rate": 0.0}


def tiny_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(private_images, private_labels, public_images)``: 16×16 grey in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = F.pad(torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0, (4, 4, 4, 4))
    y = torch.tensor(digits.target, dtype=torch.long)
    private = y < 5
    return x[private], y[private], x[~private]


def train_tiny(arch: str, kwargs: dict, x: torch.Tensor, y: torch.Tensor, *, seed: int, epochs: int = 12) -> torch.nn.Module:
    """A plain Adam loop on normalised images; returns the model in eval mode."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=int(y.max()) + 1, in_chans=1, **kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = F.cross_entropy(model((x[idx] - 0.5) / 0.5), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def write_digit_folder(root: Path, x: torch.Tensor, y: torch.Tensor) -> Path:
    """One PNG per image under ``root/<label>/``."""
    from PIL import Image

    for label in sorted(set(y.tolist())):
        (root / str(label)).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(x, y.tolist())):
        Image.fromarray((image[0] * 255).round().to(torch.uint8).numpy(), mode="L").save(root / str(label) / f"{i}.png")
    return root


def record_chunks(monkeypatch, *classes: type) -> list[list[int]]:
    """Patch ``_attack_chunk`` of the given attack classes to record each chunk they compute; returns the record."""
    calls: list[list[int]] = []
    for cls in classes:
        original = cls._attack_chunk

        def counting(self, ctx, chunk, advance, _original=original):
            calls.append(list(chunk))
            return _original(self, ctx, chunk, advance)

        monkeypatch.setattr(cls, "_attack_chunk", counting)
    return calls


_CACHE: dict[str, SimpleNamespace] = {}


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """Data folder, trained target / evaluation checkpoints and a prior file (about 30 s on one core).

    Each test module imports this fixture, which makes one fixture per module; the module-level
    cache makes them share one build per session.
    """
    if "world" not in _CACHE:
        _CACHE["world"] = _build_world(tmp_path_factory)
    return _CACHE["world"]


def _build_world(tmp_path_factory) -> SimpleNamespace:
    from midefend.attacks import save_prior, train_prior
    from midefend.data.resolve import load_dataset
    from midefend.evaluation import Classifier
    from midefend.io.checkpoints import save_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    x, y, public = tiny_digits()
    folder = write_digit_folder(root / "digits", x, y)
    train, test = load_dataset(folder, size=16, channels=1, seed=0)
    models, paths = {}, {}
    for name, arch, kwargs, seed in (("target", TARGET_ARCH, TARGET_KW, 0), ("eval", EVAL_ARCH, EVAL_KW, 1)):
        model = train_tiny(arch, kwargs, train.images, train.labels, seed=seed)
        paths[name] = root / f"{name}.safetensors"
        save_checkpoint(
            model, paths[name], arch=arch, arch_kwargs={"in_chans": 1, **kwargs}, num_classes=5,
            input_size=(1, 16, 16), mean=MEAN, std=STD,
        )
        models[name] = Classifier(model, input_size=(1, 16, 16), mean=MEAN, std=STD, name=name)
    prior = train_prior(public, epochs=15, batch_size=32, latent_dim=16, width=16, seed=0)
    paths["prior"] = save_prior(prior, root / "prior.safetensors")
    return SimpleNamespace(
        root=root, folder=folder, train=train, test=test, target=models["target"], eval=models["eval"], prior=prior, paths=paths
    )
