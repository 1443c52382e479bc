"""Class identity by name: checkpoints record class names; verify matches data and models by name.

The ORL case of issue 16: torchvision's ``ImageFolder`` numbers ORL's folders
``s1, s10, s11, ..., s2, ...`` while midefend's loader numbers them
``s1, s2, ..., s40``; 39 of 40 labels disagree. A model trained with
torchvision's order must be verified with torchvision's order.
"""

from __future__ import annotations

import json

import pytest
import torch

from midefend.architectures import build_model, list_architectures, register_architecture
from midefend.data.class_names import ORDER_ASSUMED, ORDER_RECORDED, imagefolder_order, label_map, relabel_to
from midefend.data.datasets import ClassificationData
from midefend.errors import CheckpointError, ConfigError, DataError
from midefend.evaluation.class_order import ReorderedClassifier, evaluator_in_target_order, model_classes
from midefend.evaluation.classifier import Classifier
from midefend.evaluation.evaluate import natural_accuracy
from midefend.evaluation.verify import load_private_data, verify
from midefend.io import read_checkpoint_header
from midefend.io.checkpoints import load_checkpoint, save_checkpoint

SIZE = 24
ARCH, KW = "midefend/resnet_small", {"widths": [16, 32], "depths": [1, 1]}


class TestNames:
    def test_imagefolder_order_is_plain_string_sort(self):
        names = [f"s{i}" for i in range(1, 41)]
        order = imagefolder_order(names)
        assert order[:4] == ["s1", "s10", "s11", "s12"] and order[-1] == "s9"
        # 39 of ORL's 40 identities get another label than in natural order (only s1 keeps 0)
        assert sum(a != b for a, b in zip(order, names)) == 39

    def test_label_map_and_relabel(self):
        data = ClassificationData(torch.zeros(4, 1, 4, 4), torch.tensor([0, 1, 2, 2]), ["a", "b", "c"])
        assert label_map(["a", "b", "c"], ["c", "a", "b"]) == [1, 2, 0]
        moved = relabel_to(data, ["c", "a", "b"])
        assert moved.labels.tolist() == [1, 2, 0, 0] and moved.classes == ["c", "a", "b"]
        assert relabel_to(data, ["a", "b", "c"]) is data

    def test_mismatch_names_the_first_differences(self):
        data = ClassificationData(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), ["s1", "x"], name="faces")
        with pytest.raises(DataError, match=r"^data 'faces' has classes that differ from the model's \(missing from the data: s2; not classes of the model: x\)$"):
            relabel_to(data, ["s1", "s2"])

    def test_many_differences_are_cut_short(self):
        with pytest.raises(DataError, match=r"missing from the data: b, c, d and 2 more; not classes of the model: z\)$"):
            label_map(["a", "z"], ["a", "b", "c", "d", "e", "f"])


class TestCheckpointField:
    def _save(self, tmp_path, **kwargs):
        model = build_model(ARCH, num_classes=3, in_chans=1, **KW)
        path = tmp_path / "m.safetensors"
        return save_checkpoint(
            model, path, arch=ARCH, arch_kwargs={"in_chans": 1, **KW}, num_classes=3, input_size=(1, 8, 8), mean=(0.5,), std=(0.5,), **kwargs
        )

    def test_round_trip(self, tmp_path):
        path = self._save(tmp_path, classes=("s1", "s10", "s2"))
        assert load_checkpoint(path).classes == ["s1", "s10", "s2"]
        assert read_checkpoint_header(path)["classes"] == ["s1", "s10", "s2"]

    def test_absent_is_none(self, tmp_path):
        assert load_checkpoint(self._save(tmp_path)).classes is None

    def test_older_midefend_files_keep_names_from_their_data_record(self, tmp_path):
        path = self._save(tmp_path, extra={"data": {"spec": "orl", "classes": ["s1", "s2", "s10"]}})
        assert load_checkpoint(path).classes == ["s1", "s2", "s10"]

    @pytest.mark.parametrize(
        "classes, message",
        [
            (["a", "b"], "classes names 2 classes but num_classes is 3"),
            (["a", "a", "b"], "classes must be unique, got 'a' more than once"),
            (["a", "", "b"], "classes must be a list of non-empty strings"),
            ("abc", "classes must be a list of non-empty strings"),
        ],
    )
    def test_bad_names(self, tmp_path, classes, message):
        with pytest.raises(ConfigError, match=message):
            self._save(tmp_path, classes=classes)

    def test_bad_names_in_a_file(self, tmp_path):
        from midefend.io.schema import METADATA_KEY

        path = self._save(tmp_path, classes=["a", "b", "c"])
        from safetensors.torch import load_file, save_file
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            meta = json.loads(handle.metadata()[METADATA_KEY])
        meta["classes"] = ["a", "b"]
        save_file(load_file(str(path)), str(path), metadata={METADATA_KEY: json.dumps(meta)})
        with pytest.raises(CheckpointError, match=r"field classes names 2 classes but num_classes is 3"):
            load_checkpoint(path)


class TestReorderedEvaluator:
    def test_logits_are_permuted_features_are_not(self):
        torch.manual_seed(0)
        model = build_model(ARCH, num_classes=3, in_chans=1, **KW).eval()
        plain = Classifier(model, input_size=(1, 8, 8), mean=(0.5,), std=(0.5,))
        moved = ReorderedClassifier(model, order=[2, 0, 1], input_size=(1, 8, 8), mean=(0.5,), std=(0.5,))
        x = torch.rand(4, 1, 8, 8)
        assert torch.equal(moved.predict(x), plain.predict(x)[:, [2, 0, 1]])
        assert torch.equal(moved.predict(x, features=True), plain.predict(x, features=True))


# ---------------------------------------------------------------------------------------- ORL


class PixelLinear(torch.nn.Module):
    """A linear classifier on the pixels: nearest class mean as ``2 mu_c . x - |mu_c|^2`` (fitted in closed form)."""

    def __init__(self, num_classes: int, in_chans: int = 1, size: int = SIZE) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(in_chans * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


PIXEL_ARCH = "midefend/test_pixel_linear"
if PIXEL_ARCH not in list_architectures():
    register_architecture("test_pixel_linear")(PixelLinear)


@pytest.fixture(scope="module")
def orl_torchvision(orl_dir, tmp_path_factory):
    """A model fitted on ORL with torchvision ImageFolder's labels; saved without and with names."""
    from torchvision.datasets import ImageFolder

    from midefend.data.orl import load_orl

    tv = ImageFolder(str(orl_dir))
    train, test = load_orl(orl_dir, size=SIZE)  # midefend's split, natural order s1, s2, ...
    to_tv = torch.tensor([tv.class_to_idx[name] for name in train.classes])
    x, y = ((train.images - 0.5) / 0.5).flatten(1), to_tv[train.labels]  # torchvision's labels
    means = torch.stack([x[y == c].mean(0) for c in range(40)])
    model = PixelLinear(40).eval()
    with torch.no_grad():
        model.fc.weight.copy_(2 * means)
        model.fc.bias.copy_(-(means**2).sum(1))
    root = tmp_path_factory.mktemp("orl_order")
    common = {"arch": PIXEL_ARCH, "arch_kwargs": {"in_chans": 1}, "num_classes": 40, "input_size": (1, SIZE, SIZE), "mean": (0.5,), "std": (0.5,)}
    paths = {
        "unnamed": save_checkpoint(model, root / "unnamed.safetensors", **common),
        "named": save_checkpoint(model, root / "named.safetensors", classes=tv.classes, **common),
    }
    # The same classifier with its output rows put into natural order, names recorded: a second model that
    # agrees with the first on every image but numbers the classes the other way.
    natural = PixelLinear(40).eval()
    with torch.no_grad():
        natural.fc.weight.copy_(model.fc.weight[to_tv])
        natural.fc.bias.copy_(model.fc.bias[to_tv])
    paths["natural"] = save_checkpoint(natural, root / "natural.safetensors", classes=train.classes, **common)
    with torch.no_grad():
        held_out = (model((test.images - 0.5) / 0.5).argmax(1) == to_tv[test.labels]).float().mean().item()
    return {"paths": paths, "held_out": held_out, "tv_classes": tv.classes, "root": root}


class TestORLFolderOrder:
    def test_the_model_learned_something(self, orl_torchvision):
        assert orl_torchvision["held_out"] > 0.8

    @pytest.mark.parametrize("which", ["unnamed", "named", "natural"])
    def test_natural_accuracy_is_the_models(self, orl_torchvision, orl_dir, which):
        ckpt = load_checkpoint(orl_torchvision["paths"][which])
        train, test = load_private_data(ckpt, orl_dir)
        assert train.classes == (ckpt.classes or orl_torchvision["tv_classes"])
        accuracy = natural_accuracy(Classifier.from_checkpoint(ckpt), test)
        assert accuracy == pytest.approx(orl_torchvision["held_out"], abs=1e-6)
        assert train.info["class_order"] == (ORDER_ASSUMED if which == "unnamed" else ORDER_RECORDED)

    def test_positional_labels_would_have_been_wrong(self, orl_torchvision, orl_dir):
        # the bug being fixed: midefend's natural-order labels against a torchvision-order model
        from midefend.data.orl import load_orl

        _, test = load_orl(orl_dir, size=SIZE)
        ckpt = load_checkpoint(orl_torchvision["paths"]["unnamed"])
        assert natural_accuracy(Classifier.from_checkpoint(ckpt), test) < 0.1

    def test_other_classes_are_refused(self, orl_torchvision, orl_dir, tmp_path):
        ckpt = load_checkpoint(orl_torchvision["paths"]["named"])
        ckpt.classes = [f"person{i}" for i in range(40)]
        with pytest.raises(DataError, match=r"^data '.*orl.*' has classes that differ from the model's \(missing from the data: person0, person1, person2 and 37 more; not classes of the model: s1, s2, s3 and 37 more\)$"):
            load_private_data(ckpt, orl_dir)

    def test_evaluator_in_another_order_is_reordered(self, orl_torchvision):
        target = load_checkpoint(orl_torchvision["paths"]["unnamed"])
        evaluator = load_checkpoint(orl_torchvision["paths"]["natural"])
        names, _ = model_classes(target, orl_torchvision["tv_classes"])
        clf, note = evaluator_in_target_order(evaluator, names, names)
        x = torch.rand(6, 1, SIZE, SIZE)
        assert note == ORDER_RECORDED
        torch.testing.assert_close(clf.predict(x), Classifier.from_checkpoint(target).predict(x), rtol=0, atol=1e-5)

    def test_verify_report(self, orl_torchvision, orl_dir, tmp_path):
        paths = orl_torchvision["paths"]
        report = verify(
            paths["unnamed"], eval_model=paths["natural"], data=orl_dir, attack="miface", classes="0-2",
            out_dir=tmp_path / "run", attack_options={"per_class": 2, "steps": 3},
        )  # fmt: skip
        m = report["metrics"]
        assert m["accuracy"] == pytest.approx(orl_torchvision["held_out"], abs=1e-6)
        # the evaluator is the target with its classes renumbered: it must judge exactly as the target does
        assert m["attack_acc_top1"] == pytest.approx(m["target_acc_top1"])
        assert report["data"]["class_order"] == ORDER_ASSUMED and report["data"]["eval_class_order"] == ORDER_RECORDED
        markdown = (tmp_path / "run" / "report.md").read_text()
        assert "assumed torchvision ImageFolder order" in markdown
