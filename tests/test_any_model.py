"""Any model: user architectures through the plug-in path, Hugging Face transformers classifiers, in-memory verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from attack_fixtures import tiny_world  # noqa: F401  (session fixture)
from midefend.architectures import build_model, import_architecture_modules, register_architecture
from midefend.cli import app
from midefend.errors import ConfigError
from midefend.io.checkpoints import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--attack", "miface", "--steps", "2", "--per-class", "2", "--classes", "0-1", "--quiet"]


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


class TestRegistry:
    def test_namespaces(self):
        with pytest.raises(ConfigError, match=r"namespace 'timm' belongs to that library; register 'timm/x' under your own"):
            register_architecture("timm/x")
        with pytest.raises(ConfigError, match=r"architecture name must be 'name' or 'namespace/name', got 'a/b/c'"):
            register_architecture("a/b/c")

    def test_call_form_and_duplicates(self):
        def builder(*, num_classes, in_chans=3):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_chans * 4, num_classes))

        register_architecture("test_any_model/call_form", builder)
        assert build_model("test_any_model/call_form", num_classes=2, in_chans=1)[1].out_features == 2
        with pytest.raises(ConfigError, match=r"^architecture 'test_any_model/call_form' is already registered$"):
            register_architecture("test_any_model/call_form", builder)

    def test_unknown_names_the_plug_in_paths(self):
        with pytest.raises(ConfigError, match=r"unknown architecture 'nobody/net' \(registered: .*\); import the module that registers it \(midefend --arch-module MODULE"):
            build_model("nobody/net", num_classes=2)

    def test_bad_module(self):
        with pytest.raises(ConfigError, match=r"^cannot import architecture module 'no_such_module_xyz': ModuleNotFoundError"):
            import_architecture_modules("no_such_module_xyz")


PLUGIN = textwrap.dedent(
    """
    import torch.nn as nn
    from midefend.architectures import register_architecture

    class TinyNet(nn.Module):
        def __init__(self, num_classes, in_chans=1, width=4):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.fc(self.body(x))

    @register_architecture("userpkg/tinynet")
    def tinynet(*, num_classes, in_chans=1, **kwargs):
        return TinyNet(num_classes, in_chans, **kwargs)
    """
)


class TestPlugin:
    def test_a_new_cli_process_loads_a_user_architecture(self, tmp_path):
        (tmp_path / "userpkg_models.py").write_text(PLUGIN)
        sys.path.insert(0, str(tmp_path))
        try:
            import_architecture_modules("userpkg_models")
        finally:
            sys.path.remove(str(tmp_path))
        model = build_model("userpkg/tinynet", num_classes=3, in_chans=1, width=6)
        ckpt = save_checkpoint(model, tmp_path / "u.safetensors", arch="userpkg/tinynet", arch_kwargs={"in_chans": 1, "width": 6}, num_classes=3, input_size=(1, 8, 8), mean=(0.5,), std=(0.5,))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        env.pop("MIDEFEND_ARCH_MODULES", None)
        cli = [sys.executable, "-m", "midefend"]
        without = subprocess.run([*cli, "inspect", str(ckpt), "--check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert without.returncode == 1 and "unknown architecture 'userpkg/tinynet'" in without.stderr
        with_module = subprocess.run([*cli, "--arch-module", "userpkg_models", "inspect", str(ckpt), "--check", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert with_module.returncode == 0, with_module.stderr
        info = json.loads(with_module.stdout)
        assert info["arch"] == "userpkg/tinynet" and info["check"] == "ok"


# ------------------------------------------------------------------------------- transformers

transformers = pytest.importorskip("transformers", reason="the [hf] extra (transformers) is not installed")


def _vit():
    cfg = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=5)
    return transformers.ViTForImageClassification(cfg)


def _convnext():
    cfg = transformers.ConvNextConfig(num_channels=1, patch_size=2, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=5)
    return transformers.ConvNextForImageClassification(cfg)


def _resnet():
    cfg = transformers.ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5)
    return transformers.ResNetForImageClassification(cfg)


class TestTransformers:
    @pytest.mark.parametrize("make, head", [(_vit, "classifier"), (_convnext, "classifier"), (_resnet, "classifier.1")])
    def test_harden_finds_the_head(self, make, head):
        from midefend.defenses.head_locations import find_head_paths

        assert find_head_paths(make()) == [head]

    @pytest.mark.parametrize("make", [_vit, _convnext], ids=["vit", "convnext"])
    def test_harden_save_cli_verify(self, make, tiny_world, tmp_path):
        from midefend.defenses.surgery import harden
        from midefend.hf import transformers_arch

        torch.manual_seed(0)
        model = make()
        x = (tiny_world.train.images[:64] - 0.5) / 0.5
        report = harden(model, rank=3, calibration=x)
        assert report.head_paths == ["classifier"]
        model.eval()
        with torch.no_grad():
            expected = model(pixel_values=x[:8]).logits
        arch, kwargs = transformers_arch(model)
        path = save_checkpoint(model, tmp_path / "hf.safetensors", arch=arch, arch_kwargs=kwargs, num_classes=5, classes=["0", "1", "2", "3", "4"], input_size=(1, 16, 16), mean=(0.5,), std=(0.5,), defense={"name": "calor", "rank": 3})
        # a fresh load returns the same logits as a tensor
        ckpt = load_checkpoint(path)
        with torch.no_grad():
            torch.testing.assert_close(ckpt.model(x[:8]), expected)
        assert _run("inspect", path, "--check").exit_code == 0
        out = tmp_path / "run"
        result = _run("verify", path, "--eval-model", tiny_world.paths["eval"], "--data", tiny_world.folder, "--out", out, *FAST)
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        assert report["target"]["arch"] == arch and report["metrics"]["accuracy"] is not None


class TestInMemoryVerify:
    def test_model_object_with_its_input_contract(self, tiny_world, tmp_path):
        from midefend.evaluation.evaluate import natural_accuracy
        from midefend.evaluation.verify import verify

        model = tiny_world.target.model
        report = verify(
            model, eval_model=tiny_world.paths["eval"], data=tiny_world.folder, attack="miface", classes="0-1",
            out_dir=tmp_path / "run", input_size=(1, 16, 16), mean=(0.5,), std=(0.5,),
            attack_options={"per_class": 2, "steps": 2},
        )  # fmt: skip
        assert report["metrics"]["accuracy"] == pytest.approx(natural_accuracy(tiny_world.target, tiny_world.test), abs=1e-9)
        assert report["target"]["arch"] == "in-memory/ResNetSmall"

    def test_model_object_needs_the_contract(self, tiny_world, tmp_path):
        from midefend.evaluation.verify import verify

        with pytest.raises(ConfigError, match=r"^verify\(\) of a model object needs input_size=\(C, H, W\), mean= and std= "):
            verify(tiny_world.target.model, eval_model=tiny_world.paths["eval"], data=tiny_world.folder, out_dir=tmp_path)
