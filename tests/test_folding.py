"""BatchNorm folding for the attacks' frozen target (``Classifier.for_inference``, ``models.folding``).

The fold must compute the same logits, leave the caller's model untouched, refuse pairs it cannot
fold exactly (a convolution read twice, a shared convolution), never trace a module whose Python code
has side effects, fall back on untraceable models, and run the model's own code so that BPDA still
patches CALoR's heads in the folded copy (a traced graph that inlined the head would leave a BPDA
attack silently identical to the plain one).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from midefend.architectures import build_model
from midefend.attacks import run_attack
from midefend.attacks.adaptive import straight_through_heads
from midefend.evaluation import Classifier
from midefend.models import folding
from midefend.models.folding import fold_batchnorm
from reliability_fixtures import one_thread  # noqa: F401  (autouse fixture)
from test_adaptive import SATURATED_KW, saturated_target, target_accuracy


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine weights, so that a missed or wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def test_resnet_small_folds_every_batchnorm_with_equal_logits_and_the_original_untouched():
    model = randomise_batchnorm(build_model("midefend/resnet_small", num_classes=5, in_chans=1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert count(model, nn.BatchNorm2d) > 0 and count(folded, nn.BatchNorm2d) == 0
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert fold_batchnorm(folded) is folded  # nothing left to fold
    assert type(folded) is type(model)  # the model's own class and code, so its other methods work too
    torch.testing.assert_close(folded.forward_features(x), model.forward_features(x), atol=1e-4, rtol=1e-4)


def test_a_module_with_python_side_effects_is_not_traced():
    class Counting(nn.Module):  # defined outside torch/timm/midefend: its forward may do anything
        def __init__(self, inner):
            super().__init__()
            self.inner, self.images = inner, 0

        def forward(self, x):
            self.images += x.shape[0]  # a trace would store a placeholder here
            return self.inner(x)

    model = Counting(randomise_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))).eval()
    assert fold_batchnorm(model) is model and model.images == 0
    assert fold_batchnorm(model.inner) is not model.inner  # the same layers alone do fold


def test_a_convolution_read_twice_or_shared_is_not_folded():
    class ReadTwice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # folding would change the second reader of y

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            return self.bn(self.conv(x)) + self.conv(x)  # one module, two calls

    for model in (randomise_batchnorm(ReadTwice()), randomise_batchnorm(Shared())):
        assert fold_batchnorm(model) is model


def test_pairs_the_swap_could_get_wrong_are_left_alone():
    class Aliased(nn.Module):  # one conv under two names; forward uses the second
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)
            self.alias = self.conv

        def forward(self, x):
            return self.bn(self.conv(x)) + 0 * self.alias(x)

    class ReadsWeight(nn.Module):  # the conv's weight is also used directly
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            return self.bn(self.conv(x)) + torch.nn.functional.conv2d(x, self.conv.weight)

    grouped = nn.Sequential(nn.ConvTranspose2d(4, 4, 3, groups=2), nn.BatchNorm2d(4))  # torch's fusion gets its shape wrong
    hooked = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))
    hooked[1].register_forward_hook(lambda m, i, o: None)  # would never run in the folded copy
    half_training = randomise_batchnorm(nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)))
    half_training[1].train()
    for model in (Aliased(), ReadsWeight(), grouped, hooked):
        model = randomise_batchnorm(model)
        assert fold_batchnorm(model) is model, type(model).__name__
    assert fold_batchnorm(half_training) is half_training
    plain_grouped = randomise_batchnorm(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.BatchNorm2d(4)))
    x = torch.rand(2, 4, 5, 5)
    torch.testing.assert_close(fold_batchnorm(plain_grouped)(x), plain_grouped(x), atol=1e-5, rtol=1e-5)  # grouped Conv2d is fine


def test_training_mode_untraceable_and_batchnorm_free_models_come_back_unchanged():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)

        def forward(self, x):
            return self.bn(self.conv(x)) if float(x.mean()) > 0 else x  # data-dependent: fx cannot trace it

    training = build_model("midefend/resnet_small", num_classes=3, in_chans=1).train()
    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
    for model in (training, Branchy().eval(), plain):
        assert fold_batchnorm(model) is model


def saturated_target_with_batchnorm() -> Classifier:
    """``saturated_target`` behind an identity convolution + BatchNorm: something to fold before the tanh head."""
    base = saturated_target()
    conv, bn = nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    return Classifier(nn.Sequential(conv, bn, *base.model), input_size=base.input_size, mean=(0.5,), std=(0.5,))


def test_for_inference_keeps_calor_heads_whole_so_bpda_still_patches_them():
    target = saturated_target_with_batchnorm()
    fast = target.for_inference()
    assert fast is not target and count(fast.model, nn.BatchNorm2d) == 0
    assert count(target.model, nn.BatchNorm2d) == 1  # the caller's model keeps its layer
    with straight_through_heads(fast.model) as changed:
        assert changed == 1  # a trace through the head would find none here


def test_bpda_attack_on_a_folded_target_recovers_every_class_and_the_plain_one_stalls():
    target = saturated_target_with_batchnorm()
    assert target_accuracy(target, run_attack("miface", target, **SATURATED_KW)) == 0.25
    assert target_accuracy(target, run_attack("miface", target, **SATURATED_KW, bpda=True)) == 1.0


def test_for_inference_falls_back_when_the_folded_copy_disagrees(monkeypatch):
    target = Classifier(randomise_batchnorm(build_model("midefend/resnet_small", num_classes=3, in_chans=1)), input_size=(1, 16, 16), mean=(0.5,), std=(0.5,))
    assert target.for_inference() is not target  # it folds when the copy is right

    def wrong_fold(model, **kwargs):
        broken = fold_batchnorm(model, **kwargs)
        with torch.no_grad():
            broken.fc.bias.add_(1.0)  # what a trace that missed a step would do: other logits
        return broken

    monkeypatch.setattr(folding, "fold_batchnorm", wrong_fold)
    assert target.for_inference() is target


def test_a_classifier_subclass_keeps_its_own_code():
    class Shifted(Classifier):
        def forward(self, x):
            return super().forward(x) + 100.0

    model = randomise_batchnorm(build_model("midefend/resnet_small", num_classes=3, in_chans=1))
    target = Shifted(model, input_size=(1, 16, 16), mean=(0.5,), std=(0.5,))
    fast = target.for_inference()
    assert type(fast) is Shifted and fast.model is not model and count(fast.model, nn.BatchNorm2d) == 0
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(fast(x), target(x), atol=1e-3, rtol=1e-4)
    assert fast.model is not target.model and target.model is model  # the caller's wrapper still holds its model


def test_a_prior_whose_fold_disagrees_is_used_as_it_is(monkeypatch):
    from midefend.attacks.priors import DCGANGenerator, GenerativePrior

    prior = GenerativePrior(randomise_batchnorm(DCGANGenerator(latent_dim=8, channels=3, width=4, image_size=16)), name="toy")
    assert prior.for_inference() is not prior

    def wrong_fold(model, **kwargs):
        broken = fold_batchnorm(model, **kwargs)
        with torch.no_grad():
            next(broken.parameters()).mul_(2.0)  # the first (fused, so not shared) weight: other images
        return broken

    monkeypatch.setattr(folding, "fold_batchnorm", wrong_fold)
    assert prior.for_inference() is prior
