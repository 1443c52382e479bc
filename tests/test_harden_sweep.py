"""harden() over many timm and torchvision architectures (no weights, small inputs).

For each model: logits shape unchanged, the old head's parameters gone from the
model, the new heads trainable and reported by check_hardened, one forward and
backward pass in train mode with finite gradients on every new head that ran.
Models whose head is not linear must be refused with the typed error.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

from midefend import HeadNotFoundError, LowRankTanhHead
from midefend.defenses.head_locations import find_head_paths
from midefend.defenses.surgery import check_hardened, harden, hardened_heads

pytestmark = pytest.mark.filterwarnings("ignore:harden\\(init='svd'\\) without calibration data")

NUM_CLASSES = 7
RANK = 4

# name -> (constructor kwargs, input side). Sizes are the smallest each model accepts cheaply.
TIMM_MODELS = {
    "resnet10t": ({}, 32),
    "resnext26ts": ({}, 32),
    "regnetx_002": ({}, 32),
    "densenet121": ({}, 32),
    "efficientnet_b0": ({}, 32),
    "efficientnet_lite0": ({}, 32),
    "mobilenetv2_050": ({}, 32),
    "mobilenetv3_small_050": ({}, 32),
    "convnext_atto": ({}, 32),
    "vit_tiny_patch16_224": ({"img_size": 32}, 32),
    "deit_tiny_distilled_patch16_224": ({"img_size": 32}, 32),
    "swin_tiny_patch4_window7_224": ({"img_size": 32, "window_size": 2}, 32),
    "maxvit_nano_rw_256": ({"img_size": 64}, 64),
    "inception_v3": ({}, 75),
    "ghostnet_050": ({}, 32),
    "mixnet_s": ({}, 32),
    "rexnet_100": ({}, 32),
    "lcnet_050": ({}, 32),
    "levit_128s": ({"img_size": 64}, 64),
    "mobilevit_xxs": ({}, 64),
    "edgenext_xx_small": ({}, 64),
    "poolformer_s12": ({}, 32),
    "resmlp_12_224": ({"img_size": 32}, 32),
    "hrnet_w18_small": ({}, 64),
    "cspresnet50": ({}, 32),
    "repvgg_a0": ({}, 32),
    "nf_resnet26": ({}, 32),
    "ese_vovnet19b_slim": ({}, 32),
    "pit_ti_distilled_224": ({"img_size": 64}, 64),
    "crossvit_tiny_240": ({"img_size": 240}, 240),
    "fastvit_t8": ({}, 64),
    "mobileone_s0": ({}, 32),
    "hgnetv2_b0": ({}, 32),
    "starnet_s1": ({}, 32),
    "efficientvit_b0": ({}, 32),
    "mixer_s32_224": ({"img_size": 64}, 64),
    "xcit_nano_12_p16_224": ({"img_size": 32}, 32),
    "coat_lite_tiny": ({"img_size": 32}, 32),
    "gernet_s": ({}, 32),
    "tinynet_e": ({}, 32),
}

TORCHVISION_MODELS = {
    "resnet18": ({}, 32),
    "resnext50_32x4d": ({}, 32),
    "wide_resnet50_2": ({}, 32),
    "regnet_x_400mf": ({}, 32),
    "shufflenet_v2_x0_5": ({}, 32),
    "densenet121": ({}, 32),
    "vgg11": ({}, 32),
    "alexnet": ({}, 63),
    "efficientnet_b0": ({}, 32),
    "mobilenet_v2": ({}, 32),
    "mnasnet0_5": ({}, 32),
    "mobilenet_v3_small": ({}, 32),
    "convnext_tiny": ({}, 32),
    "vit_b_16": ({"image_size": 32}, 32),
    "swin_t": ({}, 32),
    "maxvit_t": ({}, 224),
    # The auxiliary heads run only in train mode, and Inception's needs a 299x299 input.
    "inception_v3": ({"init_weights": False}, 299),
    "googlenet": ({"init_weights": False}, 32),
}


def _tensors(out) -> list[torch.Tensor]:
    """Every tensor in a model output (a tensor, a tuple, or torchvision's aux-logit namedtuples)."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out if item is not None for t in _tensors(item)]


def _check_harden(model: nn.Module, size: int) -> None:
    x = torch.randn(2, 3, size, size)
    model.eval()
    with torch.no_grad():
        before = model(x)
    old_params = {id(p) for p in model.parameters()}
    old_head_params = {id(p) for path in find_head_paths(model) for p in model.get_submodule(path).parameters()}
    report = harden(model, rank=RANK)
    assert report.head_paths == find_head_paths(model)

    heads = {path: model.get_submodule(path) for path in report.head_paths}
    assert all(isinstance(h, LowRankTanhHead) for h in heads.values())
    assert sorted(check_hardened(model)) == sorted(report.head_paths)
    new_params = {id(p) for h in heads.values() for p in h.parameters()}
    all_params = {id(p) for p in model.parameters()}
    # Exactly the old heads' parameters are gone; the rest are the same tensors as before.
    assert new_params <= all_params and new_params.isdisjoint(old_params)
    assert old_params - all_params == old_head_params and all_params - new_params == old_params - old_head_params
    assert all(p.requires_grad for h in heads.values() for p in h.parameters())
    state = model.state_dict()
    for path in report.head_paths:
        assert f"{path}.down.weight" in state and f"{path}.weight" not in state
    for replacement in report.heads:
        assert (replacement.num_classes, replacement.rank) == (NUM_CLASSES, RANK)

    with torch.no_grad():
        after = model(x)
    assert after.shape == before.shape == (2, NUM_CLASSES)

    model.train()
    outputs = _tensors(model(x))
    assert all(t.shape == (2, NUM_CLASSES) for t in outputs)
    sum(t.sum() for t in outputs).backward()
    ran = [h for h in heads.values() if h.up.weight.grad is not None]
    assert ran, "no hardened head received a gradient"
    assert all(torch.isfinite(p.grad).all() for h in ran for p in h.parameters())


@pytest.mark.parametrize("name", sorted(TIMM_MODELS))
def test_harden_timm(name):
    kwargs, size = TIMM_MODELS[name]
    _check_harden(timm.create_model(name, num_classes=NUM_CLASSES, **kwargs), size)


@pytest.mark.parametrize("name", sorted(TORCHVISION_MODELS))
def test_harden_torchvision(name):
    kwargs, size = TORCHVISION_MODELS[name]
    _check_harden(torchvision.models.get_model(name, weights=None, num_classes=NUM_CLASSES, **kwargs), size)


@pytest.mark.parametrize(
    "build, match",
    [
        pytest.param(lambda: torchvision.models.squeezenet1_0(num_classes=7), r"SqueezeNet.classifier.1 is of type Conv2d", id="tv-squeezenet1_0"),
        pytest.param(lambda: torchvision.models.squeezenet1_1(num_classes=7), r"SqueezeNet.classifier.1 is of type Conv2d", id="tv-squeezenet1_1"),
        pytest.param(lambda: timm.create_model("dla34", num_classes=7), r"DLA.fc is of type Conv2d", id="timm-dla34"),
        pytest.param(lambda: timm.create_model("dpn48b", num_classes=7), r"DPN.classifier is of type Conv2d", id="timm-dpn48b"),
        pytest.param(lambda: timm.create_model("convnext_atto", num_classes=0), r"ConvNeXt.head.fc is of type Identity", id="timm-no-head"),
    ],
)
def test_refused_models(build, match):
    model = build()
    with pytest.raises(HeadNotFoundError, match=match):
        harden(model, rank=RANK)
    assert hardened_heads(model) == {}


def _compile_smoke(backend: str) -> None:
    model = timm.create_model("resnet10t", num_classes=NUM_CLASSES)
    harden(model, rank=RANK)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    compiled = torch.compile(model, backend=backend, fullgraph=True)  # fullgraph: no graph break in the head
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-5)
    model.train()
    compiled(x).sum().backward()
    assert model.fc.down.weight.grad is not None
    # check_hardened and harden see through the compiled wrapper.
    assert list(check_hardened(compiled)) == ["fc"]


def test_torch_compile_smoke():
    # aot_eager traces the hardened model with dynamo and AOT autograd (what breaks when a
    # module is not compile-friendly) without the minute-long C++ build of inductor on a CPU.
    _compile_smoke("aot_eager")


@pytest.mark.slow
def test_torch_compile_inductor():
    _compile_smoke("inductor")
