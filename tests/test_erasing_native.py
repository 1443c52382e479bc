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

from midefend import ConfigError, random_erase_batch
from midefend.defenses import erasing, erasing_native
from midefend.defenses.erasing_native import HAVE_NATIVE, PARALLEL_BOX_ELEMENTS, fill_boxes_
from midefend.defenses.erasing_params import EraseBoxes, FillSpec

needs_native = pytest.mark.skipif(not HAVE_NATIVE, reason="the compiled erasing loop is not built")


def test_built_where_ci_requires_it():
    # CI sets MIDEFEND_REQUIRE_NATIVE=1: a broken build must fail there, not skip every test below
    if os.environ.get("MIDEFEND_REQUIRE_NATIVE") != "1":
        pytest.skip("MIDEFEND_REQUIRE_NATIVE is not set")
    assert HAVE_NATIVE, "midefend/defenses/_erase_cpu.c was not compiled at install"


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
        original = erasing.fill_boxes_
        monkeypatch.setattr(erasing, "fill_boxes_", lambda *a: (calls.append(1), original(*a))[1])
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
        with pytest.raises(ConfigError, match=r"backend='native' erases CPU tensors with a constant fill, got cpu and a random fill"):
            random_erase_batch(torch.rand(2, 3, 8, 8), value="random", backend="native")

    @needs_native
    def test_fill_values_must_match_the_channels(self):
        boxes = EraseBoxes(*(torch.tensor([v]) for v in (0, 0, 2, 2)), torch.tensor([True]))
        with pytest.raises(ValueError, match=r"fill has 1 values for 3 channels"):
            fill_boxes_(torch.zeros(1, 3, 4, 4), boxes, FillSpec((1.0,)))

    def test_without_the_build_the_function_says_so(self, monkeypatch):
        monkeypatch.setattr(erasing_native, "HAVE_NATIVE", False)
        boxes = EraseBoxes(*(torch.tensor([v]) for v in (0, 0, 2, 2)), torch.tensor([True]))
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
