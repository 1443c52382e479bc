"""Verify uses the owner's split and preprocessing: --train-data/--test-data, recorded file lists, 112x92 inputs."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from attack_fixtures import tiny_world, write_digit_folder  # noqa: F401  (session fixture)
from midefend.architectures import list_architectures, register_architecture
from midefend.cli import app
from midefend.errors import ConfigError, DataError
from midefend.evaluation.classifier import Classifier
from midefend.evaluation.evaluate import natural_accuracy
from midefend.evaluation.private_data import load_private_data, preparation
from midefend.io.checkpoints import load_checkpoint, save_checkpoint

FAST = ["--attack", "miface", "--steps", "2", "--per-class", "2", "--classes", "0-1", "--quiet"]


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


class TestTrainTestFolders:
    def test_the_given_split_is_used(self, tiny_world, tmp_path):
        w = tiny_world
        train_dir = write_digit_folder(tmp_path / "train", w.train.images, w.train.labels)
        test_dir = write_digit_folder(tmp_path / "test", w.test.images, w.test.labels)
        out = tmp_path / "run"
        result = _run("verify", w.paths["target"], "--eval-model", w.paths["eval"], "--train-data", train_dir, "--test-data", test_dir, "--out", out, *FAST)
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        # the owner's held-out accuracy of the same model on the same images
        assert report["metrics"]["accuracy"] == pytest.approx(natural_accuracy(w.target, w.test), abs=1e-9)
        assert (report["data"]["n_train"], report["data"]["n_test"]) == (len(w.train), len(w.test))
        assert report["data"]["split"] == "the given training and test folders"

    def test_one_folder_alone_is_refused(self, tiny_world, tmp_path):
        w = tiny_world
        result = _run("verify", w.paths["target"], "--eval-model", w.paths["eval"], "--train-data", w.folder, "--out", tmp_path, *FAST)
        assert result.exit_code == 1
        assert result.output.strip() == "error: give both --train-data and --test-data (the training and the held-out class folders), or neither"

    def test_not_together_with_data(self, tiny_world):
        ckpt = load_checkpoint(tiny_world.paths["target"])
        with pytest.raises(ConfigError, match=r"^give either --data or --train-data/--test-data, not both$"):
            load_private_data(ckpt, tiny_world.folder, train_data=tiny_world.folder, test_data=tiny_world.folder)


class TestRecordedData:
    def _ckpt(self, tiny_world, tmp_path, **kwargs):
        from attack_fixtures import MEAN, STD, TARGET_ARCH, TARGET_KW

        path = tmp_path / "t.safetensors"
        save_checkpoint(
            tiny_world.target.model, path, arch=TARGET_ARCH, arch_kwargs={"in_chans": 1, **TARGET_KW}, num_classes=5,
            input_size=(1, 16, 16), mean=MEAN, std=STD, **kwargs,
        )  # fmt: skip
        return load_checkpoint(path)

    def test_free_text_data_record_is_a_one_line_error(self, tiny_world, tmp_path):
        ckpt = self._ckpt(tiny_world, tmp_path, extra={"data": "orl 7/3 per identity, seed 0"})
        with pytest.raises(ConfigError, match=r"^the checkpoint does not record its data set \(its extra\['data'\] is 'orl 7/3 per identity, seed 0', not a data record\): pass --data"):
            load_private_data(ckpt)
        # and --data still works with such a file
        train, test = load_private_data(ckpt, tiny_world.folder)
        assert len(train) + len(test) == len(tiny_world.train) + len(tiny_world.test)

    def test_recorded_file_lists_are_the_split(self, tiny_world, tmp_path):
        files = [f"{label}/{name}" for label, name in ((p.parent.name, p.name) for p in sorted(tiny_world.folder.glob("*/*.png")))]
        train_files, test_files = files[::3], files[1::3]  # an arbitrary split midefend would never draw
        ckpt = self._ckpt(tiny_world, tmp_path, extra={"data": {"spec": str(tiny_world.folder), "split": {"train_files": train_files, "test_files": test_files}}})
        train, test = load_private_data(ckpt)
        assert train.info["files"] == train_files and test.info["files"] == test_files
        assert train.info["split_source"] == "the split recorded in the checkpoint (file lists)"

    def test_recorded_file_missing(self, tiny_world, tmp_path):
        ckpt = self._ckpt(tiny_world, tmp_path, extra={"data": {"spec": str(tiny_world.folder), "split": {"train_files": ["0/nope.png"], "test_files": []}}})
        with pytest.raises(DataError, match=r"the checkpoint's train split names 1 file\(s\) not found in .* \(first: 0/nope.png\)$"):
            load_private_data(ckpt)

    def test_preprocess_round_trip_and_errors(self, tiny_world, tmp_path):
        ckpt = self._ckpt(tiny_world, tmp_path, preprocess={"box": [2, 2, 14, 14]})
        assert ckpt.preprocess == {"box": [2, 2, 14, 14]}
        assert preparation(ckpt) == {"size": 16, "channels": 1, "box": (2, 2, 14, 14), "crop": "center"}
        with pytest.raises(ConfigError, match=r"preprocess box must be \[left, top, right, bottom\] with left < right"):
            self._ckpt(tiny_world, tmp_path, preprocess={"box": [5, 2, 3, 14]})
        with pytest.raises(ConfigError, match=r"preprocess crop must be one of center, none, got 'random'"):
            self._ckpt(tiny_world, tmp_path, preprocess={"crop": "random"})

    def test_box_is_applied(self, tiny_world, tmp_path):
        from midefend.data.images import read_image

        ckpt = self._ckpt(tiny_world, tmp_path, preprocess={"box": [2, 2, 14, 14]}, extra={"data": {"spec": str(tiny_world.folder)}})
        train, _ = load_private_data(ckpt)
        first = tiny_world.folder / train.info["files"][0]
        assert torch.equal(train.images[0], read_image(first, size=16, channels=1, box=(2, 2, 14, 14)))
        assert not torch.equal(train.images[0], read_image(first, size=16, channels=1))


class FullFramePixels(torch.nn.Module):
    """Nearest class mean on the whole 112x92 frame (8x4-pixel averages); refuses any other input size."""

    def __init__(self, num_classes: int, in_chans: int = 1) -> None:
        super().__init__()
        self.pool = torch.nn.AvgPool2d((8, 4))
        self.fc = torch.nn.Linear(in_chans * 14 * 23, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2:] == (112, 92), f"fed {tuple(x.shape)}"
        return self.fc(self.pool(x).flatten(1))


FULL_ARCH = "midefend/test_full_frame_pixels"
if FULL_ARCH not in list_architectures():
    register_architecture("test_full_frame_pixels")(FullFramePixels)


class TestNonSquare:
    def test_a_112x92_model_is_fed_112x92(self, orl_dir, tmp_path, tiny_world):
        tiny_prior = tiny_world.prior
        from torchvision.datasets import ImageFolder
        from torchvision.transforms import v2

        # the owner's pipeline: the whole ORL frame, ImageFolder labels, their own split (last 2 images of each person held out)
        tv = ImageFolder(str(orl_dir), transform=v2.Compose([v2.Grayscale(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]))
        x = torch.stack([tv[i][0] for i in range(len(tv))])
        y = torch.tensor(tv.targets)
        held = torch.zeros(len(y), dtype=torch.bool)
        for c in range(40):
            held[(y == c).nonzero().flatten()[-2:]] = True
        flat = torch.nn.functional.avg_pool2d((x - 0.5) / 0.5, (8, 4)).flatten(1)
        means = torch.stack([flat[~held & (y == c)].mean(0) for c in range(40)])
        model = FullFramePixels(40).eval()
        with torch.no_grad():
            model.fc.weight.copy_(2 * means)
            model.fc.bias.copy_(-(means**2).sum(1))
            owner_accuracy = (model((x[held] - 0.5) / 0.5).argmax(1) == y[held]).float().mean().item()
        files = [str(p.relative_to(orl_dir)) for p, _ in [(__import__("pathlib").Path(s), t) for s, t in tv.samples]]
        path = save_checkpoint(
            model, tmp_path / "full.safetensors", arch=FULL_ARCH, arch_kwargs={"in_chans": 1}, num_classes=40,
            classes=tv.classes, input_size=(1, 112, 92), mean=(0.5,), std=(0.5,),
            extra={"data": {"spec": str(orl_dir), "split": {
                "train_files": [f for f, h in zip(files, held.tolist()) if not h],
                "test_files": [f for f, h in zip(files, held.tolist()) if h]}}},
        )  # fmt: skip
        ckpt = load_checkpoint(path)
        train, test = load_private_data(ckpt)
        assert tuple(test.images.shape) == (80, 1, 112, 92) and len(train) == 320
        assert natural_accuracy(Classifier.from_checkpoint(ckpt), test) == pytest.approx(owner_accuracy, abs=1e-9)
        assert owner_accuracy > 0.8
        # and the whole verify path, through a 16x16 generator prior (the grid shows private faces at its size)
        from midefend.evaluation.verify import verify

        report = verify(
            path, eval_model=path, prior=tiny_prior, attack="ppa", classes="0-1", out_dir=tmp_path / "run",
            attack_options={"per_class": 1, "candidates": 2, "steps": 2, "init_pool": 4},
        )  # fmt: skip
        assert report["metrics"]["accuracy"] == pytest.approx(owner_accuracy, abs=1e-9)
        assert (tmp_path / "run" / "grid.png").exists()
