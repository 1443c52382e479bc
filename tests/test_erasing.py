"""MIDRE random erasing: box sampling, the batch op, the module, the v2 transform, argument errors.

One class per feature. References: a scalar Python re-implementation of the box map, and
torchvision's per-sample ``F.erase`` given the same boxes.
"""

from __future__ import annotations

import doctest
import math

import PIL.Image
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from conftest import devices
from midefend import BatchRandomErasing, ConfigError, RandomErasingTransform, random_erase_batch
from midefend.defenses.erasing import EraseBoxes
from midefend.defenses.erasing import functional, params, transforms
from midefend.defenses.erasing.params import (
    ATTEMPTS,
    FillSpec,
    IMAGENET_MEAN,
    UNIFORMS_PER_BOX,
    boxes_from_uniforms,
    fill_spec,
    fixed_uniforms,
)

FAST = settings(max_examples=20, deadline=None)
SLOW = settings(max_examples=300, deadline=None)
MEAN = torch.tensor(IMAGENET_MEAN)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_erase(x: torch.Tensor, boxes: EraseBoxes, values: torch.Tensor) -> torch.Tensor:
    """torchvision's per-sample ``F.erase`` driven by the same boxes (the loop we avoid)."""
    out = x.clone()
    top, left, h, w = (f.reshape(len(x), -1) for f in boxes[:4])
    for b in range(len(x)):
        if not bool(boxes.applied[b]):
            continue
        for k in range(top.shape[1]):
            v = values.to(x.dtype).view(-1, 1, 1).expand(x.shape[1], int(h[b, k]), int(w[b, k]))
            out[b] = F.erase(out[b], int(top[b, k]), int(left[b, k]), int(h[b, k]), int(w[b, k]), v)
    return out


def box_mask(shape, boxes: EraseBoxes) -> torch.Tensor:
    """``(B, 1, H, W)`` bool: inside an applied box."""
    batch, _, height, width = shape
    rows = torch.arange(height).view(1, 1, -1, 1)
    cols = torch.arange(width).view(1, 1, 1, -1)
    top, left, h, w = (f.reshape(batch, -1, 1, 1).long() for f in boxes[:4])
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    return inside.any(1, keepdim=True) & boxes.applied.view(-1, 1, 1, 1)


def scalar_box(u: list[float], height: int, width: int, scale, ratio) -> tuple[int, int, int, int]:
    """Plain-Python reference of the box map (torchvision's loop, with the documented fallback)."""
    area = height * width
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    chosen = None
    for a in range(ATTEMPTS):
        target = area * (scale[0] + (scale[1] - scale[0]) * u[a])
        aspect = math.exp(lo + (hi - lo) * u[ATTEMPTS + a])
        h = math.floor(math.sqrt(target * aspect) + 0.5)
        w = math.floor(math.sqrt(target / aspect) + 0.5)
        if chosen is None and 1 <= h <= height and 1 <= w <= width:
            chosen = (h, w)
        if a == 0:
            first = (min(max(h, 1), height), min(max(w, 1), width))
    h, w = chosen or first
    top = min(math.floor(u[-2] * (height - h + 1)), height - h)
    left = min(math.floor(u[-1] * (width - w + 1)), width - w)
    return top, left, h, w


class TestBoxSampling:
    """The per-sample boxes: geometry, randomness, reproducibility."""

    def test_matches_scalar_reference(self):
        u = torch.rand(200, UNIFORMS_PER_BOX, generator=gen(3), dtype=torch.float64)
        for scale, ratio, hw in [((0.1, 0.4), (1.0, 1.0), (64, 64)), ((0.02, 1.0), (0.3, 3.3), (37, 91))]:
            got = torch.stack(boxes_from_uniforms(u, *hw, scale, ratio), 1).tolist()
            want = [list(scalar_box(row, *hw, scale, ratio)) for row in u.tolist()]
            assert got == want

    @settings(max_examples=300, deadline=None)
    @given(
        seed=st.integers(0, 2**31), height=st.integers(1, 400), width=st.integers(1, 400),
        scale=st.tuples(st.floats(1e-4, 1.0), st.floats(1e-4, 1.0)).map(sorted), aspect=st.sampled_from([1.0, 0.5, 1.7]),
    )  # fmt: skip
    def test_one_image_python_path_is_bit_equal_to_the_batch_map(self, seed, height, width, scale, aspect):
        """A DataLoader's single image takes a Python-float box map: it must give the batch map's box."""
        scale, ratio = tuple(scale), (aspect, aspect)
        one = params.sample_boxes(1, height, width, scale=scale, ratio=ratio, p=0.5, generator=gen(seed))
        u = torch.rand(1, UNIFORMS_PER_BOX + 1, generator=gen(seed), dtype=torch.float64)
        want = [t.tolist() for t in boxes_from_uniforms(u[:, :UNIFORMS_PER_BOX], height, width, scale, ratio)]
        assert [t.tolist() for t in one[:4]] == want and one.applied.tolist() == [bool(u[0, -1] < 0.5)]

    def check_geometry(self, seed, batch, height, width, scale, ratio):
        x = torch.rand(batch, 2, height, width, generator=gen(seed + 1))
        y, boxes = random_erase_batch(
            x, scale=scale, ratio=ratio, value=5.0, generator=gen(seed), return_boxes=True
        )
        top, left, h, w = boxes[:4]
        assert bool(((top >= 0) & (left >= 0) & (top + h <= height) & (left + w <= width)).all())
        slack = 0.5 * (h + w) + 0.75  # rounding of both sides (h, w = round(sqrt(A r)), ...)
        area = (h * w).double()
        assert bool((area >= scale[0] * height * width - slack).all())
        assert bool((area <= scale[1] * height * width + slack).all())
        inside = box_mask(x.shape, boxes).expand_as(x)
        assert bool((y[inside] == 5.0).all())
        assert torch.equal(y[~inside], x[~inside])  # nothing outside the box changes

    @FAST
    @given(
        seed=st.integers(0, 2**31),
        batch=st.integers(1, 6),
        size=st.integers(4, 48),
        aspect=st.floats(0.8, 1.25),
        lo=st.floats(0.05, 0.4),
        span=st.floats(0.0, 0.3),
        rlo=st.floats(0.5, 1.0),
        rspan=st.floats(1.0, 1.5),
    )
    def test_geometry(self, seed, batch, size, aspect, lo, span, rlo, rspan):
        # sizes and ratios for which every attempt fits (s * r <= H / W), so no fallback clipping
        height, width = size, max(4, round(size * aspect))
        scale = (lo, min(lo + span, 0.4))
        ratio = (rlo, min(rlo * rspan, 1.5))
        if scale[1] * ratio[1] > height / width or scale[1] / ratio[0] > width / height:
            return
        self.check_geometry(seed, batch, height, width, scale, ratio)

    @pytest.mark.slow
    @SLOW
    @given(seed=st.integers(0, 2**31), size=st.integers(8, 96), lo=st.floats(0.02, 0.4))
    def test_geometry_many(self, seed, size, lo):
        self.check_geometry(seed, 8, size, size, (lo, 0.4), (0.6, 1.0 / 0.6))

    def test_fallback_clips_into_image(self):
        # ratio 4 on a square image never fits with a large area: clipped, still erased
        y, boxes = random_erase_batch(torch.zeros(16, 1, 10, 10), scale=(0.9, 1.0), ratio=(4.0, 4.0),
                                      value=1.0, generator=gen(), return_boxes=True)  # fmt: skip
        assert bool((boxes.height == 10).all()) and bool((boxes.width <= 10).all())
        assert bool((y.flatten(1).sum(1) > 0).all())

    def test_boxes_differ_across_samples(self):
        _, boxes = random_erase_batch(torch.rand(64, 3, 64, 64), generator=gen(), return_boxes=True)
        corners = set(zip(boxes.top.tolist(), boxes.left.tolist(), boxes.height.tolist()))
        assert len(corners) > 50

    def test_same_seed_same_output(self):
        x = torch.rand(16, 3, 32, 32)
        for kw in ({}, {"value": "random"}, {"mode": "patches"}, {"mode": "pixels"}, {"p": 0.5}):
            assert torch.equal(random_erase_batch(x, generator=gen(7), **kw), random_erase_batch(x, generator=gen(7), **kw))
        assert not torch.equal(random_erase_batch(x, generator=gen(7)), random_erase_batch(x, generator=gen(8)))

    def test_probability(self):
        _, boxes = random_erase_batch(torch.rand(4000, 1, 8, 8), p=0.3, generator=gen(), return_boxes=True)
        assert abs(boxes.applied.float().mean().item() - 0.3) < 0.03
        y = random_erase_batch(torch.rand(50, 1, 8, 8), p=0.0)
        _, none = random_erase_batch(y, p=0.0, return_boxes=True)
        assert not bool(none.applied.any())

    def test_default_is_square_midre_box(self):
        _, boxes = random_erase_batch(torch.rand(500, 3, 64, 64), generator=gen(), return_boxes=True)
        assert torch.equal(boxes.height, boxes.width)
        frac = (boxes.height * boxes.width).double() / (64 * 64)
        assert 0.09 < frac.min().item() < 0.12 and 0.37 < frac.max().item() < 0.42


class TestBatchOp:
    """random_erase_batch equals the per-sample reference, keeps dtype/layout, in place is in place."""

    @pytest.mark.parametrize("device", devices())
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("channels_last", [False, True])
    @pytest.mark.parametrize("backend", ["auto", "torch"])
    def test_equals_per_sample_reference(self, device, dtype, channels_last, backend):
        x = torch.rand(32, 3, 24, 20, generator=gen(1)).to(device=device, dtype=dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y, boxes = random_erase_batch(x, p=0.8, scale=(0.02, 0.6), ratio=(0.3, 3.3), return_boxes=True, backend=backend)
        ref = reference_erase(x.cpu(), EraseBoxes(*(f.cpu() for f in boxes)), MEAN)
        assert y.dtype == dtype and y.device == x.device
        assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        assert torch.equal(y.cpu(), ref)

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last", "offset_view"])
    def test_large_boxes_take_the_per_box_copy_and_equal_reference(self, layout, monkeypatch):
        # 3x80x80 with areas up to 90%: boxes from 400 to 17k elements, on both sides of
        # LARGE_BOX_ELEMENTS, so the index_copy_ groups and the per-box copies mix in one batch
        from midefend.defenses.erasing.functional import LARGE_BOX_ELEMENTS

        calls = []
        original = torch._foreach_copy_
        monkeypatch.setattr(torch, "_foreach_copy_", lambda *a: (calls.append(len(a[0])), original(*a)))
        base = torch.rand(26, 3, 80, 80, generator=gen(4))
        x = {"contiguous": base, "channels_last": base.contiguous(memory_format=torch.channels_last),
             "offset_view": base[2:]}[layout]  # fmt: skip
        y, boxes = random_erase_batch(
            x, scale=(0.02, 0.9), ratio=(0.5, 2.0), return_boxes=True, generator=gen(5), backend="torch"
        )
        sizes = 3 * boxes.height * boxes.width
        assert bool((sizes >= LARGE_BOX_ELEMENTS).any()) and bool((sizes < LARGE_BOX_ELEMENTS).any())
        assert torch.equal(y, reference_erase(x, boxes, MEAN))
        assert calls and calls[0] >= 1  # the per-box path ran (it is what this test is about)
        before = base.clone()
        random_erase_batch(x, boxes=boxes, inplace=True, backend="torch")
        assert torch.equal(x, y)
        if layout == "offset_view":  # the two samples before the view are untouched
            assert torch.equal(base[:2], before[:2])

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
    def test_large_boxes_other_dtypes(self, dtype):
        x = torch.rand(6, 3, 80, 80, generator=gen(6)).to(dtype)
        y, boxes = random_erase_batch(x, scale=(0.5, 0.9), return_boxes=True, generator=gen(7), backend="torch")
        assert bool((3 * boxes.height * boxes.width >= 8192).all())
        assert y.dtype == dtype and torch.equal(y, reference_erase(x, boxes, torch.tensor(IMAGENET_MEAN, dtype=dtype)))

    def test_gradients_flow_through_large_and_small_boxes(self):
        # erasing inside an autograd graph (e.g. after a differentiable augmentation): erased pixels get no
        # gradient, the others pass it through; the values equal the fast path's for the same boxes
        x = torch.rand(8, 3, 80, 80, generator=gen(8), requires_grad=True)
        y, boxes = random_erase_batch(x, scale=(0.02, 0.9), p=0.8, return_boxes=True, generator=gen(9))
        assert y.requires_grad and torch.equal(y, random_erase_batch(x.detach(), boxes=boxes))
        y.sum().backward()
        assert torch.equal(x.grad, 1.0 - box_mask(x.shape, boxes).float().expand_as(x))
        patches = torch.rand(4, 3, 32, 32, generator=gen(10), requires_grad=True)
        z, pboxes = random_erase_batch(patches, mode="patches", num_patches=3, scale=(0.05, 0.2), return_boxes=True)
        z.sum().backward()
        assert torch.equal(patches.grad, 1.0 - box_mask(patches.shape, pboxes).float().expand_as(patches))
        with torch.no_grad():  # no graph: the fast in-place path, same result
            assert torch.equal(random_erase_batch(x, boxes=boxes), y.detach())

    def test_patches_equal_reference(self):
        x = torch.rand(16, 3, 32, 32)
        y, boxes = random_erase_batch(x, mode="patches", num_patches=4, scale=(0.025, 0.1), return_boxes=True)
        assert boxes.top.shape == (16, 4)
        assert torch.equal(y, reference_erase(x, boxes, MEAN))

    def test_uint8(self):
        x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
        y, boxes = random_erase_batch(x, return_boxes=True)
        assert y.dtype == torch.uint8
        assert torch.equal(y, reference_erase(x, boxes, torch.tensor([124, 116, 104])))

    def test_replay_boxes(self):
        x = torch.rand(8, 3, 16, 16)
        y, boxes = random_erase_batch(x, return_boxes=True)
        assert torch.equal(random_erase_batch(x, boxes=boxes), y)

    def test_inplace_is_in_place(self):
        x = torch.rand(8, 3, 16, 16)
        ptr, before = x.data_ptr(), x.clone()
        y = random_erase_batch(x, inplace=True)
        assert y.data_ptr() == ptr and y is x and not torch.equal(x, before)

    def test_out_of_place_leaves_input(self):
        x = torch.rand(8, 3, 16, 16)
        before = x.clone()
        y = random_erase_batch(x)
        assert y.data_ptr() != x.data_ptr() and torch.equal(x, before)

    def test_non_contiguous_view_in_place(self):
        base = torch.rand(8, 3, 40, 40)
        view = base[:, :, ::2, 4:24]  # odd strides: still written through the view
        y, boxes = random_erase_batch(view, inplace=True, value=9.0, return_boxes=True)
        assert y.data_ptr() == view.data_ptr()
        assert int((base == 9.0).sum()) == int((boxes.height * boxes.width).sum()) * 3

    def test_empty_batch(self):
        x = torch.rand(0, 3, 8, 8)
        assert random_erase_batch(x).shape == (0, 3, 8, 8)


class TestFillValues:
    """value / normalized: what number lands in the tensor."""

    def erased_values(self, x, **kw):
        y, boxes = random_erase_batch(x, return_boxes=True, generator=gen(), **kw)
        inside = box_mask(x.shape, boxes)[:, 0]
        return y.permute(1, 0, 2, 3)[:, inside]  # (C, N) erased pixels

    def test_mean_rgb_and_grey(self):
        rgb = self.erased_values(torch.rand(4, 3, 16, 16))
        assert torch.equal(rgb, MEAN.view(3, 1).expand_as(rgb))
        grey = self.erased_values(torch.rand(4, 1, 16, 16))
        assert torch.allclose(grey, torch.tensor(0.449), atol=1e-7)

    def test_normalized_converts_the_fill(self):
        vals = self.erased_values(torch.rand(4, 3, 16, 16), normalized=((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
        assert torch.allclose(vals, ((MEAN - 0.5) / 0.5).view(3, 1).expand_as(vals))
        imagenet = self.erased_values(torch.rand(4, 3, 16, 16), normalized=(IMAGENET_MEAN, (0.229, 0.224, 0.225)))
        assert vals.abs().max() > 0 and imagenet.abs().max() < 1e-6

    def test_midre_code_convention_writes_numbers_unchanged(self):
        vals = self.erased_values(torch.rand(4, 3, 16, 16) * 2 - 1, normalized="midre")
        assert torch.equal(vals, MEAN.view(3, 1).expand_as(vals))

    def test_constants_and_tuples(self):
        for value, want in [(0, [0.0] * 3), (1.0, [1.0] * 3), ((0.1, 0.2, 0.3), [0.1, 0.2, 0.3])]:
            vals = self.erased_values(torch.rand(4, 3, 16, 16), value=value)
            assert torch.equal(vals, torch.tensor(want).view(3, 1).expand_as(vals))

    def test_random_is_uniform_in_pixel_range(self):
        vals = self.erased_values(torch.full((16, 3, 32, 32), -5.0), value="random")
        assert vals.min() >= 0 and vals.max() < 1 and abs(vals.mean().item() - 0.5) < 0.02
        norm = self.erased_values(torch.full((16, 3, 32, 32), -5.0), value="random", normalized=((0.5,), (0.5,)))
        assert norm.min() >= -1 and norm.max() < 1 and norm.min() < -0.9

    def test_uint8_scaling(self):
        assert fill_spec("mean", None, 3, torch.uint8).values == (124.0, 116.0, 104.0)
        vals = self.erased_values(torch.zeros(16, 3, 32, 32, dtype=torch.uint8), value="random")
        assert vals.max() == 255 and vals.min() == 0


class TestModes:
    """The paper's ablations: fixed location (C.2), random pixels and several patches (D.1)."""

    def test_fixed_depends_only_on_index_and_seed(self):
        x = torch.rand(6, 3, 32, 32)
        _, a = random_erase_batch(x, mode="fixed", index=[0, 1, 2, 3, 4, 5], return_boxes=True, generator=gen(1))
        _, b = random_erase_batch(x[:3], mode="fixed", index=[5, 1, 3], return_boxes=True, generator=gen(2))
        for field_a, field_b in zip(a[:4], b[:4]):
            assert field_b.tolist() == field_a[[5, 1, 3]].tolist()
        _, c = random_erase_batch(x, mode="fixed", seed=1, index=range(6), return_boxes=True)
        assert a.top.tolist() != c.top.tolist()
        assert len(set(a.top.tolist())) > 1  # varies across images

    def test_fixed_uniforms_are_uniform(self):
        u = fixed_uniforms(0, torch.arange(20000), 2)
        assert 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01
        assert abs(torch.corrcoef(u.T)[0, 1].item()) < 0.03

    def test_pixels_fraction(self):
        x = torch.zeros(200, 3, 32, 32)
        y = random_erase_batch(x, mode="pixels", scale=(0.3, 0.3), value=1.0, generator=gen())
        assert abs(y.mean().item() - 0.3) < 0.01
        assert torch.equal(y[:, 0], y[:, 2])  # a pixel is erased in every channel

    def test_patches_each_within_scale(self):
        _, boxes = random_erase_batch(torch.rand(100, 3, 64, 64), mode="patches", num_patches=8,
                                      scale=(0.0125, 0.1), return_boxes=True)  # fmt: skip
        frac = (boxes.height * boxes.width).double() / 4096
        assert boxes.top.shape == (100, 8) and frac.min() > 0.008 and frac.max() < 0.11


class TestBatchRandomErasing:
    """The nn.Module: erases in train mode, identity in eval mode."""

    def test_train_and_eval(self):
        module = BatchRandomErasing(scale=(0.1, 0.4), value=0.0)
        x = torch.rand(8, 3, 32, 32) + 1
        assert int((module(x) == 0).flatten(1).any(1).sum()) == 8
        assert module.eval()(x) is x

    def test_inplace_and_fixed_index(self):
        module = BatchRandomErasing(mode="fixed", inplace=True)
        x = torch.rand(4, 3, 16, 16)
        assert module(x, index=torch.arange(4)).data_ptr() == x.data_ptr()
        assert "mode='fixed'" in repr(module)


class ImagesDataset(Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return self.transform(torch.rand(3, 16, 16, generator=gen(i)))


class TestRandomErasingTransform:
    """The torchvision-v2 transform on every input kind."""

    def test_pil(self):
        img = PIL.Image.fromarray(torch.randint(0, 255, (20, 24, 3), dtype=torch.uint8).numpy())
        out = RandomErasingTransform(value=0.0)(img)
        assert isinstance(out, PIL.Image.Image) and out.size == img.size and out.mode == "RGB"
        assert (F.pil_to_tensor(out) == 0).all(0).sum() >= 0.1 * 20 * 24 - 20

    def test_grey_pil(self):
        img = PIL.Image.new("L", (16, 16), color=200)
        out = F.pil_to_tensor(RandomErasingTransform()(img))
        assert set(out.unique().tolist()) == {114, 200}  # round(0.449 * 255) = round(114.5 - 0.005) = 114

    def test_tensors_and_tv_image(self):
        tf = RandomErasingTransform(value=1.0)
        u8 = tf(torch.zeros(3, 16, 16, dtype=torch.uint8))
        assert u8.dtype == torch.uint8 and set(u8.unique().tolist()) == {0, 255}
        img = tf(tv_tensors.Image(torch.zeros(3, 16, 16)))
        assert isinstance(img, tv_tensors.Image) and img.max() == 1

    def test_batched_leading_dims_get_own_boxes(self):
        out = RandomErasingTransform(value=1.0)(torch.zeros(2, 5, 3, 32, 32))
        masks = out[:, :, 0].reshape(10, -1)
        assert out.shape == (2, 5, 3, 32, 32) and len({tuple(m.tolist()) for m in masks}) == 10

    def test_shares_box_across_inputs_and_passes_boxes_through(self):
        img = tv_tensors.Image(torch.zeros(3, 16, 16))
        mask_img = tv_tensors.Image(torch.zeros(1, 16, 16))
        bb = tv_tensors.BoundingBoxes([[1, 1, 5, 5]], format="XYXY", canvas_size=(16, 16))
        a, b, c = RandomErasingTransform(value=1.0)(img, mask_img, bb)
        assert torch.equal(a[0], b[0]) and c is bb

    def test_compose_and_inplace(self):
        tf = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), RandomErasingTransform()])
        assert tf(PIL.Image.new("RGB", (8, 8))).shape == (3, 8, 8)
        x = torch.rand(3, 16, 16)
        assert RandomErasingTransform(inplace=True)(x).data_ptr() == x.data_ptr()

    def test_fixed_mode_uses_index(self):
        tf = RandomErasingTransform(mode="fixed", value=1.0)
        x = torch.zeros(3, 32, 32)
        assert torch.equal(tf(x, index=3), tf(x, index=3))
        assert not torch.equal(tf(x, index=3), tf(x, index=4))
        with pytest.raises(ConfigError, match=r"mode='fixed' needs index="):
            tf(x)

    def test_dataloader_two_workers(self):
        loader = DataLoader(ImagesDataset(RandomErasingTransform(value=-1.0)), batch_size=4, num_workers=2)
        batches = list(loader)
        assert [b.shape for b in batches] == [(4, 3, 16, 16)] * 2
        assert all(bool((b == -1).flatten(1).any(1).all()) for b in batches)


class TestErrors:
    """Every bad argument: a one-line ConfigError naming the argument and the value."""

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"scale": (0.5, 0.2)}, r"scale must be a \(min, max\) pair with 0 < min <= max <= 1, got \(0\.5, 0\.2\)"),
            ({"scale": (0.0, 0.2)}, r"scale must be .*got \(0\.0, 0\.2\)"),
            ({"scale": (0.1, 1.5)}, r"scale must be .*got \(0\.1, 1\.5\)"),
            ({"scale": 0.3}, r"scale must be .*got 0\.3"),
            ({"ratio": (0.0, 1.0)}, r"ratio must be a \(min, max\) pair with 0 < min <= max, got \(0\.0, 1\.0\)"),
            ({"ratio": (2.0, 1.0)}, r"ratio must be .*got \(2\.0, 1\.0\)"),
            ({"p": 1.5}, r"p must be a probability in \[0, 1\], got 1\.5"),
            ({"value": "median"}, r"value must be 'mean', 'random', a number or a per-channel tuple, got 'median'"),
            ({"value": (0.1, 0.2)}, r"value must have 1 or 3 entries \(one per channel\), got 2: \(0\.1, 0\.2\)"),
            ({"normalized": "imagenet"}, r"normalized must be None, 'midre' or a \(mean, std\) pair, got 'imagenet'"),
            ({"normalized": ((0.5,), (0.0,))}, r"normalized std must be > 0, got \(0\.0,\)"),
            ({"mode": "cutout"}, r"mode must be one of box, fixed, pixels, patches, got 'cutout'"),
            ({"num_patches": 0}, r"num_patches must be a positive integer, got 0"),
            ({"seed": 1.5}, r"seed must be an integer, got 1\.5"),
            ({"backend": "cuda"}, r"backend must be one of auto, torch, triton, got 'cuda'"),
            ({"mode": "fixed"}, r"mode='fixed' needs index= \(the data set index of every sample\), got None"),
            ({"mode": "fixed", "index": [1, 2]}, r"index must have shape \(4,\), one per sample, got shape \(2,\)"),
            ({"mode": "fixed", "index": [0.5] * 4}, r"index must hold integers, got a torch\.float32 tensor"),
            ({"mode": "pixels", "return_boxes": True}, r"return_boxes=True cannot be used with mode='pixels'"),
            ({"boxes": (1, 2)}, r"boxes must be the EraseBoxes returned with return_boxes=True, got tuple"),
        ],
    )
    def test_argument_errors(self, kwargs, message):
        with pytest.raises(ConfigError, match=message):
            random_erase_batch(torch.rand(4, 3, 8, 8), **kwargs)

    def test_input_errors(self):
        with pytest.raises(ConfigError, match=r"x must be a floating-point \(or uint8\) tensor, got torch\.int64"):
            random_erase_batch(torch.zeros(2, 3, 8, 8, dtype=torch.int64))
        with pytest.raises(ConfigError, match=r"normalized='midre' needs a floating-point input, got torch\.uint8"):
            random_erase_batch(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), normalized="midre")
        with pytest.raises(ConfigError, match=r"x must be a \(B, C, H, W\) tensor, got shape \(3, 8, 8\)"):
            random_erase_batch(torch.rand(3, 8, 8))
        with pytest.raises(ConfigError, match=r"value='mean' is defined for 1 or 3 channels, got an input with 4"):
            random_erase_batch(torch.rand(2, 4, 8, 8))
        with pytest.raises(ConfigError, match=r"value must lie in \[0, 1\] for a uint8 input .*got 2\.0"):
            random_erase_batch(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), value=2.0)
        with pytest.raises(ConfigError, match=r"inplace=True needs a tensor whose pixels have their own memory"):
            random_erase_batch(torch.rand(1, 3, 8, 8).expand(4, 3, 8, 8), inplace=True)

    def test_triton_needs_few_distinct_channel_values(self):
        with pytest.raises(ConfigError, match=r"backend='triton' takes at most 4 distinct channel values, got 5 channels"):
            random_erase_batch(torch.rand(2, 5, 8, 8), value=(0.1, 0.2, 0.3, 0.4, 0.5), backend="triton")

    def test_replayed_boxes_must_fit(self):
        _, boxes = random_erase_batch(torch.rand(4, 3, 32, 32), return_boxes=True)
        with pytest.raises(ConfigError, match=r"boxes must lie inside the 8x8 image"):
            random_erase_batch(torch.rand(4, 3, 8, 8), boxes=boxes)
        with pytest.raises(ConfigError, match=r"boxes must hold \(2,\) or \(2, K\) tensors for a batch of 2, got shape \(4,\)"):
            random_erase_batch(torch.rand(2, 3, 32, 32), boxes=boxes)

    def test_constructor_errors(self):
        with pytest.raises(ConfigError, match=r"scale must be .*got \(0\.5, 0\.2\)"):
            RandomErasingTransform(scale=(0.5, 0.2))
        with pytest.raises(ConfigError, match=r"ratio must be .*got \(-1\.0, 1\.0\)"):
            BatchRandomErasing(ratio=(-1.0, 1.0))
        with pytest.raises(ConfigError, match=r"images must have shape \(\.\.\., C, H, W\), got shape \(8, 8\)"):
            RandomErasingTransform()(torch.rand(8, 8))


class FakeCuda(torch.Tensor):
    """A CPU tensor that reports a CUDA device: the dispatch sees CUDA, the data stays on the CPU."""

    @property
    def device(self):
        return torch.device("cuda")


class TestDispatch:
    """Which writer runs, with the CUDA side mocked (the Triton launch is replaced by a recorder)."""

    @pytest.fixture
    def launches(self, monkeypatch):
        calls = []

        def fake_erase_(x, fill, *, boxes=None, draw=None, seeds=(0, 0)):
            calls.append({"boxes": boxes, "draw": draw, "seeds": seeds, "fill": fill})
            return EraseBoxes(*(torch.zeros(x.shape[0], dtype=torch.int32),) * 4, torch.ones(x.shape[0], dtype=torch.bool))

        monkeypatch.setattr(functional._triton, "HAVE_TRITON", True)
        monkeypatch.setattr(functional._triton, "erase_", fake_erase_)
        return calls

    def test_auto_on_cuda_draws_and_writes_in_one_triton_call(self, launches):
        x = torch.rand(4, 3, 8, 8).as_subclass(FakeCuda)
        _, boxes = random_erase_batch(x, scale=(0.2, 0.3), return_boxes=True, generator=gen(5))
        (call,) = launches
        assert call["boxes"] is None and call["draw"] == {"scale": (0.2, 0.3), "ratio": (1.0, 1.0), "p": 1.0, "num_patches": None}
        assert call["seeds"] == tuple(torch.randint(0, 2**31 - 1, (2,), generator=gen(5)).tolist())  # a CPU generator seeds it
        assert boxes.applied.tolist() == [True] * 4  # what the kernel returned, passed on

    @pytest.fixture
    def boxes_on_cpu(self, monkeypatch):
        """The torch writer runs on the (CPU) data of a FakeCuda tensor: draw its boxes on the CPU."""
        original = functional.sample_boxes
        monkeypatch.setattr(functional, "sample_boxes", lambda *a, **kw: original(*a, **{**kw, "device": "cpu"}))

    def test_auto_on_cpu_and_backend_torch_never_call_triton(self, launches, boxes_on_cpu):
        x = torch.rand(4, 3, 8, 8)
        y, boxes = random_erase_batch(x, return_boxes=True)
        z, zboxes = random_erase_batch(x.as_subclass(FakeCuda), backend="torch", return_boxes=True)
        assert launches == []
        assert torch.equal(y, reference_erase(x, boxes, MEAN))
        assert torch.equal(z.as_subclass(torch.Tensor), reference_erase(x, zboxes, MEAN))

    def test_replayed_boxes_on_cuda_go_to_the_kernel(self, launches):
        _, boxes = random_erase_batch(torch.rand(4, 3, 8, 8), return_boxes=True)
        x = torch.rand(4, 3, 8, 8).as_subclass(FakeCuda)
        assert functional.erase_boxes_(x, boxes, FillSpec((0.5,) * 3)) is x
        (call,) = launches
        assert call["draw"] is None and torch.equal(call["boxes"].top, boxes.top)

    def test_more_than_four_channel_values_fall_back_to_torch(self, launches, boxes_on_cpu):
        x = torch.rand(4, 5, 8, 8)
        values = (0.1, 0.2, 0.3, 0.4, 0.5)
        y, boxes = random_erase_batch(x.as_subclass(FakeCuda), value=values, return_boxes=True)
        assert launches == []
        assert torch.equal(y.as_subclass(torch.Tensor), reference_erase(x, boxes, torch.tensor(values)))
        random_erase_batch(x.as_subclass(FakeCuda), value=0.5)  # five channels, one value: the kernel takes it
        assert len(launches) == 1

    def test_pick_backend(self, monkeypatch):
        monkeypatch.setattr(functional._triton, "HAVE_TRITON", True)
        cuda, cpu = torch.device("cuda"), torch.device("cpu")
        rgb, five = FillSpec((0.1, 0.2, 0.3)), FillSpec((0.1, 0.2, 0.3, 0.4, 0.5))
        noise5 = fill_spec("random", None, 5, torch.float32)  # the same range in every channel
        assert functional.pick_backend(cuda, rgb, 3, "auto") == "triton"
        assert functional.pick_backend(cuda, noise5, 5, "auto") == "triton"
        assert functional.pick_backend(cuda, five, 5, "auto") == "torch"
        assert functional.pick_backend(cuda, rgb, 3, "auto", torch_only=True) == "torch"  # gradients, pixels
        assert functional.pick_backend(cpu, rgb, 3, "auto") == "torch"
        assert functional.pick_backend(cpu, rgb, 3, "triton") == "triton"  # TRITON_INTERPRET=1 tests
        monkeypatch.setattr(functional._triton, "HAVE_TRITON", False)
        assert functional.pick_backend(cuda, rgb, 3, "auto") == "torch"
        with pytest.raises(ConfigError, match=r"^backend='triton' needs the triton package, which is not installed$"):
            functional.pick_backend(cuda, rgb, 3, "triton")

    def test_cpu_generator_with_cuda_tensor_on_torch_path_is_a_config_error(self, launches):
        x = torch.rand(4, 3, 8, 8).as_subclass(FakeCuda)
        message = r"^generator must be on the input's device \(cuda\), got a cpu generator$"
        for kw in ({"backend": "torch"}, {"mode": "pixels"}, {"mode": "fixed", "index": range(4)}):
            with pytest.raises(ConfigError, match=message):
                random_erase_batch(x, generator=gen(), **kw)
        assert launches == []

    def test_generator_on_another_device_is_a_config_error_before_any_draw(self):
        # a real device mismatch (meta tensor, CPU generator): torch itself would raise a RuntimeError
        x = torch.empty(2, 3, 8, 8, device="meta")
        with pytest.raises(ConfigError, match=r"^generator must be on the input's device \(meta\), got a cpu generator$"):
            random_erase_batch(x, generator=gen())


class TestDocstrings:
    """The ``>>>`` examples in the erasing modules run and are right."""

    @pytest.mark.parametrize("module", [functional, params, transforms], ids=lambda m: m.__name__)
    def test_examples(self, module):
        result = doctest.testmod(module, raise_on_error=False, verbose=False)
        assert result.attempted > 0 and result.failed == 0
