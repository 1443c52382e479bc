"""The CPU fast paths of erasing (issue 33) give exactly the results of the general paths.

- one image: :func:`params.one_box` (Python floats) equals the tensor box map for every ratio;
  :class:`RandomErasingTransform`'s one-slice path equals ``random_erase_batch`` on the same RNG;
- the box table's ``sqrt``/``exp`` in numpy equal torch's;
- the writer keeps every copy under ``SERIAL_ELEMENTS`` at several threads, same pixels.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors

from midefend import RandomErasingTransform, random_erase_batch
from midefend.defenses.erasing import functional, params
from midefend.defenses.erasing.params import UNIFORMS_PER_BOX, boxes_from_uniforms, one_box


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def threads():
    """Set torch's threads for one test and restore them."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


class TestOneBox:
    @settings(max_examples=300, deadline=None)
    @given(
        seed=st.integers(0, 2**31), height=st.integers(1, 300), width=st.integers(1, 300),
        scale=st.tuples(st.floats(1e-4, 1.0), st.floats(1e-4, 1.0)).map(sorted),
        ratio=st.tuples(st.floats(0.05, 20.0), st.floats(0.05, 20.0)).map(sorted),
    )  # fmt: skip
    def test_free_aspect_is_bit_equal_to_the_tensor_map(self, seed, height, width, scale, ratio):
        u = torch.rand(16, UNIFORMS_PER_BOX, generator=gen(seed), dtype=torch.float64)
        want = torch.stack(boxes_from_uniforms(u, height, width, tuple(scale), tuple(ratio)), 1).tolist()
        got = [list(one_box(row, height, width, tuple(scale), tuple(ratio))) for row in u.tolist()]
        assert got == want

    def test_a_side_near_a_rounding_boundary_is_left_to_the_tensor_map(self, monkeypatch):
        u = torch.rand(200, UNIFORMS_PER_BOX, generator=gen(4), dtype=torch.float64)
        calls = []
        original = params.boxes_from_uniforms
        monkeypatch.setattr(params, "boxes_from_uniforms", lambda *a: calls.append(1) or original(*a))
        monkeypatch.setattr(params, "EXP_MARGIN", 1.0)  # every side counts as near: always the tensor map
        want = torch.stack(original(u, 37, 91, (0.02, 1.0), (0.3, 3.3)), 1).tolist()
        assert [list(one_box(row, 37, 91, (0.02, 1.0), (0.3, 3.3))) for row in u.tolist()] == want
        assert len(calls) == 200

    def test_square_boxes_never_need_the_tensor_map(self):
        assert params._box_floats([0.999] * UNIFORMS_PER_BOX, 64, 64, (0.1, 0.4), (1.0, 1.0)) is not None


class TestNumpyTable:
    @pytest.mark.parametrize(("scale", "ratio", "hw"), [((0.1, 0.4), (1.0, 1.0), (64, 64)), ((0.02, 1.0), (0.3, 3.3), (37, 91))])
    def test_numpy_sqrt_and_exp_give_torch_boxes(self, monkeypatch, scale, ratio, hw):
        u = torch.rand(4096, UNIFORMS_PER_BOX, generator=gen(2), dtype=torch.float64)
        fast = boxes_from_uniforms(u, *hw, scale, ratio)
        monkeypatch.setattr(params, "_on_numpy", lambda t: False)
        slow = boxes_from_uniforms(u, *hw, scale, ratio)
        assert all(torch.equal(a, b) and a.dtype == torch.int64 for a, b in zip(fast, slow))

    def test_traced_and_gradient_inputs_stay_in_torch(self):
        assert params._on_numpy(torch.zeros(2, dtype=torch.float64))
        assert not params._on_numpy(torch.zeros(2, dtype=torch.float64, requires_grad=True))


class TestOneImageTransform:
    """The transform's one-image slice equals random_erase_batch on the same global RNG state."""

    @pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.bfloat16])
    @pytest.mark.parametrize(("channels", "size"), [(3, 224), (1, 64), (3, 17)])
    @pytest.mark.parametrize("ratio", [(1.0, 1.0), (0.3, 3.3)])
    @pytest.mark.parametrize("p", [1.0, 0.5])
    def test_bit_equal_to_the_batch_path(self, dtype, channels, size, ratio, p):
        x = (torch.rand(channels, size, size + 3, generator=gen(1)) * 255).to(dtype)
        tf = RandomErasingTransform(p=p, ratio=ratio)
        for seed in range(8):
            torch.manual_seed(seed)
            got = tf(x)
            torch.manual_seed(seed)
            want = random_erase_batch(x[None], p=p, ratio=ratio)[0]
            assert got.dtype == dtype and torch.equal(got, want)

    def test_consumes_the_rng_like_the_batch_path(self):
        x = torch.rand(3, 32, 32)
        torch.manual_seed(5)
        RandomErasingTransform()(x)
        after_transform = torch.rand(3)
        torch.manual_seed(5)
        random_erase_batch(x[None])
        assert torch.equal(after_transform, torch.rand(3))

    @pytest.mark.parametrize("inplace", [False, True])
    def test_in_place_and_out_of_place(self, inplace):
        x = torch.zeros(3, 16, 16)
        y = RandomErasingTransform(value=1.0, inplace=inplace)(x)
        assert (y.data_ptr() == x.data_ptr()) is inplace and int((y == 1).all(0).sum()) >= 0.1 * 256 - 16
        assert bool((x == 1).any()) is inplace

    def test_tv_image_stays_an_image_and_other_inputs_take_the_general_path(self, monkeypatch):
        out = RandomErasingTransform(value=1.0)(tv_tensors.Image(torch.zeros(3, 16, 16)))
        assert isinstance(out, tv_tensors.Image) and out.max() == 1
        tf = RandomErasingTransform(value="random")
        assert tf._one_image(torch.zeros(3, 8, 8)) is None  # random fill: the general path
        assert RandomErasingTransform()._one_image(torch.zeros(2, 3, 8, 8)) is None
        assert RandomErasingTransform()._one_image(torch.zeros(3, 8, 8, dtype=torch.int32)) is None
        x = torch.zeros(3, 8, 8, requires_grad=True)
        assert RandomErasingTransform()._one_image(x) is None

    def test_per_channel_fill_and_grey(self):
        rgb = RandomErasingTransform(value=(0.1, 0.2, 0.3), scale=(0.5, 0.5))(torch.zeros(3, 20, 20))
        assert sorted(rgb.flatten(1).amax(1).tolist()) == pytest.approx([0.1, 0.2, 0.3])
        grey = RandomErasingTransform(scale=(0.5, 0.5))(torch.zeros(1, 20, 20, dtype=torch.uint8))
        assert set(grey.unique().tolist()) == {0, 114}

    def test_errors_match_the_general_path(self):
        with pytest.raises(Exception, match=r"value='mean' is defined for 1 or 3 channels"):
            RandomErasingTransform()(torch.zeros(2, 8, 8))


class TestSerialWriter:
    """At several threads the writer splits its copies below SERIAL_ELEMENTS: same pixels."""

    @pytest.mark.parametrize("shape", [(64, 3, 64, 64), (6, 3, 224, 224), (3, 1, 300, 300)])
    @pytest.mark.parametrize("ratio", [(1.0, 1.0), (0.3, 3.3)])
    def test_same_pixels_at_one_and_two_threads(self, threads, shape, ratio):
        x = torch.rand(shape, generator=gen(3))
        results = []
        for n in (1, 2):
            threads(n)
            results.append(random_erase_batch(x, scale=(0.02, 0.8), ratio=ratio, generator=gen(9)))
        assert torch.equal(*results)

    def test_bands_cover_a_large_box_once(self):
        x = torch.zeros(3, 300, 250)
        view = x[:, 10:290, 5:245]
        source = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)
        pairs = functional._serial_copies(view, source)
        assert all(dst.numel() < functional.SERIAL_ELEMENTS for dst, _ in pairs) and len(pairs) > 1
        for dst, src in pairs:
            dst.add_(src)
        assert torch.equal(view, source.expand_as(view)) and float(x.sum()) == float(view.sum())

    def test_wide_rows_split_per_channel(self):
        x = torch.zeros(3, 4, 20000)
        source = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)
        pairs = functional._serial_copies(x, source)
        assert all(dst.shape[0] == 1 and dst.numel() < functional.SERIAL_ELEMENTS for dst, _ in pairs)
        for dst, src in pairs:
            dst.copy_(src.expand_as(dst))
        assert torch.equal(x, source.expand_as(x))

    def test_no_copy_reaches_the_grain_size(self, threads, monkeypatch):
        threads(2)
        sizes = []
        original = torch.Tensor.index_copy_
        monkeypatch.setattr(torch.Tensor, "index_copy_", lambda self, d, i, s: sizes.append(s.numel()) or original(self, d, i, s))
        random_erase_batch(torch.rand(256, 3, 64, 64), generator=gen(0))
        assert sizes and max(sizes) < functional.SERIAL_ELEMENTS

    def test_large_boxes_are_copied_in_bands_at_two_threads(self, threads, monkeypatch):
        threads(2)
        sizes = []
        original = torch._foreach_copy_
        monkeypatch.setattr(torch, "_foreach_copy_", lambda dst, src: sizes.extend(d.numel() for d in dst) or original(dst, src))
        x = torch.rand(8, 3, 224, 224)
        y, boxes = random_erase_batch(x, scale=(0.3, 0.9), generator=gen(0), return_boxes=True)
        assert sizes and max(sizes) < functional.SERIAL_ELEMENTS
        assert sum(sizes) == int((boxes.height * boxes.width).sum()) * 3
