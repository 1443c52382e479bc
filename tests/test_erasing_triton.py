"""The fused Triton erasing kernel against the torch path.

Without a GPU the kernel's logic runs on the CPU under ``TRITON_INTERPRET=1``. Triton reads that
variable when it is imported, so the checks run in one fresh subprocess (``CHECKS`` below) that
reports each check's outcome as JSON; every check is then one pytest case. With a GPU, the
``cuda`` cases run the compiled kernel and count its launches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

from midefend.defenses.erasing import EraseBoxes, random_erase_batch
from midefend.defenses.erasing import _triton
from midefend.defenses.erasing._triton import HAVE_TRITON

pytestmark = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")

_POINTER_TYPES = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.uint8: "*u8"}


def compile_kernel(target, dtype: torch.dtype, *, sample: bool, random_fill: bool):
    """Compile the kernel ahead of time for ``target`` (e.g. ``GPUTarget("cuda", 90, 32)``), without a
    GPU: this catches the type errors the interpreter does not check."""
    import triton
    from triton.compiler import ASTSource

    floats = ["area_lo", "area_hi", "logr_lo", "logr_hi", "p"]
    floats += [f"{name}{i}" for name in ("v", "lo", "hi") for i in range(_triton.MAX_FILL_CHANNELS)]
    ints = ["seed", "fill_seed", "num_boxes", "C", "H", "W", "K", "s_b", "s_c", "s_h", "s_w"]
    signature = {"x_ptr": _POINTER_TYPES[dtype], "box_ptr": "*i32", "applied_ptr": "*i8"}
    signature.update({name: "i32" for name in ints})
    signature.update({name: "fp32" for name in floats})
    constants = dict(SAMPLE=sample, RANDOM_FILL=random_fill, INTEGER=dtype == torch.uint8, BLOCK_H=32, BLOCK_W=64,
                     ATT=_triton.ATTEMPTS, ATT_P2=triton.next_power_of_2(_triton.ATTEMPTS))  # fmt: skip
    signature.update({name: "constexpr" for name in constants})
    source = ASTSource(fn=triton.jit(_triton._erase_kernel), signature=signature, constexprs=constants)
    return triton.compile(source, target=target)


def _replay_equal(device, shape, dtype, channels_last=False, **kw):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    if dtype == torch.uint8:
        x = torch.randint(0, 256, shape, dtype=torch.uint8)
    x = x.to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    want, boxes = random_erase_batch(x, return_boxes=True, backend="torch", **kw)
    got = random_erase_batch(x, boxes=boxes, backend="triton", **kw)
    assert got.dtype == dtype and got.stride() == want.stride()
    assert torch.equal(got, want), (got != want).sum()


def check_replay_float32(device):
    _replay_equal(device, (6, 3, 20, 17), torch.float32, p=0.7, scale=(0.02, 0.8), ratio=(0.3, 3.3))


def check_replay_bfloat16_channels_last(device):
    _replay_equal(device, (5, 3, 16, 16), torch.bfloat16, channels_last=True, value=(0.1, 0.2, 0.3))


def check_replay_float16_grey(device):
    _replay_equal(device, (4, 1, 12, 70), torch.float16, ratio=(0.3, 3.3), normalized=((0.5,), (0.5,)))


def check_replay_uint8(device):
    _replay_equal(device, (3, 3, 16, 16), torch.uint8)


def check_replay_patches(device):
    _replay_equal(device, (4, 3, 16, 16), torch.float32, mode="patches", num_patches=3, scale=(0.02, 0.1))


def check_replay_five_channels_one_value(device):
    _replay_equal(device, (3, 5, 8, 8), torch.float32, value=0.25)


def check_sampled_boxes_valid_and_replayable(device):
    x = torch.rand(24, 3, 24, 20).to(device)
    y, boxes = random_erase_batch(x, return_boxes=True, backend="triton", scale=(0.1, 0.4), ratio=(0.5, 2.0))
    top, left, h, w = (f.long() for f in boxes[:4])
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 24) & (left + w <= 20)).all())
    slack = 0.5 * (h + w) + 0.75
    area = (h * w).double()
    assert bool(((area >= 0.1 * 480 - slack) & (area <= 0.4 * 480 + slack)).all())
    assert len(set(zip(top.tolist(), h.tolist()))) > 5 and bool(boxes.applied.all())
    replay = EraseBoxes(top, left, h, w, boxes.applied)
    assert torch.equal(y, random_erase_batch(x, boxes=replay, backend="torch"))


def check_sampled_patches_and_probability(device):
    # small: the interpreter runs each program in Python (~50 ms with in-kernel sampling)
    x = torch.rand(40, 1, 16, 16).to(device)
    y, boxes = random_erase_batch(x, return_boxes=True, backend="triton", mode="patches", num_patches=2,
                                  scale=(0.025, 0.1), p=0.5)  # fmt: skip
    assert boxes.top.shape == (40, 2) and 0.2 < boxes.applied.float().mean().item() < 0.8
    replay = EraseBoxes(*(f.long() for f in boxes[:4]), boxes.applied)
    assert torch.equal(y, random_erase_batch(x, boxes=replay, backend="torch"))


def check_random_fill_range_and_seed(device):
    x = torch.full((8, 3, 32, 32), -5.0).to(device)
    a = random_erase_batch(x, value="random", backend="triton", generator=torch.Generator().manual_seed(3))
    b = random_erase_batch(x, value="random", backend="triton", generator=torch.Generator().manual_seed(3))
    erased = a[a != -5.0]
    assert torch.equal(a, b) and erased.numel() > 0 and erased.min() >= 0 and erased.max() < 1


CHECKS = {name: fn for name, fn in dict(globals()).items() if name.startswith("check_")}


def _run_checks_here() -> None:
    """Entry point of the subprocess: run every check, print ``{name: null | traceback}``."""
    result = {}
    for name, fn in CHECKS.items():
        try:
            fn("cpu")
            result[name] = None
        except Exception:
            result[name] = traceback.format_exc()
    print("RESULT " + json.dumps(result))


@pytest.fixture(scope="module")
def interpreted_results() -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    code = "import test_erasing_triton as t; t._run_checks_here()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_kernel_logic_interpreted(interpreted_results, name):
    """The kernel (TRITON_INTERPRET=1, CPU) writes exactly what the torch path writes."""
    assert interpreted_results[name] is None, interpreted_results[name]


@pytest.mark.parametrize(
    ("dtype", "sample", "random_fill"),
    [(torch.float32, True, False), (torch.bfloat16, False, True), (torch.uint8, True, True)],
)
def test_kernel_compiles_for_cuda(dtype, sample, random_fill):
    """Ahead-of-time compilation to PTX for an H100 (sm_90) catches type errors the interpreter misses."""
    from triton.backends.compiler import GPUTarget

    try:
        kernel = compile_kernel(GPUTarget("cuda", 90, 32), dtype, sample=sample, random_fill=random_fill)
    except (ImportError, KeyError) as err:  # no CUDA backend in this triton build
        pytest.skip(f"triton cannot compile for CUDA here: {err}")
    assert ".entry _erase_kernel" in kernel.asm["ptx"]


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_kernel_on_cuda(name):
    """The same checks with the compiled kernel on CUDA tensors."""
    CHECKS[name]("cuda")


def test_nothing_runs_after_the_launch(monkeypatch):
    """The host side of a sampled erase launches the kernel and then only takes views of what it
    wrote (the boxes and the ``applied`` bytes): any op after the launch would be a second launch."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from midefend.defenses.erasing import _triton

    after: list[str] = []
    launched = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if launched:
                after.append(str(func))
            return func(*args, **(kwargs or {}))

    def fake_launch(x, buf, applied, *args, **meta):
        assert meta["SAMPLE"] and applied.dtype == torch.int8 and buf.dtype == torch.int32
        launched.append(True)

    monkeypatch.setattr(_triton, "_kernel", lambda: {(6, 1, 1): fake_launch})
    x = torch.rand(6, 3, 8, 8)
    with Record():
        boxes = _triton.erase_(x, _triton.FillSpec((0.5,) * 3), draw={"scale": (0.1, 0.4), "ratio": (1.0, 1.0), "p": 1.0, "num_patches": None})
    assert launched and boxes.applied.dtype == torch.bool and boxes.top.shape == (6,)
    assert after and all(op.startswith(("aten.view", "aten.unbind", "aten.detach")) for op in after), str(after)


@pytest.mark.cuda
def test_one_kernel_launch_per_batch():
    x = torch.rand(256, 3, 64, 64, device="cuda")
    random_erase_batch(x, inplace=True)  # compile outside the profile
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        random_erase_batch(x, inplace=True)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len(kernels) == 1, [e.name for e in kernels]
