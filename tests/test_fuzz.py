"""Hypothesis fuzzing: from ``load_checkpoint`` and the erasing parameters, nothing escapes but ``MidefendError``.

``tests/test_checkpoints.py`` already damages a valid file's bytes at random
and feeds arbitrary JSON to the metadata schema; the fuzzers here reach the
parts behind those gates:

- **headers**: well-formed JSON headers whose tensor entries (dtype, shape,
  offsets, names) and data length are arbitrary;
- **rebuild**: a file whose header and schema are valid, but whose
  architecture, constructor arguments, class count and hardening record are
  arbitrary, so :func:`load_checkpoint` gets as far as ``build_model`` and
  ``harden``; plus arbitrary ``device`` / ``allow_pickle`` arguments;
- **erasing**: arbitrary values (and types) for every parameter of
  :func:`random_erase_batch`, :class:`BatchRandomErasing` and
  :class:`RandomErasingTransform`, on batches of arbitrary shape and dtype.
  A call either succeeds -- same shape, dtype and device as the input, the
  input untouched unless ``inplace`` -- or raises a ``MidefendError``.

Small runs by default; ``-m slow`` runs each fuzzer with many more examples.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midefend.defenses.erasing import BatchRandomErasing, RandomErasingTransform, random_erase_batch
from midefend.errors import MidefendError
from midefend.io import read_checkpoint_header
from midefend.io.checkpoints import load_checkpoint

from conftest import devices
from reliability_fixtures import one_thread  # noqa: F401  (autouse fixture)
from reliability_fixtures import TARGET_ARCH, TARGET_KW, join_safetensors, make_checkpoint, make_image_folder, split_safetensors

SMALL = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LARGE = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def only_midefend_errors(call) -> object:
    """Run ``call()``; a ``MidefendError`` is an acceptable answer (returned as None), anything else fails."""
    try:
        return call()
    except MidefendError:
        return None


# ---------------------------------------------------------------------------------------------
# strategies

ANY_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
)
ANY_VALUE = st.recursive(ANY_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner)), max_leaves=6)
JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8,
)
def maybe(valid, *, weight: int = 3, other=ANY_VALUE):
    """``valid`` values ``weight`` times as often as ``other`` ones (anything at all by default)."""
    return st.integers(0, weight).flatmap(lambda i: valid if i else other)


DTYPES = st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "F4", "complex", ""])


@st.composite
def tensor_entries(draw):
    """A safetensors tensor entry: mostly plausible, sometimes broken in one field."""
    shape = draw(st.one_of(st.lists(st.integers(0, 6), max_size=3), JSON_VALUE))
    begin = draw(st.one_of(st.integers(0, 200), JSON_VALUE))
    end = draw(st.one_of(st.integers(0, 400), JSON_VALUE))
    entry = {"dtype": draw(st.one_of(DTYPES, JSON_VALUE)), "shape": shape, "data_offsets": [begin, end]}
    extra = draw(st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets", "other"]), JSON_VALUE, max_size=1))
    return {**entry, **extra}


@st.composite
def arch_records(draw):
    """An (arch, arch_kwargs, num_classes) that passes the schema but may not build."""
    arch = draw(st.one_of(
        st.just(TARGET_ARCH),
        st.sampled_from([TARGET_ARCH, "midefend/vgg_small", "timm/test_resnet", "torchvision/resnet18", "timm/not_a_net",
                         "midefend/", "/resnet18", "keras/resnet", "torchvision/__init__", "timm/../../etc"]),
        st.text(min_size=1, max_size=12),
    ))  # fmt: skip
    kwargs = dict(TARGET_KW) if draw(st.integers(0, 3)) else {}
    kwargs.update(draw(st.dictionaries(
        st.sampled_from(["in_chans", "widths", "depths", "drop_rate", "hidden", "pretrained", "global_pool", "bogus"]),
        JSON_VALUE, max_size=2,
    )))  # fmt: skip
    num_classes = draw(st.one_of(st.just(4), st.integers(1, 300)))
    return arch, kwargs, num_classes


HARDENING = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"rank": st.one_of(st.integers(-2, 40), JSON_VALUE), "activation": st.one_of(st.sampled_from(["tanh", "relu", "x"]), JSON_VALUE),
         "norm": st.one_of(st.booleans(), JSON_VALUE),
         "heads": st.one_of(st.lists(st.fixed_dictionaries({"path": st.one_of(st.sampled_from(["fc", "stem", "", "fc.x"]), JSON_VALUE)}), max_size=2), JSON_VALUE)},
        optional={"init": JSON_VALUE},
    ),
    st.dictionaries(st.text(max_size=6), JSON_VALUE, max_size=3),
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# checkpoints


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    data = make_image_folder(root / "data", classes=4, per_class=2)
    return make_checkpoint(root / "model.safetensors", data, arch=TARGET_ARCH, arch_kwargs=TARGET_KW)


def _load_both(path: Path, **kwargs) -> None:
    only_midefend_errors(lambda: read_checkpoint_header(path))
    ckpt = only_midefend_errors(lambda: load_checkpoint(path, **kwargs))
    if ckpt is not None:
        assert all(bool(torch.isfinite(t).all()) for t in ckpt.model.state_dict().values() if t.is_floating_point())


def _check_header(path: Path, tensors: dict, metadata, data_length: int, raw_prefix: bytes) -> None:
    header = dict(tensors)
    if metadata is not None:
        header["__metadata__"] = metadata
    join_safetensors(path, header, bytes(data_length))
    if raw_prefix:  # sometimes also damage the length prefix itself
        blob = path.read_bytes()
        path.write_bytes(raw_prefix + blob[len(raw_prefix) :])
    _load_both(path)


HEADER_ARGS = dict(
    tensors=st.dictionaries(st.text(max_size=10), tensor_entries(), max_size=3),
    metadata=st.one_of(st.none(), st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=8), JSON_VALUE), max_size=2)),
    data_length=st.integers(0, 300),
    raw_prefix=st.one_of(st.just(b""), st.binary(min_size=1, max_size=8)),
)


def _check_rebuild(valid: Path, path: Path, record, hardening, fields: dict, device, allow_pickle) -> None:
    header, data = split_safetensors(valid)
    meta = json.loads(header["__metadata__"]["midefend"])
    meta["arch"], meta["arch_kwargs"], meta["num_classes"] = record
    meta["hardening"] = hardening
    meta.update(fields)
    header["__metadata__"]["midefend"] = json.dumps(meta)
    join_safetensors(path, header, data)
    _load_both(path, device=device, allow_pickle=allow_pickle)


REBUILD_ARGS = dict(
    record=arch_records(),
    hardening=HARDENING,
    fields=st.one_of(st.just({}), st.dictionaries(st.sampled_from(["input_size", "mean", "std", "defense", "extra"]), JSON_VALUE, max_size=1)),
    device=maybe(st.just("cpu"), weight=8, other=st.sampled_from(["cuda:9", "meta", "mps", "", "cpu:0", "tpu"]) | ANY_SCALAR),
    allow_pickle=maybe(st.just(False), weight=8),
)


class TestLoadCheckpoint:
    @SMALL
    @given(**HEADER_ARGS)
    def test_arbitrary_header(self, tmp_path, tensors, metadata, data_length, raw_prefix):
        _check_header(tmp_path / "f.safetensors", tensors, metadata, data_length, raw_prefix)

    @pytest.mark.slow
    @LARGE
    @given(**HEADER_ARGS)
    def test_arbitrary_header_many(self, tmp_path, tensors, metadata, data_length, raw_prefix):
        _check_header(tmp_path / "f.safetensors", tensors, metadata, data_length, raw_prefix)

    @SMALL
    @given(**REBUILD_ARGS)
    def test_arbitrary_architecture_record(self, valid_file, tmp_path, record, hardening, fields, device, allow_pickle):
        _check_rebuild(valid_file, tmp_path / "f.safetensors", record, hardening, fields, device, allow_pickle)

    @pytest.mark.slow
    @LARGE
    @given(**REBUILD_ARGS)
    def test_arbitrary_architecture_record_many(self, valid_file, tmp_path, record, hardening, fields, device, allow_pickle):
        _check_rebuild(valid_file, tmp_path / "f.safetensors", record, hardening, fields, device, allow_pickle)

    @SMALL
    @given(blob=st.binary(max_size=600))
    def test_arbitrary_bytes(self, tmp_path, blob):
        path = tmp_path / "f.safetensors"
        path.write_bytes(blob)
        _load_both(path)

    @pytest.mark.parametrize("num_classes", [10**8, 10**12])
    def test_huge_class_count_refused_before_reading(self, valid_file, tmp_path, monkeypatch, num_classes):
        """A few-kB file claiming 10**8 classes (6 GB of head) is refused from its header, before any real build."""
        import midefend.io.checkpoints as checkpoints

        def no_reading(*args, **kwargs):
            raise AssertionError("tensors were read (and the architecture built) for a header that cannot fit")

        monkeypatch.setattr(checkpoints, "_read_tensors", no_reading)
        header, data = split_safetensors(valid_file)
        meta = json.loads(header["__metadata__"]["midefend"])
        header["__metadata__"]["midefend"] = json.dumps({**meta, "num_classes": num_classes})
        path = join_safetensors(tmp_path / "f.safetensors", header, data)
        with pytest.raises(MidefendError, match=f"does not fit midefend/resnet_small with {num_classes} classes: 2 shape mismatches"):
            load_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# erasing parameters


PAIR = st.tuples(st.floats(-0.5, 1.5), st.floats(-0.5, 1.5))
ERASE_KWARGS = st.fixed_dictionaries(
    {},
    optional={
        "p": maybe(st.floats(0, 1)),
        "scale": maybe(st.one_of(st.just((0.1, 0.4)), PAIR)),
        "ratio": maybe(st.one_of(st.just((1.0, 1.0)), st.tuples(st.floats(1e-9, 1e9), st.floats(1e-9, 1e9)), PAIR)),
        "value": maybe(st.one_of(st.sampled_from(["mean", "random", 0.0, 1.0, 300.0, -2.0, 1e6, 1e300]), st.lists(st.floats(-1, 2), min_size=1, max_size=4))),
        "normalized": maybe(st.one_of(st.none(), st.just("midre"), st.tuples(st.lists(st.floats(-1, 1), min_size=1, max_size=3), st.lists(st.floats(-1, 2), min_size=1, max_size=3)))),
        "mode": maybe(st.sampled_from(["box", "fixed", "pixels", "patches"])),
        "num_patches": maybe(st.integers(-1, 6)),
        "seed": maybe(st.integers(-5, 2**65)),
    },
)  # fmt: skip
CALL_KWARGS = st.fixed_dictionaries(
    {},
    optional={
        "inplace": st.booleans(),
        "index": maybe(st.one_of(st.integers(-3, 10**12), st.lists(st.integers(-2, 50), max_size=5))),
        "return_boxes": st.booleans(),
        "backend": maybe(st.sampled_from(["auto", "torch"]), weight=6),
    },
)
INPUT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8, torch.int64, torch.bool]


@st.composite
def batches(draw):
    """A tensor of arbitrary small shape (mostly 4-d) and dtype; sometimes not a tensor at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(ANY_VALUE)
    ndim = draw(st.sampled_from([4, 4, 4, 4, 3, 5, 2]))
    shape = [draw(st.integers(0 if i != 1 else 1, 5 if i < 2 else 9)) for i in range(ndim)]
    dtype = draw(st.sampled_from(INPUT_DTYPES))
    x = (torch.rand(shape) * 255).to(dtype) if dtype in (torch.uint8, torch.int64) else torch.rand(shape).to(dtype)
    if draw(st.booleans()) and ndim == 4 and all(shape):
        x = x.contiguous(memory_format=torch.channels_last)
    if draw(st.integers(0, 9)) == 0 and ndim == 4 and shape[0] > 0:
        x = x[:1].expand(shape[0], *shape[1:])  # a view without its own memory
    return x


def _check_erasing(x, erase_kwargs: dict, call_kwargs: dict, entry: str, device: str = "cpu") -> None:
    if isinstance(x, torch.Tensor):
        x = x.to(device)
    original = x.clone() if isinstance(x, torch.Tensor) else None
    if entry == "function":
        out = only_midefend_errors(lambda: random_erase_batch(x, **erase_kwargs, **call_kwargs))
        if isinstance(out, tuple):
            out = out[0]
    elif entry == "module":
        inplace = call_kwargs.get("inplace", False)
        module = only_midefend_errors(lambda: BatchRandomErasing(**erase_kwargs, inplace=inplace))
        out = None if module is None else only_midefend_errors(lambda: module(x, index=call_kwargs.get("index")))
    else:
        transform = only_midefend_errors(lambda: RandomErasingTransform(**erase_kwargs))
        out = None if transform is None else only_midefend_errors(lambda: transform(x, index=call_kwargs.get("index")))
    if out is None or original is None:
        return
    assert isinstance(out, torch.Tensor)
    assert out.shape == original.shape and out.dtype == original.dtype and out.device == original.device
    if out.is_floating_point():
        assert not bool(torch.isnan(out).any()) or bool(torch.isnan(original).any())
    if not (call_kwargs.get("inplace") and entry != "transform"):
        assert torch.equal(x, original) or (isinstance(x, torch.Tensor) and x.data_ptr() == out.data_ptr())


ERASING_ARGS = dict(x=batches(), erase_kwargs=ERASE_KWARGS, call_kwargs=CALL_KWARGS, entry=st.sampled_from(["function", "module", "transform"]))


class TestErasingParameters:
    @pytest.mark.parametrize("device", devices())
    @settings(max_examples=150, deadline=None)
    @given(**ERASING_ARGS)
    def test_arbitrary_parameters(self, x, erase_kwargs, call_kwargs, entry, device):
        _check_erasing(x, erase_kwargs, call_kwargs, entry, device)

    @pytest.mark.slow
    @settings(max_examples=5000, deadline=None)
    @given(**ERASING_ARGS)
    def test_arbitrary_parameters_many(self, x, erase_kwargs, call_kwargs, entry):
        _check_erasing(x, erase_kwargs, call_kwargs, entry)

    @SMALL
    @given(scale=PAIR, ratio=st.tuples(st.floats(1e-3, 1e3), st.floats(1e-3, 1e3)), size=st.tuples(st.integers(1, 12), st.integers(1, 12)))
    def test_valid_geometry_erases_inside_the_image(self, scale, ratio, size):
        """Whenever the parameters are accepted, every erased pixel lies in one box inside the image."""
        x = torch.zeros(3, 1, *size)
        out = only_midefend_errors(lambda: random_erase_batch(x, scale=scale, ratio=ratio, value=1.0, return_boxes=True))
        if out is None:
            assert not (0 < scale[0] <= scale[1] <= 1 and ratio[0] <= ratio[1])  # refused only when invalid
            return
        y, boxes = out
        for b in range(3):
            expected = torch.zeros(size)
            top, left, h, w = (int(v[b]) for v in boxes[:4])
            expected[top : top + h, left : left + w] = 1.0
            assert torch.equal(y[b, 0], expected)

    @pytest.mark.parametrize("shape", [(3, 0, 4), (3, 4, 0), (2, 3, 0, 7), (0, 1, 0)])
    def test_images_without_pixels(self, shape):
        """Nothing to erase: returned unchanged, as random_erase_batch and BatchRandomErasing do.

        A fuzz finding: the transform's ``reshape(-1, C, H, W)`` used to fail when ``C * H * W == 0``.
        """
        x = torch.rand(shape)
        assert torch.equal(RandomErasingTransform()(x), x)

    def test_image_without_channels(self):
        with pytest.raises(MidefendError, match="^value='mean' is defined for 1 or 3 channels, got an input with 0 channels$"):
            RandomErasingTransform()(torch.rand(2, 0, 5, 5))


# ---------------------------------------------------------------------------------------------
# the command line


def _option_value(valid):
    # Wrong values: text, zero, negative and non-finite numbers. Not huge positive counts: a user who asks
    # for 10**12 candidates or steps gets what they asked for (an attack that needs terabytes or years).
    return maybe(valid, weight=2, other=st.one_of(st.text(max_size=6), st.integers(-(2**65), 0).map(str), st.sampled_from(["", "-1", "nan", "inf", "1e9", "0.5"])))


VERIFY_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "--classes": _option_value(st.sampled_from(["all", "0-3", "1,2", "3", "0-0"])),
        "--per-class": _option_value(st.integers(1, 2).map(str)),
        "--candidates": _option_value(st.integers(1, 3).map(str)),
        "--steps": _option_value(st.integers(1, 2).map(str)),
        "--loss": _option_value(st.sampled_from(["poincare", "max-margin", "logit", "cross-entropy"])),
        "--augment": _option_value(st.sampled_from(["none", "crop", "crop+flip"])),
        "--seed": _option_value(st.integers(0, 2**31).map(str)),
        "--device": _option_value(st.just("cpu")),
    },
)
TRAIN_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "--defense": _option_value(st.sampled_from(["nodef", "midre", "calor", "midre+calor"])),
        "--rank": _option_value(st.integers(1, 4).map(str)),
        "--erase-max": _option_value(st.sampled_from(["0.4", "0.8", "1"])),
        "--lr": _option_value(st.sampled_from(["0.001", "0.01"])),
        "--batch-size": _option_value(st.integers(2, 8).map(str)),
        "--augment": _option_value(st.sampled_from(["none", "flip", "light", "strong", "digits"])),
        "--seed": _option_value(st.integers(0, 2**31).map(str)),
        "--split-seed": _option_value(st.integers(0, 9).map(str)),
        "--device": _option_value(st.just("cpu")),
    },
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    from reliability_fixtures import make_workspace

    return make_workspace(tmp_path_factory.mktemp("cli-fuzz"))


def _check_command(args: list[object]) -> None:
    """Exit 0, or exit 1/2 with exactly one ``error: ...`` line on stderr; never an escaped exception."""
    from reliability_fixtures import invoke

    result = invoke(*args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code != 0:
        assert result.exit_code in (1, 2), (result.exit_code, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("note: ")]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "Traceback" not in result.output


def _flatten(options: dict[str, str]) -> list[str]:
    return [item for pair in options.items() for item in pair]


class TestCommandLine:
    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(options=VERIFY_OPTIONS)
    def test_verify(self, workspace, tmp_path, options):
        _check_command(["verify", workspace["target"], "--eval-model", workspace["eval"], "--attack", "miface",
                        "--out", tmp_path / "run", "-q", *_flatten(options)])  # fmt: skip

    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(options=TRAIN_OPTIONS)
    def test_train(self, workspace, tmp_path, options):
        _check_command(["train", "--data", workspace["data"], "--out", tmp_path / "m.safetensors", "--size", "16",
                        "--channels", "1", "--epochs", "1", "--calor-epochs", "1", "--ca-epochs", "1", "-q", *_flatten(options)])  # fmt: skip
