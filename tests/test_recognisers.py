"""The face-recogniser registry (midefend.evaluation.recognisers): no recogniser needs to be installed."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from midefend.errors import ConfigError
from midefend.evaluation import available_recognisers, load_recogniser, register_recogniser
from midefend.evaluation import recognisers
from midefend.evaluation.identity import NearestIdentityEvaluator


class _Toy(nn.Module):
    """A parameterless recogniser: the mean of each image as a 1-d embedding."""

    name = "toy"
    description = "toy: mean brightness, 1-d"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1).mean(dim=1, keepdim=True)


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry for the test to change (the built-ins stay registered)."""
    monkeypatch.setattr(recognisers, "_REGISTRY", dict(recognisers._REGISTRY))
    return recognisers._REGISTRY


def test_builtins_registered_in_order():
    assert recognisers.registered_recognisers()[:2] == ["facenet", "dlib"]
    assert available_recognisers() == [n for n in ("facenet", "dlib") if recognisers.recogniser_spec(n).is_available()]
    assert "VGGFace2" in recognisers.recogniser_spec("facenet").description
    assert "128-d" in recognisers.recogniser_spec("dlib").description


def test_facenet_module_names_itself():
    from midefend.facenet import FaceNet

    assert FaceNet.name == "facenet"
    assert FaceNet.description == "FaceNet Inception-ResNet-v1 (CASIA-WebFace, 2018 release, 512-d) — not the VGGFace2 model PPA and MIBench use"


def test_a_third_recogniser_loads_by_name(registry):
    register_recogniser("toy", lambda device="cpu": _Toy().to(device), lambda: True, _Toy.description)
    assert available_recognisers()[-1] == "toy"
    judge = load_recogniser("toy")
    assert (judge.name, judge.description) == ("toy", "toy: mean brightness, 1-d")
    assert judge.embed(torch.ones(2, 1, 4, 4)).tolist() == [[1.0], [1.0]]


def test_uninstalled_recogniser_is_not_available(registry):
    register_recogniser("toy", lambda device="cpu": _Toy(), lambda: False, _Toy.description)
    assert "toy" in recognisers.registered_recognisers() and "toy" not in available_recognisers()


def test_duplicate_name_refused(registry):
    loader, installed = (lambda device="cpu": _Toy()), (lambda: True)
    register_recogniser("toy", loader, installed, _Toy.description)
    register_recogniser("toy", loader, installed, _Toy.description)  # the same entry again: a no-op
    with pytest.raises(ConfigError, match=r"^a face recogniser named 'toy' is already registered \(toy: mean brightness, 1-d\)$"):
        register_recogniser("toy", lambda device="cpu": _Toy(), installed, "another toy")
    with pytest.raises(ConfigError, match="'facenet' is already registered"):
        register_recogniser("facenet", loader, installed, "not FaceNet")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"^unknown face recogniser 'arcface'; known: facenet, dlib(, .+)?$"):
        load_recogniser("arcface")


@pytest.mark.parametrize(
    "name, loader, description, match",
    [(" toy", lambda device="cpu": _Toy(), "d", "non-empty name"),
     ("toy", "not callable", "d", "must be callables"),
     ("toy", lambda device="cpu": _Toy(), " ", "needs a description")],
)  # fmt: skip
def test_bad_registration(registry, name, loader, description, match):
    with pytest.raises(ConfigError, match=match):
        register_recogniser(name, loader, lambda: True, description)


def test_loader_must_return_the_interface(registry):
    register_recogniser("bare", lambda device="cpu": nn.Identity(), lambda: True, "no embed")
    with pytest.raises(ConfigError, match=r"^face recogniser 'bare': its loader returned Identity without name, description, embed$"):
        load_recogniser("bare")
    register_recogniser("misnamed", lambda device="cpu": _Toy(), lambda: True, "named toy")
    with pytest.raises(ConfigError, match="returned a module named 'toy'"):
        load_recogniser("misnamed")


def test_nearest_identity_with_a_parameterless_embedder():
    gallery = torch.stack([torch.full((1, 4, 4), v) for v in (0.1, 0.2, 0.8, 0.9)])
    evaluator = NearestIdentityEvaluator(_Toy(), gallery, torch.tensor([0, 0, 1, 1]), name="toy")
    assert evaluator.device == torch.device("cpu")
    scores = evaluator.predict(torch.stack([torch.full((1, 4, 4), 0.85), torch.full((1, 4, 4), 0.15)]))
    assert scores.argmax(dim=1).tolist() == [1, 0]
