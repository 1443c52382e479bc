"""midefend.io: safetensors checkpoints that rebuild themselves, header-only reading, research imports.

Each bad file gets its own test with the exact error class and message; the
fuzz test at the end checks that arbitrary damage only ever yields a MidefendError.
"""

from __future__ import annotations

import builtins
import doctest
import json
import re
import pickle
import struct
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from conftest import devices
from midefend.architectures import build_model
from midefend.defenses.heads import LowRankTanhHead
from midefend.defenses.surgery import check_hardened, harden
from midefend.errors import CheckpointError, ConfigError, MidefendError, UnsafeCheckpointError
from midefend.io import checkpoints as ckpt_module
from midefend.io import header as header_module
from midefend.io import legacy as legacy_module
from midefend.io import schema as schema_module
from midefend.io.checkpoints import (
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
    strip_state_dict_prefixes,
)
from midefend.io.header import read_checkpoint_header
from midefend.io.legacy import import_research_checkpoint
from midefend.io.schema import METADATA_KEY, encode_metadata, make_metadata

# Small models of each source, with the arguments save_checkpoint needs.
TIMM = {
    "arch": "timm/test_resnet",
    "arch_kwargs": {"in_chans": 1},
    "num_classes": 7,
    "input_size": (1, 32, 32),
    "mean": (0.5,),
    "std": (0.25,),
}
TORCHVISION = {
    "arch": "torchvision/mobilenet_v3_small",
    "num_classes": 5,
    "input_size": (3, 32, 32),
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
}
SPECS = {"timm": TIMM, "torchvision": TORCHVISION}


def make_model(spec: dict) -> nn.Module:
    """The architecture with non-trivial BatchNorm statistics (a few train-mode passes)."""
    torch.manual_seed(0)
    model = build_model(spec["arch"], num_classes=spec["num_classes"], **spec.get("arch_kwargs", {}))
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(4, *spec["input_size"]))
    return model.eval()


def inputs(spec: dict, n: int = 3) -> torch.Tensor:
    return torch.rand(n, *spec["input_size"], generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def timm_model() -> nn.Module:
    return make_model(TIMM)


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory, timm_model) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "timm.safetensors"
    save_checkpoint(timm_model, path, **TIMM, defense={"name": "none"}, extra={"acc": 0.5})
    return path


def _header_and_data(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write_with_header(path: Path, header: dict, data: bytes) -> Path:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def _with_metadata(src: Path, dst: Path, metadata: dict | None) -> Path:
    """Copy ``src`` with its safetensors ``__metadata__`` replaced (``None``: removed)."""
    header, data = _header_and_data(src)
    header.pop("__metadata__", None)
    if metadata is not None:
        header["__metadata__"] = metadata
    return _write_with_header(dst, header, data)


def _midefend_meta(path: Path) -> dict:
    header, _ = _header_and_data(path)
    return json.loads(header["__metadata__"][METADATA_KEY])


class TestRoundTrip:
    @pytest.mark.parametrize("source", ["timm", "torchvision"])
    def test_identical_logits_and_metadata(self, tmp_path, source):
        spec = SPECS[source]
        model = make_model(spec)
        path = save_checkpoint(model, tmp_path / "m.safetensors", **spec, defense={"name": "midre", "scale": [0.1, 0.4]})
        assert path == tmp_path / "m.safetensors"
        ckpt = load_checkpoint(path)
        assert isinstance(ckpt, Checkpoint)
        assert type(ckpt.model) is type(model)
        assert not ckpt.model.training
        x = inputs(spec)
        with torch.no_grad():
            assert torch.equal(ckpt.model(x), model(x))
        assert ckpt.arch == spec["arch"]
        assert ckpt.arch_kwargs == spec.get("arch_kwargs", {})
        assert ckpt.num_classes == spec["num_classes"]
        assert ckpt.input_size == spec["input_size"]
        assert ckpt.mean == spec["mean"] and ckpt.std == spec["std"]
        assert ckpt.defense == {"name": "midre", "scale": [0.1, 0.4]}
        assert ckpt.hardening is None and ckpt.extra is None
        assert ckpt.path == path
        for key, value in model.state_dict().items():
            assert torch.equal(ckpt.model.state_dict()[key], value), key

    @pytest.mark.parametrize("source", ["timm", "torchvision"])
    def test_hardened_identical_logits(self, tmp_path, source):
        spec = SPECS[source]
        model = make_model(spec)
        report = harden(model, rank=3, calibration=torch.rand(8, *spec["input_size"]))
        model.train()  # give the new head's BatchNorm non-trivial statistics
        with torch.no_grad():
            model(torch.rand(4, *spec["input_size"]))
        model.eval()
        path = save_checkpoint(model, tmp_path / "h.safetensors", **spec, defense={"name": "calor", "rank": 3})
        ckpt = load_checkpoint(path)
        x = inputs(spec)
        with torch.no_grad():
            assert torch.equal(ckpt.model(x), model(x))
        assert ckpt.hardening == report.to_dict() == model.midefend_hardening
        assert ckpt.hardening["init"] == "svd"  # the record of how it was made, not of the rebuild
        assert ckpt.model.midefend_hardening == report.to_dict()
        assert check_hardened(ckpt.model) == check_hardened(model)
        assert isinstance(ckpt.model.get_submodule(report.head_paths[0]), LowRankTanhHead)
        assert read_checkpoint_header(path)["hardening"] == report.to_dict()
        # Saving the loaded model again keeps the same record and weights.
        again = load_checkpoint(save_checkpoint(ckpt.model, tmp_path / "again.safetensors", **spec))
        assert again.hardening == report.to_dict()
        with torch.no_grad():
            assert torch.equal(again.model(x), model(x))

    @pytest.mark.parametrize("save_device", devices())
    @pytest.mark.parametrize("load_device", devices())
    def test_devices(self, tmp_path, save_device, load_device):
        model = make_model(TIMM).to(save_device)
        path = save_checkpoint(model, tmp_path / "m.safetensors", **TIMM)
        ckpt = load_checkpoint(path, device=load_device)
        assert {p.device.type for p in ckpt.model.parameters()} == {load_device}
        x = inputs(TIMM)
        with torch.no_grad():
            expected = model(x.to(save_device)).cpu()
            torch.testing.assert_close(ckpt.model(x.to(load_device)).cpu(), expected, rtol=1e-4, atol=1e-5)

    def test_no_temp_files_left(self, tmp_path, timm_model):
        save_checkpoint(timm_model, tmp_path / "a.safetensors", **TIMM)
        assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]

    def test_normalize(self, timm_file):
        ckpt = load_checkpoint(timm_file)
        x = torch.rand(2, 1, 4, 4)
        torch.testing.assert_close(ckpt.normalize(x), (x - 0.5) / 0.25, rtol=0, atol=0)

    def test_half_precision_kept(self, tmp_path):
        model = make_model(TIMM).to(torch.float16)
        path = save_checkpoint(model, tmp_path / "h.safetensors", **TIMM)
        assert {t["dtype"] for t in read_checkpoint_header(path)["tensors"].values()} == {"F16", "I64"}
        ckpt = load_checkpoint(path)
        assert next(ckpt.model.parameters()).dtype == torch.float16
        for key, value in model.state_dict().items():
            assert torch.equal(ckpt.model.state_dict()[key], value), key

    def test_compiled_model_saves_without_prefix(self, tmp_path, timm_model):
        # Wrapping only: torch.compile compiles lazily on the first call, which never happens here.
        path = save_checkpoint(torch.compile(timm_model), tmp_path / "c.safetensors", **TIMM)
        names = list(read_checkpoint_header(path)["tensors"])
        assert names and not any(n.startswith(("_orig_mod.", "module.")) for n in names)
        assert set(names) == set(timm_model.state_dict())

    def test_data_parallel_model_saves_without_prefix(self, tmp_path, timm_model):
        wrapped = torch.compile(nn.DataParallel(timm_model))
        path = save_checkpoint(wrapped, tmp_path / "d.safetensors", **TIMM)
        assert set(read_checkpoint_header(path)["tensors"]) == set(timm_model.state_dict())

    @pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
    def test_prefixed_file_is_stripped_on_load(self, tmp_path, timm_model, prefix):
        meta = make_metadata(**TIMM)
        tensors = {prefix + k: v.contiguous() for k, v in timm_model.state_dict().items()}
        save_file(tensors, str(tmp_path / "p.safetensors"), metadata=encode_metadata(meta))
        ckpt = load_checkpoint(tmp_path / "p.safetensors")
        x = inputs(TIMM)
        with torch.no_grad():
            assert torch.equal(ckpt.model(x), timm_model(x))

    def test_existing_file_replaced(self, tmp_path, timm_model):
        path = tmp_path / "m.safetensors"
        path.write_bytes(b"old")
        save_checkpoint(timm_model, path, **TIMM)
        assert read_checkpoint_header(path)["num_classes"] == 7

    def test_tied_weights_are_saved(self, tmp_path):
        # safetensors refuses tensors sharing memory; the saver copies the second name.
        model = make_model(TIMM)
        model.register_buffer("fc_weight_alias", model.fc.weight.data)
        with pytest.raises(ConfigError, match=r"1 keys unexpected by the architecture \(fc_weight_alias\)"):
            save_checkpoint(model, tmp_path / "t.safetensors", **TIMM)

    def test_doctests(self):
        for module in (ckpt_module, legacy_module, schema_module, header_module):
            result = doctest.testmod(module, raise_on_error=False)
            assert result.attempted > 0 and result.failed == 0, module.__name__


class TestStripPrefixes:
    @pytest.mark.parametrize(
        ("keys", "expected"),
        [
            (["module.a", "module.b.c"], ["a", "b.c"]),
            (["_orig_mod.a", "_orig_mod.b"], ["a", "b"]),
            (["module._orig_mod.a"], ["a"]),
            (["_orig_mod.module.a"], ["a"]),
            (["module.a", "b"], ["module.a", "b"]),  # not shared by every key: kept
            (["modulex.a"], ["modulex.a"]),
            ([], []),
        ],
    )
    def test_cases(self, keys, expected):
        assert list(strip_state_dict_prefixes({k: i for i, k in enumerate(keys)})) == expected

    def test_values_kept_in_order(self):
        assert strip_state_dict_prefixes({"module.x": 1, "module.y": 2}) == {"x": 1, "y": 2}

    def test_model_with_own_module_child_is_not_stripped(self, tmp_path, monkeypatch):
        # A model whose only child is called "module": its keys fit as they are and must stay.
        from midefend import architectures

        def build(num_classes, in_chans=3):
            wrapper = nn.Module()
            wrapper.module = nn.Linear(in_chans, num_classes)
            wrapper.forward = lambda x: wrapper.module(x.flatten(1))
            return wrapper

        monkeypatch.setitem(architectures._REGISTRY, "midefend/_test_module_child", build)  # keyed by full name
        spec = {"arch": "midefend/_test_module_child", "num_classes": 2, "input_size": (3, 1, 1), "mean": (0,) * 3, "std": (1,) * 3}
        model = build(2)
        path = save_checkpoint(model, tmp_path / "m.safetensors", **spec)
        assert list(read_checkpoint_header(path)["tensors"]) == ["module.bias", "module.weight"]
        ckpt = load_checkpoint(path)
        assert torch.equal(ckpt.model.module.weight, model.module.weight)


class TestHeader:
    def test_fields(self, timm_file, timm_model):
        info = read_checkpoint_header(timm_file)
        assert json.loads(json.dumps(info)) == info  # JSON-serialisable as is
        state = timm_model.state_dict()
        assert info["arch"] == "timm/test_resnet" and info["arch_kwargs"] == {"in_chans": 1}
        assert info["num_classes"] == 7 and info["input_size"] == [1, 32, 32]
        assert info["mean"] == [0.5] and info["std"] == [0.25]
        assert info["defense"] == {"name": "none"} and info["extra"] == {"acc": 0.5}
        assert info["hardening"] is None and info["format_version"] == 1
        assert info["path"] == str(timm_file)
        assert info["num_tensors"] == len(state)
        assert info["num_parameters"] == sum(v.numel() for v in state.values())
        assert info["tensor_bytes"] == sum(v.numel() * v.element_size() for v in state.values())
        assert info["file_bytes"] == timm_file.stat().st_size
        dtype_codes = {torch.float32: "F32", torch.int64: "I64"}
        assert info["tensors"] == {k: {"dtype": dtype_codes[v.dtype], "shape": list(v.shape)} for k, v in state.items()}

    def test_reads_only_the_header(self, timm_file, monkeypatch):
        real_open = builtins.open
        read_sizes: list[int] = []

        class Spy:
            def __init__(self, handle):
                self._handle = handle

            def read(self, size=-1):
                read_sizes.append(size)
                return self._handle.read(size)

            def __getattr__(self, name):
                return getattr(self._handle, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._handle.close()

        monkeypatch.setattr(header_module, "open", lambda *a, **k: Spy(real_open(*a, **k)), raising=False)
        read_checkpoint_header(timm_file)
        header_len = struct.unpack("<Q", timm_file.read_bytes()[:8])[0]
        assert read_sizes == [8, header_len]
        assert header_len + 8 < timm_file.stat().st_size / 100  # the data is far bigger than what was read


class TestSaveErrors:
    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"input_size": (1, 32)}, r"input_size must be 3 positive integers \(C, H, W\), got \[1, 32\]"),
            ({"input_size": (1, 0, 32)}, r"input_size must be 3 positive integers"),
            ({"mean": (0.5, 0.5)}, r"mean must be 1 finite numbers \(one per input channel\), got \[0.5, 0.5\]"),
            ({"mean": (float("nan"),)}, r"mean must be 1 finite numbers"),
            ({"std": (0.0,)}, r"std must be 1 positive finite numbers \(one per input channel\), got \[0.0\]"),
            ({"num_classes": 0}, r"num_classes must be a positive integer, got 0"),
            ({"num_classes": True}, r"num_classes must be a positive integer, got True"),
            ({"arch": ""}, r"arch must be a non-empty string like 'timm/resnet18', got ''"),
            ({"arch": "timm/not_a_net"}, r"cannot build architecture 'timm/not_a_net': unknown timm architecture"),
            ({"arch": "keras/resnet"}, r"unknown architecture .keras/resnet. \(registered: "),
            ({"arch_kwargs": {"in_chans": 1, "num_classes": 3}}, r"arch_kwargs must not contain num_classes"),
            ({"arch_kwargs": {"in_chans": 1, "bogus": 1}}, r"cannot build architecture 'timm/test_resnet' with arch_kwargs=\{'in_chans': 1, 'bogus': 1\}: TypeError"),
            ({"arch_kwargs": {}}, r"input_size has 1 channel\(s\) but the architecture is built with in_chans=3"),
            ({"arch_kwargs": [1]}, r"arch_kwargs must be a JSON object \(dict\) or None, got list"),
            ({"num_classes": 8}, r"does not describe this model: 2 shape mismatches \(fc.weight \(7, 96\) in model vs \(8, 96\) in architecture"),
            ({"arch": "timm/test_efficientnet"}, r"does not describe this model: \d+ keys missing from the model"),
        ],
    )
    def test_bad_arguments(self, tmp_path, timm_model, change, message):
        with pytest.raises(ConfigError, match=message):
            save_checkpoint(timm_model, tmp_path / "m.safetensors", **{**TIMM, **change})
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("defense", {"x": {1, 2}}, r"defense must be JSON-serialisable: Object of type set"),
            ("defense", {"x": float("inf")}, r"defense must be JSON-serialisable: Out of range float"),
            ("extra", {"t": torch.zeros(1)}, r"extra must be JSON-serialisable: Object of type Tensor"),
            ("extra", "acc=0.9", r"extra must be a JSON object \(dict\) or None, got str"),
        ],
    )
    def test_non_json_metadata(self, tmp_path, timm_model, field, value, message):
        with pytest.raises(ConfigError, match=message):
            save_checkpoint(timm_model, tmp_path / "m.safetensors", **TIMM, **{field: value})

    def test_not_a_module(self, tmp_path):
        with pytest.raises(ConfigError, match=r"model must be a torch.nn.Module, got dict"):
            save_checkpoint({}, tmp_path / "m.safetensors", **TIMM)

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
    def test_non_finite_weights_refused_and_old_file_kept(self, tmp_path, bad):
        model = make_model(TIMM)
        path = tmp_path / "m.safetensors"
        path.write_bytes(b"previous")
        with torch.no_grad():
            model.fc.weight[0, 0] = bad
        with pytest.raises(CheckpointError, match=r"has NaN or infinite values in 1 tensor\(s\): fc.weight"):
            save_checkpoint(model, path, **TIMM)
        assert path.read_bytes() == b"previous"
        assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]

    def test_hand_made_low_rank_head_refused(self, tmp_path):
        model = make_model(TIMM)
        model.fc = LowRankTanhHead(96, 7, rank=2)
        with pytest.raises(ConfigError, match=r"model has LowRankTanhHead\(s\) at fc but no model.midefend_hardening record"):
            save_checkpoint(model, tmp_path / "m.safetensors", **TIMM)

    def test_missing_output_folder(self, tmp_path, timm_model):
        with pytest.raises(FileNotFoundError, match=r"output folder '.*missing' does not exist"):
            save_checkpoint(timm_model, tmp_path / "missing" / "m.safetensors", **TIMM)

    def test_writer_failing_half_way_leaves_nothing(self, tmp_path, timm_model, monkeypatch):
        import safetensors.torch

        def half_write(tensors, filename, metadata=None):
            Path(filename).write_bytes(b"\x00" * 100)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(safetensors.torch, "save_file", half_write)
        with pytest.raises(OSError, match="No space left on device"):
            save_checkpoint(timm_model, tmp_path / "m.safetensors", **TIMM)
        assert list(tmp_path.iterdir()) == []


class TestLoadErrors:
    def test_missing_file(self, tmp_path):
        with pytest.raises(CheckpointError, match=r"checkpoint '.*nope.safetensors' does not exist"):
            load_checkpoint(tmp_path / "nope.safetensors")

    def test_folder(self, tmp_path):
        with pytest.raises(CheckpointError, match=r"is a folder, expected a .safetensors file"):
            load_checkpoint(tmp_path)

    def test_zero_bytes(self, tmp_path):
        (tmp_path / "z.safetensors").write_bytes(b"")
        with pytest.raises(CheckpointError, match=r"checkpoint '.*z.safetensors' is empty \(0 bytes\)"):
            load_checkpoint(tmp_path / "z.safetensors")

    @pytest.mark.parametrize(
        ("keep", "message"),
        [
            (lambda n: 5, r"is too short \(5 bytes\) to be a safetensors file"),
            (lambda n: 8, r"its first 8 bytes announce a \d+-byte header but the file has 8 bytes"),
            (lambda n: 8 + n // 2, r"announce a \d+-byte header but the file has \d+ bytes \(truncated or not safetensors\)"),
            (lambda n: 8 + n, r"is truncated: its header describes \d+ bytes of tensor data but the file holds only 0"),
            (lambda n: 8 + n + 1000, r"is truncated: its header describes \d+ bytes of tensor data but the file holds only 1000"),
            (lambda n: -1, r"is truncated: its header describes (\d+) bytes of tensor data but the file holds only"),
        ],
    )
    def test_truncated(self, tmp_path, timm_file, keep, message):
        raw = timm_file.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        (tmp_path / "t.safetensors").write_bytes(raw[: keep(n)])
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / "t.safetensors")

    def test_trailing_bytes(self, tmp_path, timm_file):
        (tmp_path / "t.safetensors").write_bytes(timm_file.read_bytes() + b"junk")
        with pytest.raises(CheckpointError, match=r"is corrupt: 4 bytes after the last tensor are not described"):
            load_checkpoint(tmp_path / "t.safetensors")

    def test_garbage(self, tmp_path):
        garbage = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        (tmp_path / "g.safetensors").write_bytes(bytes(garbage.tolist()))
        with pytest.raises(CheckpointError, match=r"is not a valid safetensors file: its first 8 bytes announce"):
            load_checkpoint(tmp_path / "g.safetensors")

    @pytest.mark.parametrize(
        ("blob", "message"),
        [
            (b"{not json", r"is not a valid safetensors file: its header is not JSON"),
            (b"\xff\xfe{}", r"its header is not JSON"),
            (b"[1, 2]", r"its header is not a JSON object"),
            (b'{"__metadata__": {"a": 1}}', r"safetensors __metadata__ must map strings to strings"),
            (b'{"w": {"dtype": "F32", "shape": [1]}}', r"tensor 'w' must have exactly the fields dtype, shape and data_offsets"),
            (b'{"w": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}', r"tensor 'w' has unsupported dtype 'Q7'"),
            (b'{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', r"tensor 'w' has an invalid shape \[-1\]"),
            (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}', r"tensor 'w' has invalid data_offsets \[4, 0\]"),
        ],
    )
    def test_bad_json_header(self, tmp_path, blob, message):
        path = tmp_path / "h.safetensors"
        path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\x00" * 4)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)

    def test_header_claims_wrong_shape(self, tmp_path, timm_file):
        header, data = _header_and_data(timm_file)
        header["fc.weight"]["shape"] = [9, 96]  # the data_offsets still span 7 x 96 floats
        _write_with_header(tmp_path / "w.safetensors", header, data)
        with pytest.raises(
            CheckpointError,
            match=r"tensor 'fc.weight' claims shape \[9, 96\] of F32 \(3456 bytes\) but its data_offsets span 2688 bytes",
        ):
            load_checkpoint(tmp_path / "w.safetensors")

    def test_overlapping_tensors(self, tmp_path, timm_file):
        header, data = _header_and_data(timm_file)
        # fc.bias 4 bytes earlier: it overlaps the tensor before it (and leaves 4 bytes after it undescribed)
        begin, end = header["fc.bias"]["data_offsets"]
        header["fc.bias"]["data_offsets"] = [begin - 4, end - 4]
        _write_with_header(tmp_path / "o.safetensors", header, data)
        with pytest.raises(CheckpointError, match=rf"tensor 'fc.bias' overlaps the previous tensor \(data_offsets start at {begin - 4}\)$"):
            load_checkpoint(tmp_path / "o.safetensors")

    def test_gap_between_tensors(self, tmp_path, timm_file):
        # The last tensor moved 4 bytes on, with 4 spare bytes inserted before it: every range is the right size,
        # nothing overlaps and the file's length matches the header, but 4 bytes belong to no tensor.
        header, data = _header_and_data(timm_file)
        key = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
        begin, end = header[key]["data_offsets"]
        header[key]["data_offsets"] = [begin + 4, end + 4]
        _write_with_header(tmp_path / "g4.safetensors", header, data[:begin] + b"\x00" * 4 + data[begin:])
        with pytest.raises(CheckpointError, match=rf"tensor '{re.escape(key)}' leaves a gap at byte {begin} \(data_offsets start at {begin + 4}\)$"):
            load_checkpoint(tmp_path / "g4.safetensors")

    def test_consistent_header_wrong_shapes_for_architecture(self, tmp_path, timm_model):
        # Weights of a 9-class model under metadata that says 7 classes.
        other = build_model("timm/test_resnet", num_classes=9, in_chans=1)
        tensors = {k: v.contiguous() for k, v in other.state_dict().items()}
        save_file(tensors, str(tmp_path / "w.safetensors"), metadata=encode_metadata(make_metadata(**TIMM)))
        with pytest.raises(
            CheckpointError,
            match=r"does not fit timm/test_resnet with 7 classes: 2 shape mismatches \(fc.weight \(9, 96\) in file vs \(7, 96\) in model",
        ):
            load_checkpoint(tmp_path / "w.safetensors")

    def test_missing_and_unexpected_keys(self, tmp_path, timm_model):
        tensors = {k: v.contiguous() for k, v in timm_model.state_dict().items() if k != "fc.bias"}
        tensors["extra.weight"] = torch.zeros(2)
        save_file(tensors, str(tmp_path / "k.safetensors"), metadata=encode_metadata(make_metadata(**TIMM)))
        with pytest.raises(
            CheckpointError, match=r"1 keys missing from the file \(fc.bias\); 1 keys unexpected by the model \(extra.weight\)"
        ):
            load_checkpoint(tmp_path / "k.safetensors")

    def test_wrong_architecture(self, tmp_path, timm_file):
        meta = _midefend_meta(timm_file)
        meta["arch"] = "timm/test_efficientnet"
        _with_metadata(timm_file, tmp_path / "a.safetensors", {METADATA_KEY: json.dumps(meta)})
        with pytest.raises(CheckpointError, match=r"does not fit timm/test_efficientnet with 7 classes: \d+ keys missing from the file"):
            load_checkpoint(tmp_path / "a.safetensors")

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"arch": "timm/not_a_net"}, r"cannot build architecture 'timm/not_a_net': unknown timm architecture 'not_a_net'"),
            ({"arch": "torchvision/not_a_net"}, r"cannot build architecture 'torchvision/not_a_net': unknown torchvision"),
            ({"arch": "midefend/not_a_net"}, r"cannot build architecture 'midefend/not_a_net': unknown architecture 'midefend/not_a_net'"),
            ({"arch_kwargs": {"in_chans": 1, "bogus": 3}}, r"cannot build architecture 'timm/test_resnet' with arch_kwargs=.*TypeError"),
        ],
    )
    def test_unknown_architecture(self, tmp_path, timm_file, change, message):
        meta = {**_midefend_meta(timm_file), **change}
        _with_metadata(timm_file, tmp_path / "a.safetensors", {METADATA_KEY: json.dumps(meta)})
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / "a.safetensors")

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            (lambda h: {**h, "heads": [{**h["heads"][0], "path": "nohead"}]}, r"cannot re-create the hardened head\(s\): ResNet has no submodule 'nohead' to harden"),
            (lambda h: {**h, "rank": 50}, r"cannot re-create the hardened head\(s\): rank must be in \[1, 7\]"),
            (lambda h: {**h, "activation": "swish"}, r"cannot re-create the hardened head\(s\): activation must be one of"),
            (lambda h: {k: v for k, v in h.items() if k != "heads"}, r"hardening metadata is malformed \(KeyError: 'heads'\)"),
        ],
    )
    def test_bad_hardening_record(self, tmp_path, change, message):
        model = make_model(TIMM)
        harden(model, rank=3, init="random")
        path = save_checkpoint(model, tmp_path / "h.safetensors", **TIMM)
        meta = _midefend_meta(path)
        meta["hardening"] = change(meta["hardening"])
        _with_metadata(path, tmp_path / "bad.safetensors", {METADATA_KEY: json.dumps(meta)})
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / "bad.safetensors")

    def test_metadata_missing(self, tmp_path, timm_file):
        _with_metadata(timm_file, tmp_path / "m.safetensors", None)
        with pytest.raises(CheckpointError, match=r"has no midefend metadata \(no 'midefend' key in its safetensors header\)"):
            load_checkpoint(tmp_path / "m.safetensors")

    def test_metadata_other_keys_only(self, tmp_path, timm_file):
        _with_metadata(timm_file, tmp_path / "m.safetensors", {"format": "pt"})
        with pytest.raises(CheckpointError, match=r"has no midefend metadata"):
            read_checkpoint_header(tmp_path / "m.safetensors")

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("{oops", r"its 'midefend' metadata is not valid JSON"),
            ("[1, 2]", r"metadata must be a JSON object, got list"),
            (lambda m: {k: v for k, v in m.items() if k != "num_classes"}, r"metadata does not follow the midefend schema \(missing num_classes\)"),
            (lambda m: {**m, "colour": "red"}, r"metadata does not follow the midefend schema \(unknown colour\)"),
            (lambda m: {**m, "format_version": 2}, r"metadata field format_version must be 1, got 2 \(written by a newer midefend"),
            (lambda m: {**m, "format_version": "1"}, r"metadata field format_version must be 1, got '1'$"),
            (lambda m: {**m, "num_classes": "seven"}, r"metadata field num_classes must be a positive integer, got 'seven'"),
            (lambda m: {**m, "input_size": [1, 32]}, r"metadata field input_size must be 3 positive integers"),
            (lambda m: {**m, "input_size": [3, 32, 32]}, r"metadata field input_size has 3 channel\(s\) but the architecture is built with in_chans=1"),
            (lambda m: {**m, "std": [-1.0]}, r"metadata field std must be 1 positive finite numbers"),
            (lambda m: {**m, "defense": [1]}, r"metadata field defense must be a JSON object \(dict\) or None, got list"),
            (lambda m: {**m, "midefend_version": 1}, r"metadata field midefend_version must be a string, got 1"),
        ],
    )
    def test_metadata_wrong_schema(self, tmp_path, timm_file, value, message):
        text = value if isinstance(value, str) else json.dumps(value(_midefend_meta(timm_file)))
        path = _with_metadata(timm_file, tmp_path / "m.safetensors", {METADATA_KEY: text})
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint_header(path)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)

    def test_nan_weights_in_file(self, tmp_path, timm_model):
        tensors = {k: v.clone() for k, v in timm_model.state_dict().items()}
        tensors["conv1.0.weight"][0, 0, 0, 0] = float("nan")
        tensors["fc.bias"][1] = float("inf")
        save_file(tensors, str(tmp_path / "n.safetensors"), metadata=encode_metadata(make_metadata(**TIMM)))
        with pytest.raises(CheckpointError, match=r"has NaN or infinite values in 2 tensor\(s\): conv1.0.weight, fc.bias"):
            load_checkpoint(tmp_path / "n.safetensors")

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"device": "gpu7"}, r"device must be a torch device such as 'cpu' or 'cuda:0', got 'gpu7'"),
            ({"device": 3.5}, r"device must be a torch device"),
            ({"allow_pickle": "yes"}, r"allow_pickle must be True or False, got 'yes'"),
        ],
    )
    def test_bad_arguments(self, timm_file, kwargs, message):
        with pytest.raises(ConfigError, match=message):
            load_checkpoint(timm_file, **kwargs)

    def test_cuda_unavailable(self, timm_file, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.raises(ConfigError, match=r"device 'cuda:1' is not available \(no CUDA device found\)"):
            load_checkpoint(timm_file, device="cuda:1")


class _Payload:
    """Unpickling this object runs code that creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class TestPickle:
    @pytest.fixture
    def pickled(self, tmp_path, timm_model):
        path = tmp_path / "research.pt"
        state = {"module." + k: v for k, v in timm_model.state_dict().items()}
        torch.save({"epoch": 3, "model_state_dict": state}, path)
        return path

    @pytest.mark.parametrize("name", ["research.pt", "looks-safe.safetensors"])
    def test_refused_before_unpickling(self, tmp_path, timm_model, monkeypatch, name):
        path = tmp_path / name
        torch.save(timm_model.state_dict(), path)

        def no_unpickling(*args, **kwargs):
            raise AssertionError("torch.load must not be called")

        monkeypatch.setattr(torch, "load", no_unpickling)
        monkeypatch.setattr(pickle, "load", no_unpickling)
        for call in (
            lambda: load_checkpoint(path),
            lambda: read_checkpoint_header(path),
            lambda: import_research_checkpoint(path, **TIMM),
        ):
            with pytest.raises(UnsafeCheckpointError, match=r"is a pickled PyTorch file"):
                call()

    def test_legacy_pickle_refused(self, tmp_path):
        path = tmp_path / "old.pth"
        with open(path, "wb") as handle:
            pickle.dump({"w": [1.0]}, handle, protocol=2)
        with pytest.raises(UnsafeCheckpointError, match=r"is a pickled PyTorch file"):
            load_checkpoint(path)

    def test_payload_is_real(self, tmp_path):
        # Guard for the tests below: unpickled unsafely, the payload does create its file.
        marker = tmp_path / "created-by-plain-pickle"
        pickle.loads(pickle.dumps(_Payload(marker)))
        assert marker.read_text() == "pwned"

    @pytest.mark.parametrize("where", ["top", "nested"])
    def test_malicious_reduce_refused_under_flag(self, tmp_path, where):
        marker = tmp_path / "pwned.txt"
        path = tmp_path / "evil.pt"
        obj = _Payload(marker) if where == "top" else {"model_state_dict": {"w": torch.zeros(1)}, "cfg": _Payload(marker)}
        torch.save(obj, path)
        with pytest.raises(
            UnsafeCheckpointError,
            match=r"torch.load\(weights_only=True\) refuses to unpickle \(nothing was executed\): Unsupported global: GLOBAL exec was not an allowed global by default$",
        ):
            import_research_checkpoint(path, **TIMM, allow_pickle=True)
        with pytest.raises(UnsafeCheckpointError, match=r"refuses to unpickle"):
            load_checkpoint(path, allow_pickle=True)
        assert not marker.exists()

    def test_load_checkpoint_points_to_importer(self, pickled):
        with pytest.raises(CheckpointError, match=r"pickled state dict without architecture metadata; rebuild it with midefend.io.import_research_checkpoint"):
            load_checkpoint(pickled, allow_pickle=True)

    def test_import_model_state_dict(self, pickled, timm_model, tmp_path):
        ckpt = import_research_checkpoint(pickled, **TIMM, allow_pickle=True, extra={"note": "x"})
        x = inputs(TIMM)
        with torch.no_grad():
            assert torch.equal(ckpt.model(x), timm_model(x))
        assert ckpt.extra == {"note": "x", "imported_from": "research.pt", "state_dict_key": "model_state_dict"}
        assert not ckpt.model.training
        # ... and it becomes a self-describing checkpoint.
        out = save_checkpoint(ckpt.model, tmp_path / "converted.safetensors", **TIMM, extra=ckpt.extra)
        with torch.no_grad():
            assert torch.equal(load_checkpoint(out).model(x), timm_model(x))

    @pytest.mark.parametrize(
        ("wrap", "key", "found"),
        [
            (lambda sd: {"state_dict": sd, "optimizer": {"lr": 0.1}}, None, "state_dict"),
            (lambda sd: sd, None, None),
            (lambda sd: {"net": sd}, "net", "net"),
        ],
    )
    def test_import_layouts(self, tmp_path, timm_model, wrap, key, found):
        path = tmp_path / "r.pth"
        torch.save(wrap(timm_model.state_dict()), path)
        ckpt = import_research_checkpoint(path, **TIMM, allow_pickle=True, key=key)
        assert ckpt.extra["state_dict_key"] == found
        assert torch.equal(ckpt.model.fc.weight, timm_model.fc.weight)

    @pytest.mark.parametrize(
        ("obj", "key", "message"),
        [
            ({"epoch": 3, "acc": 0.9}, None, r"has no state dict: no 'model_state_dict' or 'state_dict' entry and not a dict of tensors \(entries: 'epoch', 'acc'\)"),
            ({"net": {}}, "model", r"has no entry 'model' \(entries: 'net'\)"),
            ({"net": {"w": 1}}, "net", r"entry 'net' is not a state dict \('w' is not a named tensor\)"),
            ([torch.zeros(1)], None, r"holds a list, expected a dict of tensors"),
        ],
    )
    def test_import_without_state_dict(self, tmp_path, obj, key, message):
        path = tmp_path / "r.pt"
        torch.save(obj, path)
        with pytest.raises(CheckpointError, match=message):
            import_research_checkpoint(path, **TIMM, allow_pickle=True, key=key)

    def test_import_corrupt_pickle(self, tmp_path, pickled):
        (tmp_path / "cut.pt").write_bytes(pickled.read_bytes()[:200])
        with pytest.raises(CheckpointError, match=r"is not a readable PyTorch file"):
            import_research_checkpoint(tmp_path / "cut.pt", **TIMM, allow_pickle=True)

    def test_import_bare_safetensors(self, tmp_path, timm_model):
        path = tmp_path / "bare.safetensors"
        save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, str(path))
        ckpt = import_research_checkpoint(path, **TIMM)
        assert torch.equal(ckpt.model.fc.weight, timm_model.fc.weight)
        assert ckpt.extra == {"imported_from": "bare.safetensors", "state_dict_key": None}
        with pytest.raises(ConfigError, match=r"key='net' applies to pickled files only"):
            import_research_checkpoint(path, **TIMM, key="net")

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"allow_pickle": 1}, r"allow_pickle must be True or False, got 1"),
            ({"key": ""}, r"key must be a non-empty string or None, got ''"),
            ({"num_classes": -1}, r"num_classes must be a positive integer, got -1"),
        ],
    )
    def test_import_bad_arguments(self, pickled, kwargs, message):
        with pytest.raises(ConfigError, match=message):
            import_research_checkpoint(pickled, **{**TIMM, **kwargs})


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


class TestSchemaFuzz:
    """Any JSON in the metadata is either a valid schema or a CheckpointError naming the file."""

    @settings(max_examples=150, deadline=None)
    @given(
        fields=st.dictionaries(
            st.sampled_from(sorted(schema_module._FIELDS) + ["other"]), JSON_VALUES, max_size=len(schema_module._FIELDS) + 1
        ),
        base=st.booleans(),
    )
    def test_arbitrary_metadata(self, fields, base):
        meta = {**make_metadata(**TIMM), **fields} if base else fields
        try:
            out = schema_module.decode_metadata({METADATA_KEY: json.dumps(meta)}, name="f.safetensors")
        except CheckpointError as exc:
            assert str(exc).startswith("checkpoint 'f.safetensors': ")
        else:
            assert out["format_version"] == 1 and out["num_classes"] >= 1
            assert len(out["mean"]) == len(out["std"]) == out["input_size"][0]


class TestFuzz:
    """Arbitrary damage to a valid file ends in a MidefendError (or a clean load), never anything else."""

    @staticmethod
    def _check(path: Path, raw: bytes, cut: int | None, edits: list[tuple[int, int]]) -> None:
        data = bytearray(raw if cut is None else raw[:cut])
        for position, value in edits:
            if data:
                data[position % len(data)] = value
        path.write_bytes(bytes(data))
        try:
            load_checkpoint(path)
        except MidefendError:
            pass

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        cut=st.one_of(st.none(), st.integers(0, 3000)),
        edits=st.lists(st.tuples(st.integers(0, 2500), st.integers(0, 255)), max_size=4),
    )
    def test_damaged_header(self, tmp_path, timm_file, cut, edits):
        self._check(tmp_path / "f.safetensors", timm_file.read_bytes(), cut, edits)

    @pytest.mark.slow
    @settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        cut=st.one_of(st.none(), st.integers(0, 10**7)),
        edits=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), max_size=16),
    )
    def test_damaged_anywhere(self, tmp_path, timm_file, cut, edits):
        self._check(tmp_path / "f.safetensors", timm_file.read_bytes(), cut, edits)
