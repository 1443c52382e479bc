"""The compiled CPU erasing loop: bit-equal to the torch path, chosen when it is faster, clear errors.

The torch path is itself checked against torchvision's per-sample ``F.erase`` in
``test_erasing.py``; here the loop is held to the torch path on the same boxes over random
shapes, dtypes, layouts and modes.
"""

from __future__ import annotations

import doctest
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from midefend import ConfigError, RandomErasingTransform, random_erase_batch
from midefend.defenses import erasing, erasing_native
from midefend.defenses.erasing_native import HAVE_NATIVE, PARALLEL_BOX_ELEMENTS, fill_boxes_, native_refusal
from midefend.defenses.erasing_params import EraseBoxes, FillSpec

needs_native = pytest.mark.skipif(not HAVE_NATIVE, reason="the compiled erasing loop is not built")


def test_built_where_ci_requires_it():
    # CI sets MIDEFEND_REQUIRE_NATIVE=1: a broken build must fail there, not skip every test below
    if os.environ.get("MIDEFEND_REQUIRE_NATIVE") != "1":
        pytest.skip("MIDEFEND_REQUIRE_NATIVE is not set")
    assert HAVE_NATIVE, "midefend/defenses/_erase_cpu.c was not compiled at install"


def one_box() -> EraseBoxes:
    """A 2x2 box at the top left of a batch of one."""
    return EraseBoxes(*(torch.tensor([v]) for v in (0, 0, 2, 2)), torch.tensor([True]))


LAYOUTS = ["contiguous", "channels_last", "offset_view", "strided_columns", "transposed"]


def make_input(batch, channels, height, width, dtype, layout, seed):
    g = torch.Generator().manual_seed(seed)
    if layout == "strided_columns":  # every other column: the row loop with a stride > 1
        base = torch.rand(batch, channels, height, 2 * width, generator=g)
        x = base[..., ::2]
    elif layout == "transposed":  # H and W swapped in memory
        x = torch.rand(batch, channels, width, height, generator=g).transpose(2, 3)
    elif layout == "offset_view":  # starts inside a larger storage
        x = torch.rand(batch + 2, channels, height, width, generator=g)[2:]
    else:
        x = torch.rand(batch, channels, height, width, generator=g)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
    if dtype == torch.uint8:
        return (x * 255).to(torch.uint8)
    return x.to(dtype)


@needs_native
@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 9),
    channels=st.integers(1, 5),
    height=st.integers(1, 23),
    width=st.integers(1, 23),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8]),
    layout=st.sampled_from(LAYOUTS),
    mode=st.sampled_from(["box", "patches"]),
    p=st.sampled_from([0.0, 0.6, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_equals_torch_path_on_the_same_boxes(batch, channels, height, width, dtype, layout, mode, p, seed):
    x = make_input(batch, channels, height, width, dtype, layout, seed)
    value = [0.25 + 0.1 * c for c in range(channels)] if channels != 3 else "mean"
    kw = dict(p=p, mode=mode, num_patches=3, scale=(0.02, 0.9), ratio=(0.3, 3.3), value=value)
    want, boxes = random_erase_batch(x, return_boxes=True, backend="torch", generator=torch.Generator().manual_seed(seed), **kw)
    got = random_erase_batch(x, boxes=boxes, backend="native", **kw)
    assert torch.equal(got, want)
    assert got.stride() == want.stride()  # the layout is kept
    out = random_erase_batch(x, boxes=boxes, backend="native", inplace=True, **kw)
    assert out is x and torch.equal(x, want)


@needs_native
def test_offset_view_leaves_the_rest_of_the_storage_alone():
    base = torch.rand(6, 3, 16, 16)
    keep = base[:2].clone()
    random_erase_batch(base[2:], inplace=True, backend="native", scale=(0.5, 0.9))
    assert torch.equal(base[:2], keep)


@needs_native
def test_columns_between_strided_views_are_untouched():
    base = torch.rand(4, 3, 12, 24)
    odd = base[..., 1::2].clone()
    random_erase_batch(base[..., ::2], inplace=True, backend="native", scale=(0.5, 0.9), value=0.0)
    assert torch.equal(base[..., 1::2], odd)
    assert bool((base[..., ::2] == 0).any())


class TestChoice:
    """``backend="auto"`` takes the loop for constant fills on the CPU, where it is faster."""

    @pytest.fixture
    def spy(self, monkeypatch):
        calls = []
        original = erasing._write_boxes_
        monkeypatch.setattr(erasing, "_write_boxes_", lambda *a: (calls.append(1), original(*a))[1])
        return calls

    @needs_native
    def test_auto_takes_the_loop_for_a_constant_fill(self, spy, monkeypatch):
        monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
        random_erase_batch(torch.rand(4, 3, 8, 8))
        assert spy == [1]

    @needs_native
    @pytest.mark.parametrize(
        "kwargs, x",
        [
            ({"value": "random"}, torch.rand(4, 3, 8, 8)),  # noise comes from a torch.Generator
            ({"backend": "torch"}, torch.rand(4, 3, 8, 8)),
            ({}, torch.rand(4, 3, 8, 8, requires_grad=True)),  # the differentiable mask path
            ({"mode": "pixels"}, torch.rand(4, 3, 8, 8)),
        ],
        ids=["random-fill", "torch-backend", "requires-grad", "pixels"],
    )
    def test_other_cases_keep_the_torch_path(self, spy, kwargs, x):
        random_erase_batch(x, **kwargs)
        assert spy == []

    @needs_native
    def test_large_boxes_on_several_threads_take_the_torch_path(self, spy, monkeypatch):
        monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
        x = torch.rand(2, 3, 200, 200)  # boxes of 3 * 0.9 * 40000 elements
        random_erase_batch(x, scale=(0.9, 0.9))
        assert spy == []
        assert 3 * 0.9 * 200 * 200 >= PARALLEL_BOX_ELEMENTS
        random_erase_batch(torch.rand(2, 3, 32, 32))  # small boxes: the loop even on 4 threads
        assert spy == [1]

    def test_without_the_build_auto_uses_torch_and_native_is_refused(self, monkeypatch):
        monkeypatch.setattr(erasing, "HAVE_NATIVE", False)
        x = torch.rand(4, 3, 8, 8)
        y, boxes = random_erase_batch(x, return_boxes=True)
        assert torch.equal(y, random_erase_batch(x, boxes=boxes, backend="torch"))
        with pytest.raises(ConfigError, match=r"backend='native' needs the compiled erasing loop, which was not built"):
            random_erase_batch(x, backend="native")


class TestErrors:
    @needs_native
    def test_native_refuses_random_fill(self):
        with pytest.raises(ConfigError, match=r"^backend='native' needs a constant fill, got value='random'$"):
            random_erase_batch(torch.rand(2, 3, 8, 8), value="random", backend="native")

    @needs_native
    def test_native_refuses_other_dtypes(self):
        x = torch.zeros(2, 3, 8, 8, dtype=torch.float8_e4m3fn)
        with pytest.raises(ConfigError, match=r"^backend='native' takes float32, float64, float16, bfloat16 or uint8 tensors, got torch.float8_e4m3fn$"):
            random_erase_batch(x, backend="native")

    @needs_native
    def test_direct_calls_are_checked_too(self):
        boxes = one_box()
        with pytest.raises(ValueError, match=r"^fill_boxes_ needs a constant fill, got value='random'$"):
            fill_boxes_(torch.zeros(1, 1, 4, 4), boxes, FillSpec(None, (0.0,), (1.0,)))

    @needs_native
    def test_direct_calls_need_a_4d_tensor(self):
        boxes = one_box()
        with pytest.raises(ValueError, match=r"^fill_boxes_ needs a \(B, C, H, W\) tensor, got shape \(1, 4, 4\)$"):
            fill_boxes_(torch.zeros(1, 4, 4), boxes, FillSpec((1.0,)))

    @needs_native
    def test_fill_values_must_match_the_channels(self):
        boxes = one_box()
        with pytest.raises(ValueError, match=r"fill has 1 values for 3 channels"):
            fill_boxes_(torch.zeros(1, 3, 4, 4), boxes, FillSpec((1.0,)))

    def test_without_the_build_the_function_says_so(self, monkeypatch):
        monkeypatch.setattr(erasing_native, "HAVE_NATIVE", False)
        boxes = one_box()
        with pytest.raises(RuntimeError, match=r"the compiled erasing loop is not built"):
            fill_boxes_(torch.zeros(1, 1, 4, 4), boxes, FillSpec((1.0,)))


def test_doctests():
    assert doctest.testmod(erasing_native).failed == 0


@needs_native
@pytest.mark.parametrize("backend", ["torch", "native"])
def test_autograd_sees_the_in_place_write(backend):
    # x saved by a graph, then erased in place: backward must refuse, as after any in-place op
    w = torch.ones(2, 3, 8, 8, requires_grad=True)
    x = torch.rand(2, 3, 8, 8)
    loss = (w * x).sum()  # saves x for dloss/dw
    version = x._version
    random_erase_batch(x, inplace=True, backend=backend)
    assert x._version > version
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation"):
        loss.backward()


class TestLeftToTorch:
    """Whatever torch handles specially is refused by the loop and erased (or refused) by torch."""

    def test_refusal_reasons(self):
        fill = FillSpec((0.5, 0.5, 0.5))
        x = torch.rand(2, 3, 8, 8)
        assert native_refusal(x, fill) is None
        assert native_refusal(x.contiguous(memory_format=torch.channels_last), fill) is None
        assert native_refusal(x[..., ::2], fill) is None
        assert native_refusal(x.transpose(2, 3), fill) is None
        cases = {
            "needs a tensor whose elements do not share memory": x.as_strided((2, 3, 8, 8), (1, 1, 4, 1)),
            "cannot write a lazily negated tensor": torch._neg_view(x),
            "needs a plain strided torch.Tensor, got Parameter with layout torch.strided": torch.nn.Parameter(x),
            "needs a CPU tensor, got meta": x.to("meta"),
        }
        for reason, bad in cases.items():
            assert native_refusal(bad, fill) == reason
        with torch.inference_mode():
            inference = torch.rand(2, 3, 8, 8)
            assert native_refusal(inference, fill) is None  # inside inference mode it may be written
        assert native_refusal(inference, fill) == "cannot write an inference tensor outside inference mode"
        small = torch.rand(2, 3, 8, 8)
        small.untyped_storage().resize_(16)
        assert native_refusal(small, fill) == "needs a tensor whose storage holds all its elements (this one was resized or freed)"

    @needs_native
    def test_inference_tensor_outside_inference_mode_gets_torch_s_error(self):
        with torch.inference_mode():
            x = torch.rand(2, 3, 8, 8)
        with pytest.raises(RuntimeError, match=r"[Ii]nplace update to inference tensor outside InferenceMode"):
            random_erase_batch(x, inplace=True)

    @needs_native
    def test_freed_storage_gets_torch_s_error_not_a_crash(self):
        x = torch.rand(2, 3, 8, 8)
        x.untyped_storage().resize_(0)
        with pytest.raises(RuntimeError):
            random_erase_batch(x, inplace=True)

    @pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # torch's own forward_ad import
    def test_forward_mode_ad_zeroes_the_tangent_in_the_boxes(self):
        import torch.autograd.forward_ad as fwad

        primal, tangent = torch.rand(2, 3, 8, 8), torch.full((2, 3, 8, 8), 16.0)
        _, boxes = random_erase_batch(primal, return_boxes=True, scale=(0.3, 0.3))
        with fwad.dual_level():
            y = random_erase_batch(fwad.make_dual(primal, tangent), boxes=boxes)
            out_tangent = fwad.unpack_dual(y).tangent
        inside = random_erase_batch(torch.zeros(2, 3, 8, 8), boxes=boxes, value=1.0) == 1
        assert bool((out_tangent[inside] == 0).all()) and bool((out_tangent[~inside] == 16).all())

    @pytest.mark.filterwarnings("ignore:There is a performance drop because we have not yet implemented the batching rule")
    def test_vmap_works(self):
        xs = torch.rand(2, 4, 3, 8, 8)
        _, boxes = random_erase_batch(xs[0], return_boxes=True)
        got = torch.func.vmap(lambda x: random_erase_batch(x, boxes=boxes))(xs)
        want = torch.stack([random_erase_batch(x, boxes=boxes, backend="torch") for x in xs])
        assert torch.equal(got, want)

    def test_torch_compile_traces_the_torch_path(self):
        # the loop's addresses would be taken from traced tensors: compiling must not reach it
        x = torch.rand(4, 3, 8, 8)
        _, boxes = random_erase_batch(x, return_boxes=True)
        compiled = torch.compile(lambda t: random_erase_batch(t, boxes=boxes) * 2, backend="eager")
        assert torch.equal(compiled(x), random_erase_batch(x, boxes=boxes, backend="torch") * 2)

    def test_huge_replayed_boxes_are_refused_before_any_write(self):
        x = torch.rand(2, 3, 8, 8)
        original = x.clone()
        big = torch.tensor([2**62, 2**62])
        for top, h in [(torch.tensor([1, 1]), torch.tensor([2**63 - 1, 2])), (big, big)]:
            boxes = EraseBoxes(top, torch.tensor([0, 0]), h, torch.tensor([2, 2]), torch.tensor([True, True]))
            with pytest.raises(ConfigError, match=r"^boxes must lie inside the 8x8 image$"):
                random_erase_batch(x, boxes=boxes, inplace=True)
        assert torch.equal(x, original)

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    def test_boxes_drawn_on_cuda_replay_on_the_cpu(self):
        x = torch.rand(4, 3, 16, 16)
        _, boxes = random_erase_batch(x.cuda(), return_boxes=True)
        got = random_erase_batch(x, boxes=boxes)
        assert torch.equal(got, random_erase_batch(x, boxes=EraseBoxes(*(f.cpu() for f in boxes)), backend="torch"))


class TestBoundaries:
    """The second review's cases: the loop's own bounds check, forged params, odd boxes and fills."""

    @needs_native
    @pytest.mark.parametrize("top, h", [(3, 2), (2**62, 2**62), (-1, 1)])
    def test_the_loop_checks_boxes_before_writing(self, top, h):
        x = torch.zeros(2, 3, 4, 4)
        boxes = EraseBoxes(torch.tensor([0, top]), torch.tensor([0, 0]), torch.tensor([1, h]), torch.tensor([1, 1]),
                           torch.tensor([True, True]))  # fmt: skip
        with pytest.raises(ValueError, match=r"^fill_boxes: box 1 lies outside the 4x4 image$"):
            fill_boxes_(x, boxes, FillSpec((1.0, 1.0, 1.0)))
        assert not bool(x.any())  # box 0 was fine, but nothing is written when any box is not

    @needs_native
    def test_box_fields_must_match_the_batch(self):
        boxes = EraseBoxes(*(torch.tensor([0, 0]) for _ in range(4)), torch.tensor([True, True]))
        with pytest.raises(ValueError, match=r"boxes must hold \(3,\) or \(3, K\) tensors for a batch of 3"):
            fill_boxes_(torch.zeros(3, 1, 4, 4), boxes, FillSpec((1.0,)))

    def test_params_drawn_for_another_size_are_checked(self):
        tf = RandomErasingTransform(scale=(0.5, 0.5))
        params = tf.make_params([torch.zeros(3, 64, 64)])
        with pytest.raises(ConfigError, match=r"^boxes must lie inside the 8x8 image$"):
            tf.transform(torch.zeros(3, 8, 8), params)

    @pytest.mark.parametrize("backend", ["torch", "native"])
    def test_replaying_zero_patches_writes_nothing(self, backend):
        if backend == "native" and not HAVE_NATIVE:
            pytest.skip("the compiled erasing loop is not built")
        x = torch.rand(3, 3, 8, 8)
        empty = EraseBoxes(*(torch.zeros(3, 0, dtype=torch.int64) for _ in range(4)), torch.tensor([True] * 3))
        assert torch.equal(random_erase_batch(x, boxes=empty, backend=backend), x)

    @needs_native
    def test_negative_zero_fill_keeps_its_sign(self):
        for value in (0.0, -0.0):  # the cached fill must not hand +0.0 to -0.0
            kw = dict(value=value, scale=(0.5, 0.5))
            y = random_erase_batch(torch.ones(2, 3, 8, 8), backend="native", generator=torch.Generator().manual_seed(1), **kw)
            want = random_erase_batch(torch.ones(2, 3, 8, 8), backend="torch", generator=torch.Generator().manual_seed(1), **kw)
            assert torch.equal(torch.signbit(y), torch.signbit(want)) and bool(torch.signbit(y).any()) == (str(value) == "-0.0")

    def test_threads_sharing_a_fixed_transform_get_their_own_index(self):
        from concurrent.futures import ThreadPoolExecutor

        tf = RandomErasingTransform(mode="fixed", value=1.0, seed=3)
        want = {i: tf(torch.zeros(3, 16, 16), index=i) for i in range(40)}

        def erase(i):
            return i, tf(torch.zeros(3, 16, 16), index=i)

        with ThreadPoolExecutor(4) as pool:
            for i, got in pool.map(erase, [i for _ in range(10) for i in range(40)]):
                assert torch.equal(got, want[i])

    def test_absurd_ratios_give_the_same_boxes_on_both_maps(self):
        from midefend.defenses.erasing_params import SCALAR_BOXES, sample_boxes

        kw = dict(scale=(0.1, 0.4), ratio=(1e40, 1e40), p=1.0)
        python = sample_boxes(SCALAR_BOXES, 32, 32, generator=torch.Generator().manual_seed(0), **kw)
        tensors = sample_boxes(SCALAR_BOXES + 1, 32, 32, generator=torch.Generator().manual_seed(0), **kw)
        for a, b in zip(python[:4], tensors[:4]):
            assert torch.equal(a, b[:SCALAR_BOXES])
        assert python.height.tolist() == [32] * SCALAR_BOXES and python.width.tolist() == [1] * SCALAR_BOXES
