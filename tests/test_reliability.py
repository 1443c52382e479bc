"""Bad input, one case per row of ``docs/errors.md``: a one-line error, a non-zero exit, no partial file.

Each class is one area of the table. A CLI case runs the real command in-process
(typer's CliRunner) and checks, through :func:`assert_cli_error`, the exit code
(1 for an anticipated error, 2 for a usage error), that stderr holds exactly
the line ``error: <message>`` (the message matched in full), that stdout is
empty and that no traceback is shown; then that the folder the command writes
to holds exactly the files it held before (no output, no temporary file).
Library cases check the exception type and its exact message.

The checkpoint rows go through all three commands that read a checkpoint
(``inspect --check``, ``harden``, ``verify``), because each has its own code
path to the loader.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import struct
from pathlib import Path

import pytest
import torch
from PIL import Image

from midefend.defenses.erasing import BatchRandomErasing, RandomErasingTransform, random_erase_batch
from midefend.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from midefend.io.checkpoints import load_checkpoint
from midefend.io.legacy import import_research_checkpoint

from reliability_fixtures import one_thread  # noqa: F401  (autouse fixture)
from reliability_fixtures import (
    TARGET_ARCH,
    TARGET_KW,
    assert_cli_error,
    files_under,
    invoke,
    join_safetensors,
    make_checkpoint,
    make_image_folder,
    make_workspace,
    split_safetensors,
    with_metadata,
)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    return make_workspace(tmp_path_factory.mktemp("reliability"))


def q(path: Path) -> str:
    """``'path'`` as the messages quote it, escaped for a regex."""
    return re.escape(repr(str(path)))


def verify_args(ws: dict[str, Path], out: Path, *extra: object) -> list[object]:
    """A fast ``midefend verify`` of the tiny target (MI-Face, one step) writing to ``out``."""
    return ["verify", ws["target"], "--eval-model", ws["eval"], "--attack", "miface", "--steps", "1", "--out", out, "-q", *extra]


def train_args(data: object, out: Path, *extra: object, channels: int = 1) -> list[object]:
    """A fast ``midefend train`` (one epoch, 16 px grey unless ``channels``) writing ``out``."""
    return ["train", "--data", data, "--out", out, "--epochs", "1", "--size", "16", "--channels", channels, "-q", *extra]


def forbid_decoding(monkeypatch) -> None:
    """Fail cleanly, instead of being killed for lack of memory, if an image gets decoded."""
    import midefend.data.folders as folders

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded at a size that cannot fit in memory")

    monkeypatch.setattr(folders, "read_image", no_decoding)


def check_nothing_written(folder: Path, before: dict[str, int]) -> None:
    after = files_under(folder)
    assert after == before, sorted(set(after) ^ set(before))


# ---------------------------------------------------------------------------------------------
# 1. checkpoint files


def _tensor_name(header: dict, suffix: str) -> str:
    return next(k for k in header if k.endswith(suffix))


def _zero_bytes(src: Path, dst: Path) -> str:
    dst.write_bytes(b"")
    return f"checkpoint {q(dst)} is empty \\(0 bytes\\)"


def _truncated(src: Path, dst: Path) -> str:
    header, data = split_safetensors(src)
    raw = src.read_bytes()
    dst.write_bytes(raw[: len(raw) - len(data) // 2])
    kept = len(data) - len(data) // 2
    return f"checkpoint {q(dst)} is truncated: its header describes {len(data)} bytes of tensor data but the file holds only {kept}"


def _garbage(src: Path, dst: Path) -> str:
    blob = torch.randint(0, 256, (300,), generator=torch.Generator().manual_seed(7), dtype=torch.uint8).numpy().tobytes()
    dst.write_bytes(blob)
    (announced,) = struct.unpack("<Q", blob[:8])
    return (
        f"checkpoint {q(dst)} is not a valid safetensors file: its first 8 bytes announce a {announced}-byte header "
        "but the file has 300 bytes \\(truncated or not safetensors\\)"
    )


def _wrong_shape(src: Path, dst: Path) -> str:
    header, data = split_safetensors(src)
    name = _tensor_name(header, "fc.weight")
    rows, cols = header[name]["shape"]
    header[name]["shape"] = [rows + 1, cols]
    join_safetensors(dst, header, data)
    return (
        f"checkpoint {q(dst)}: tensor 'fc.weight' claims shape \\[{rows + 1}, {cols}\\] of F32 "
        f"\\({(rows + 1) * cols * 4} bytes\\) but its data_offsets span {rows * cols * 4} bytes"
    )


def _pickled(src: Path, dst: Path) -> str:
    torch.save(load_checkpoint(src).model.state_dict(), dst)
    return (
        f"checkpoint {q(dst)} is a pickled PyTorch file, not safetensors; unpickling can run code, so it is only read "
        "by import_research_checkpoint\\(\\.\\.\\., allow_pickle=True\\) on files you trust"
    )


def _non_finite(value: float, suffix: str):
    def build(src: Path, dst: Path) -> str:
        from safetensors.torch import load_file, save_file

        header, _ = split_safetensors(src)
        tensors = load_file(str(src))
        tensors[_tensor_name(header, suffix)].view(-1)[0] = value
        save_file(tensors, str(dst), metadata=header["__metadata__"])
        return f"checkpoint {q(dst)} has NaN or infinite values in 1 tensor\\(s\\): {re.escape(suffix)}"

    return build


def _no_metadata(src: Path, dst: Path) -> str:
    header, data = split_safetensors(src)
    header["__metadata__"] = {"format": "pt"}
    join_safetensors(dst, header, data)
    return (
        f"checkpoint {q(dst)} has no midefend metadata \\(no 'midefend' key in its safetensors header\\); write it with "
        "save_checkpoint\\(\\), or rebuild a bare state dict with import_research_checkpoint\\(path, arch=\\.\\.\\.\\)"
    )


def _metadata_not_json(src: Path, dst: Path) -> str:
    header, data = split_safetensors(src)
    header["__metadata__"]["midefend"] = "{not json"
    join_safetensors(dst, header, data)
    return f"checkpoint {q(dst)}: its 'midefend' metadata is not valid JSON \\(Expecting property name enclosed in double quotes: line 1 column 2 \\(char 1\\)\\)"


def _wrong_schema(src: Path, dst: Path) -> str:
    with_metadata(src, dst, lambda meta: meta.pop("num_classes"))
    return f"checkpoint {q(dst)}: metadata does not follow the midefend schema \\(missing num_classes\\)"


def _newer_version(src: Path, dst: Path) -> str:
    with_metadata(src, dst, lambda meta: meta.update(format_version=2))
    return f"checkpoint {q(dst)}: metadata field format_version must be 1, got 2 \\(written by a newer midefend; upgrade midefend\\)"


def _unknown_arch(src: Path, dst: Path) -> str:
    with_metadata(src, dst, lambda meta: meta.update(arch="timm/not_a_net"))
    return f"checkpoint {q(dst)}: cannot build architecture 'timm/not_a_net': unknown timm architecture 'not_a_net'"


def _other_class_count(src: Path, dst: Path) -> str:
    with_metadata(src, dst, lambda meta: meta.update(num_classes=7))
    return (
        f"checkpoint {q(dst)} does not fit midefend/resnet_small with 7 classes: 2 shape mismatches "
        "\\(fc.weight \\(4, 16\\) in file vs \\(7, 16\\) in model, fc.bias \\(4,\\) in file vs \\(7,\\) in model\\)"
    )


DAMAGE = {
    "zero-byte": _zero_bytes,
    "truncated": _truncated,
    "garbage": _garbage,
    "header-claims-wrong-shape": _wrong_shape,
    "pickle-without-flag": _pickled,
    "nan-weight": _non_finite(float("nan"), "fc.bias"),
    "inf-weight": _non_finite(float("inf"), "stem.0.weight"),
    "metadata-missing": _no_metadata,
    "metadata-not-json": _metadata_not_json,
    "metadata-wrong-schema": _wrong_schema,
    "metadata-newer-version": _newer_version,
    "unknown-architecture": _unknown_arch,
    "class-count-mismatch": _other_class_count,
}

COMMANDS = {
    "inspect": lambda ckpt, ws, out: ["inspect", "--check", ckpt],
    "harden": lambda ckpt, ws, out: ["harden", ckpt, out / "hardened.safetensors", "--rank", "2"],
    "verify": lambda ckpt, ws, out: ["verify", ckpt, "--eval-model", ws["eval"], "--attack", "miface", "--out", out / "run", "-q"],
}


class TestCheckpointFiles:
    @pytest.mark.parametrize("command", sorted(COMMANDS))
    @pytest.mark.parametrize("damage", sorted(DAMAGE))
    def test_cli(self, ws, tmp_path, damage, command):
        bad = tmp_path / "in" / ("model.pt" if damage == "pickle-without-flag" else "model.safetensors")
        bad.parent.mkdir()
        message = DAMAGE[damage](ws["target"], bad)
        out = tmp_path / "out"
        out.mkdir()
        result = invoke(*COMMANDS[command](bad, ws, out))
        assert_cli_error(result, message)
        assert files_under(out) == {}

    def test_damaged_evaluation_model(self, ws, tmp_path):
        bad = tmp_path / "eval.safetensors"
        message = _truncated(ws["eval"], bad)
        result = invoke("verify", ws["target"], "--eval-model", bad, "--attack", "miface", "--out", tmp_path / "run", "-q")
        assert_cli_error(result, message)
        assert not (tmp_path / "run").exists()

    @pytest.mark.parametrize("allow_pickle", [False, True])
    def test_named_pipe(self, tmp_path, allow_pickle):
        """A FIFO would block open() forever: refused by its file type, nothing is opened."""
        fifo = tmp_path / "model.safetensors"
        os.mkfifo(fifo)
        with pytest.raises(CheckpointError, match=f"^checkpoint {q(fifo)} is not a regular file \\(a pipe, socket or device\\)$"):
            load_checkpoint(fifo, allow_pickle=allow_pickle)
        assert_cli_error(invoke("inspect", fifo), f"checkpoint {q(fifo)} is not a regular file \\(a pipe, socket or device\\)")

    def test_input_size_beyond_memory(self, ws, tmp_path, monkeypatch):
        """A crafted header claiming 100000x100000 inputs: verify refuses before decoding data at that size."""
        forbid_decoding(monkeypatch)
        huge = with_metadata(ws["target"], tmp_path / "huge.safetensors", lambda meta: meta.update(input_size=[1, 100000, 100000]))
        result = invoke("verify", huge, "--eval-model", ws["eval"], "--attack", "miface", "--out", tmp_path / "run", "-q")
        assert_cli_error(result, "size must be an integer in \\[4, 4096\\] or a \\(height, width\\) pair of them, got 100000")
        assert not (tmp_path / "run").exists()


_SYSTEM = os.system.__module__  # "posix" on Linux and macOS


class _Payload:
    """Unpickling this object runs code that creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class TestUntrustedPickles:
    """Under the opt-in flag, ``weights_only`` refuses a malicious ``__reduce__`` and nothing runs."""

    def test_payload_works_when_unpickled_unsafely(self, tmp_path):
        marker = tmp_path / "ran"
        pickle.loads(pickle.dumps(_Payload(marker)))
        assert marker.exists()

    @pytest.mark.parametrize("loader", ["load_checkpoint", "import_research_checkpoint"])
    def test_malicious_reduce_refused_under_flag(self, tmp_path, loader):
        marker = tmp_path / "ran"
        path = tmp_path / "evil.pt"
        torch.save({"model_state_dict": {"fc.bias": torch.zeros(4)}, "hook": _Payload(marker)}, path)
        with pytest.raises(
            UnsafeCheckpointError,
            match=f"^checkpoint {q(path)} holds objects other than tensors, which torch.load\\(weights_only=True\\) "
            f"refuses to unpickle \\(nothing was executed\\): Trying to load unsupported GLOBAL {_SYSTEM}.system whose module {_SYSTEM} is blocked$",
        ):
            if loader == "load_checkpoint":
                load_checkpoint(path, allow_pickle=True)
            else:
                import_research_checkpoint(
                    path, allow_pickle=True, arch=TARGET_ARCH, arch_kwargs=TARGET_KW, num_classes=4,
                    input_size=(1, 16, 16), mean=(0.5,), std=(0.5,),
                )  # fmt: skip
        assert not marker.exists()

    def test_cli_never_unpickles(self, ws, tmp_path, monkeypatch):
        path = tmp_path / "evil.safetensors"
        marker = tmp_path / "ran"
        torch.save({"hook": _Payload(marker)}, path)

        def refuse(*args, **kwargs):
            raise AssertionError("the CLI must not unpickle")

        monkeypatch.setattr(torch, "load", refuse)
        monkeypatch.setattr(pickle, "load", refuse)
        monkeypatch.setattr(pickle, "loads", refuse)
        for args in (["inspect", path], ["inspect", "--check", path], ["harden", path, tmp_path / "o.safetensors", "--rank", "2"]):
            assert_cli_error(invoke(*args), f"checkpoint {q(path)} is a pickled PyTorch file, not safetensors; .*")
        assert not marker.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.safetensors"]


# ---------------------------------------------------------------------------------------------
# 2. data folders


def _empty(root: Path) -> tuple[Path, str]:
    root.mkdir()
    return root, f"need at least 2 classes, found 0 in {re.escape(str(root))} \\(expected one subfolder per class\\)"


def _one_class(root: Path) -> tuple[Path, str]:
    make_image_folder(root, classes=1)
    return root, f"need at least 2 classes, found 1 in {re.escape(str(root))} \\(expected one subfolder per class\\)"


def _class_without_images(root: Path) -> tuple[Path, str]:
    make_image_folder(root)
    for image in (root / "c2").iterdir():
        image.unlink()
    (root / "c2" / "notes.txt").write_text("not an image")
    return root, f"class folder {re.escape(str(root / 'c2'))} contains no images"


def _corrupt_image(root: Path) -> tuple[Path, str]:
    make_image_folder(root)
    bad = root / "c1" / "3.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return root, f"cannot read image {re.escape(str(bad))}: UnidentifiedImageError: cannot identify image file {q(bad)}"


def _decompression_bomb(root: Path) -> tuple[Path, str]:
    # 15000 x 15000 1-bit pixels: 27 kB as a PNG, 225 million pixels once decoded.
    make_image_folder(root)
    bomb = root / "c1" / "bomb.png"
    Image.new("1", (15000, 15000)).save(bomb)
    return root, (
        f"cannot read image {re.escape(str(bomb))}: DecompressionBombError: Image size \\(225000000 pixels\\) exceeds limit "
        "of \\d+ pixels, could be decompression bomb DOS attack\\."
    )


def _missing(root: Path) -> tuple[Path, str]:
    return root, f"data {q(root)} is neither 'orl', 'digits', 'digits-public' nor an existing folder"


def _too_few_images(root: Path) -> tuple[Path, str]:
    make_image_folder(root, per_class=1)
    return root, "class 'c0' has 1 images, too few to keep 0 for training and at least one for testing"


DATA = {
    "empty-folder": _empty,
    "one-class": _one_class,
    "class-without-images": _class_without_images,
    "corrupt-image": _corrupt_image,
    "decompression-bomb": _decompression_bomb,
    "missing-folder": _missing,
    "too-few-images-to-split": _too_few_images,
}


class TestData:
    @pytest.mark.parametrize("command", ["train", "verify"])
    @pytest.mark.parametrize("case", sorted(DATA))
    def test_bad_folder(self, ws, tmp_path, case, command):
        data, message = DATA[case](tmp_path / "data")
        out = tmp_path / "out"
        out.mkdir()
        if command == "train":
            args = train_args(data, out / "m.safetensors")
        else:
            args = verify_args(ws, out / "run", "--data", data)
        assert_cli_error(invoke(*args), message)
        assert files_under(out) == {}

    def test_orl_without_its_variable(self, tmp_path, monkeypatch):
        monkeypatch.delenv("MIDEFEND_ORL_DIR", raising=False)
        result = invoke(*train_args("orl", tmp_path / "m.safetensors"))
        assert_cli_error(result, "data 'orl' needs \\$MIDEFEND_ORL_DIR set to the ORL faces folder \\(or pass the folder path instead\\)")
        assert files_under(tmp_path) == {}

    def test_class_count_does_not_match_the_model(self, ws, tmp_path):
        data = make_image_folder(tmp_path / "three", classes=3)
        result = invoke(*verify_args(ws, tmp_path / "run", "--data", data))
        assert_cli_error(result, "the data has 3 classes but the target model has 4 \\(and records no class names to match them by\\)")
        assert not (tmp_path / "run").exists()

    def test_init_checkpoint_for_other_classes(self, ws, tmp_path):
        data = make_image_folder(tmp_path / "three", classes=3)
        before = files_under(tmp_path)
        result = invoke(*train_args(data, tmp_path / "m.safetensors", "--init", ws["target"], "--arch", TARGET_ARCH))
        assert_cli_error(
            result,
            f"init checkpoint {re.escape(str(ws['target']))} holds midefend/resnet_small for 4 classes at \\(1, 16, 16\\), "
            "but this run trains midefend/resnet_small for 3 classes at \\(1, 16, 16\\)",
        )
        check_nothing_written(tmp_path, before)

    def test_grey_checkpoint_rgb_run(self, ws, tmp_path):
        result = invoke(*train_args(ws["data"], tmp_path / "m.safetensors", "--init", ws["target"], channels=3))
        assert_cli_error(
            result,
            f"init checkpoint {re.escape(str(ws['target']))} holds midefend/resnet_small for 4 classes at \\(1, 16, 16\\), "
            "but this run trains midefend/resnet_small for 4 classes at \\(3, 16, 16\\)",
        )
        assert files_under(tmp_path) == {}

    @pytest.mark.parametrize("channels", ["2", "0"])
    def test_channels_neither_grey_nor_rgb(self, ws, tmp_path, channels):
        result = invoke(*train_args(ws["data"], tmp_path / "m.safetensors", channels=channels))
        assert_cli_error(result, f"channels must be 1 \\(grey\\) or 3 \\(RGB\\), got {channels}")
        assert files_under(tmp_path) == {}


# ---------------------------------------------------------------------------------------------
# 3. rank of the low-rank head


RANKS = {
    "0": "rank must be a positive integer, got 0",
    "-3": "rank must be a positive integer, got -3",
    "5": "rank must be in \\[1, 4\\] for ResNetSmall.fc \\(min\\(in_features=16, num_classes=4\\)\\), got 5",
    "1000": "rank must be in \\[1, 4\\] for ResNetSmall.fc \\(min\\(in_features=16, num_classes=4\\)\\), got 1000",
}


class TestRank:
    @pytest.mark.parametrize("rank", sorted(RANKS))
    def test_harden(self, ws, tmp_path, rank):
        result = invoke("harden", ws["target"], tmp_path / "h.safetensors", "--rank", rank)
        assert_cli_error(result, RANKS[rank])
        assert files_under(tmp_path) == {}

    @pytest.mark.parametrize("rank", sorted(RANKS))
    def test_train_calor(self, ws, tmp_path, rank):
        args = train_args(ws["data"], tmp_path / "m.safetensors", "--defense", "calor", "--init", ws["target"])
        result = invoke(*args, "--arch", TARGET_ARCH, "--rank", rank, "--calor-epochs", "1", "--ca-epochs", "1")
        assert_cli_error(result, RANKS[rank])
        assert files_under(tmp_path) == {}

    def test_head_not_found(self, ws, tmp_path):
        result = invoke("harden", ws["target"], tmp_path / "h.safetensors", "--rank", "2", "--head", "classifier")
        assert_cli_error(result, "ResNetSmall has no submodule 'classifier' to harden")
        assert files_under(tmp_path) == {}

    def test_already_hardened(self, ws, tmp_path):
        first = tmp_path / "h.safetensors"
        assert invoke("harden", ws["target"], first, "--rank", "2", "--init", "random").exit_code == 0
        before = files_under(tmp_path)
        result = invoke("harden", first, tmp_path / "h2.safetensors", "--rank", "2")
        assert_cli_error(result, "ResNetSmall is already hardened \\(LowRankTanhHead at fc\\); pass --reharden --init random to replace it")
        check_nothing_written(tmp_path, before)


# ---------------------------------------------------------------------------------------------
# 4. erasing parameters (library: three entry points; CLI: --erase-max)


ERASING = [
    ({"scale": (0.0, 0.4)}, "scale must be a \\(min, max\\) pair with 0 < min <= max <= 1, got \\(0.0, 0.4\\)"),
    ({"scale": (0.5, 0.1)}, "scale must be a \\(min, max\\) pair with 0 < min <= max <= 1, got \\(0.5, 0.1\\)"),
    ({"scale": (0.1, 1.5)}, "scale must be a \\(min, max\\) pair with 0 < min <= max <= 1, got \\(0.1, 1.5\\)"),
    ({"scale": (float("nan"), 0.4)}, "scale must be a \\(min, max\\) pair with 0 < min <= max <= 1, got \\(nan, 0.4\\)"),
    ({"scale": 0.4}, "scale must be a \\(min, max\\) pair with 0 < min <= max <= 1, got 0.4"),
    ({"ratio": (0.0, 1.0)}, "ratio must be a \\(min, max\\) pair with 0 < min <= max, got \\(0.0, 1.0\\)"),
    ({"ratio": (-1.0, 2.0)}, "ratio must be a \\(min, max\\) pair with 0 < min <= max, got \\(-1.0, 2.0\\)"),
    ({"ratio": (2.0, 0.5)}, "ratio must be a \\(min, max\\) pair with 0 < min <= max, got \\(2.0, 0.5\\)"),
    ({"p": 1.5}, "p must be a probability in \\[0, 1\\], got 1.5"),
    ({"p": -0.1}, "p must be a probability in \\[0, 1\\], got -0.1"),
    ({"value": "median"}, "value must be 'mean', 'random', a number or a per-channel tuple, got 'median'"),
    ({"value": (0.1, 0.2)}, "value must have 1 or 3 entries \\(one per channel\\), got 2: \\(0.1, 0.2\\)"),
    ({"mode": "circle"}, "mode must be one of box, fixed, pixels, patches, got 'circle'"),
    ({"mode": "patches", "num_patches": 0}, "num_patches must be a positive integer, got 0"),
    ({"normalized": ((0.5,), (0.0,))}, "normalized std must be > 0, got \\(0.0,\\)"),
]

ENTRY_POINTS = {
    "random_erase_batch": lambda x, kw: random_erase_batch(x, **kw),
    "BatchRandomErasing": lambda x, kw: BatchRandomErasing(**kw)(x),
    "RandomErasingTransform": lambda x, kw: RandomErasingTransform(**kw)(x),
}


class TestErasingParameters:
    @pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
    @pytest.mark.parametrize(("kwargs", "message"), ERASING, ids=[f"{k}={v!r}" for k, v in (next(iter(c[0].items())) for c in ERASING)])
    def test_library(self, entry, kwargs, message):
        x = torch.rand(2, 3, 8, 8)
        original = x.clone()
        with pytest.raises(ConfigError, match=f"^{message}$"):
            ENTRY_POINTS[entry](x, kwargs)
        assert torch.equal(x, original)  # nothing written before the check

    @pytest.mark.parametrize(("x", "message"), [
        (torch.rand(3, 8, 8), "x must be a \\(B, C, H, W\\) tensor, got shape \\(3, 8, 8\\)"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.int32), "x must be a floating-point \\(or uint8\\) tensor, got torch.int32"),
        ([[0.5]], "x must be a torch.Tensor of shape \\(B, C, H, W\\), got list"),
    ], ids=["3d", "int32", "list"])  # fmt: skip
    def test_bad_input_tensor(self, x, message):
        with pytest.raises(ConfigError, match=f"^{message}$"):
            random_erase_batch(x)

    @pytest.mark.parametrize(("kwargs", "message"), [
        ({"backend": "cuda"}, "backend must be one of auto, torch, triton, got 'cuda'"),
        ({"backend": "native"}, "backend must be one of auto, torch, triton, got 'native'"),
    ], ids=["unknown", "native-removed"])  # fmt: skip
    def test_backend(self, kwargs, message):
        x = torch.rand(2, 3, 8, 8)
        original = x.clone()
        with pytest.raises(ConfigError, match=f"^{message}$"):
            random_erase_batch(x, inplace=True, **kwargs)
        assert torch.equal(x, original)

    @pytest.mark.parametrize("erase_max", ["1.5", "0.1", "0.05"])
    def test_cli_erase_max(self, ws, tmp_path, erase_max):
        result = invoke(*train_args(ws["data"], tmp_path / "m.safetensors", "--defense", "midre", "--erase-max", erase_max))
        assert_cli_error(result, f"erase_max must lie in \\(0.1, 1\\] \\(MIDRE's a_h, e.g. 0.4 or 0.8\\), got {erase_max}")
        assert files_under(tmp_path) == {}


# ---------------------------------------------------------------------------------------------
# 5. verify options


VERIFY_OPTIONS = [
    (["--classes", "0-9"], "classes must be in 0..3, got 4 in '0-9'"),
    (["--classes", "7"], "classes must be in 0..3, got 7 in '7'"),
    (["--classes", "3-1"], "classes must be 'all', a range like '0-9' or a list like '1,4,7', got '3-1'"),
    (["--classes", "one"], "classes must be 'all', a range like '0-9' or a list like '1,4,7', got 'one'"),
    (["--classes", "-1"], "classes must be 'all', a range like '0-9' or a list like '1,4,7', got '-1'"),
    (["--per-class", "0"], "per_class must be a positive integer, got 0"),
    (["--per-class", "3", "--candidates", "2"], "candidates must be >= per_class \\(3\\), got 2"),
    (["--steps", "0"], "steps must be a positive integer, got 0"),
    (["--attack", "deepinversion"], "unknown attack 'deepinversion'; known attacks: brep, gmi, ifgmi, miface, nes, plg, ppa"),
    (["--loss", "hinge"], "unknown identity loss 'hinge'; expected one of poincare, max-margin, logit, cross-entropy"),
    (["--device", "cuda:7"], "device 'cuda:7' is not available \\(no CUDA device found\\)"),
    (["--device", "gpu"], "device must be a torch device such as 'cpu' or 'cuda:0', got 'gpu'"),
]


class TestVerifyOptions:
    @pytest.mark.parametrize(("extra", "message"), VERIFY_OPTIONS, ids=[" ".join(e) for e, _ in VERIFY_OPTIONS])
    def test_bad_option(self, ws, tmp_path, extra, message):
        if extra[0] == "--device" and extra[1].startswith("cuda") and torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
        assert_cli_error(invoke(*verify_args(ws, tmp_path / "run", *extra)), message)
        assert files_under(tmp_path) == {}

    def test_evaluation_model_for_other_classes(self, ws, tmp_path):
        other = make_checkpoint(tmp_path / "eval5.safetensors", ws["data"], arch=TARGET_ARCH, arch_kwargs=TARGET_KW, num_classes=5)
        before = files_under(tmp_path)
        result = invoke("verify", ws["target"], "--eval-model", other, "--attack", "miface", "--out", tmp_path / "run", "-q")
        assert_cli_error(result, "the evaluation model has 5 classes but the target has 4")
        check_nothing_written(tmp_path, before)

    def test_resume_with_other_settings(self, ws, tmp_path):
        assert invoke(*verify_args(ws, tmp_path / "run")).exit_code == 0
        before = files_under(tmp_path)
        result = invoke(*verify_args(ws, tmp_path / "run", "--seed", "1", "--resume"))
        assert_cli_error(
            result,
            f"cannot resume in {q(tmp_path / 'run' / 'attack')}: its results come from a different config "
            "\\(use a new output folder, or run without --resume to overwrite\\)",
        )
        check_nothing_written(tmp_path, before)

    def test_prior_whose_config_claims_a_huge_generator(self, ws, tmp_path):
        """A crafted prior header (latent_dim 10**12, i.e. terabytes of weights): one line, not a RuntimeError."""
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        from midefend.attacks.priors import DCGANGenerator, GenerativePrior, save_prior

        prior = save_prior(GenerativePrior(DCGANGenerator(latent_dim=8, channels=1, width=4, image_size=16)), tmp_path / "p.safetensors")
        with safe_open(str(prior), framework="pt") as handle:
            metadata = handle.metadata()
        metadata["config"] = json.dumps({**json.loads(metadata["config"]), "latent_dim": 10**12})
        save_file(load_file(str(prior)), str(prior), metadata=metadata)
        before = files_under(tmp_path)
        result = invoke(*verify_args(ws, tmp_path / "run", "--attack", "ppa", "--prior", prior))
        assert_cli_error(result, f"prior {q(prior)} weights do not match its config \\(first difference: generator.main.0.weight\\)")
        check_nothing_written(tmp_path, before)

    def test_seed_beyond_64_bits(self, ws, tmp_path):
        seed = str(2**64)
        assert_cli_error(invoke(*verify_args(ws, tmp_path / "run", "--attack", "ppa", "--seed", seed)), f"seed must be an integer in \\[0, 2\\*\\*63\\), got {seed}")
        assert files_under(tmp_path) == {}

    def test_prior_of_another_image_size(self, ws, tmp_path):
        """Not a bad input: a 32 px prior for a 16 px target is resized (antialiased) inside the attack.

        A regression test: on CPUs with native bfloat16 (precision "auto" -> bf16) the resize used to
        run under bfloat16 autocast, which torch does not implement on the CPU.
        """
        from midefend.attacks.priors import DCGANGenerator, GenerativePrior, save_prior

        torch.manual_seed(0)
        prior = save_prior(GenerativePrior(DCGANGenerator(latent_dim=8, channels=1, width=4, image_size=32)), tmp_path / "p.safetensors")
        result = invoke(*verify_args(ws, tmp_path / "run", "--attack", "ppa", "--prior", prior))
        assert result.exit_code == 0, result.output
        assert (tmp_path / "run" / "report.json").is_file()

    def test_gmi_with_a_prior_without_discriminator(self, ws, tmp_path):
        from midefend.attacks.priors import DCGANGenerator, GenerativePrior, save_prior

        prior = save_prior(GenerativePrior(DCGANGenerator(latent_dim=8, channels=1, width=4, image_size=16)), tmp_path / "p.safetensors")
        before = files_under(tmp_path)
        result = invoke(*verify_args(ws, tmp_path / "run", "--attack", "gmi", "--prior", prior))
        assert_cli_error(
            result,
            "attack 'gmi' needs a prior with a discriminator; prior 'prior' has none \\(train one with train_prior, or use the 'ppa' attack\\)",
        )
        check_nothing_written(tmp_path, before)

    def test_prior_that_is_not_a_prior(self, ws, tmp_path):
        missing = tmp_path / "prior.safetensors"
        result = invoke(*verify_args(ws, tmp_path / "run", "--attack", "ppa", "--prior", missing))
        assert_cli_error(result, f"prior {q(missing)} is neither 'face-gan' nor an existing file")
        assert files_under(tmp_path) == {}


COMPARE_REPORTS = {
    "not-json": ("{oops", "report {path} is not readable JSON: Expecting property name enclosed in double quotes: line 1 column 2 \\(char 1\\)"),
    "not-a-report": ('{"a": 1}', "{path} is not a midefend verify report"),
}


class TestCompare:
    @pytest.mark.parametrize("case", sorted(COMPARE_REPORTS))
    def test_bad_report(self, ws, tmp_path, case):
        text, message = COMPARE_REPORTS[case]
        report = tmp_path / "report.json"
        report.write_text(text)
        result = invoke("compare", report, report, "--out", tmp_path / "cmp", "-q")
        assert_cli_error(result, message.format(path=q(report)))
        assert files_under(tmp_path) == {"report.json": len(text)}

    def test_one_model(self, ws, tmp_path):
        result = invoke("compare", ws["target"], "--eval-model", ws["eval"], "--out", tmp_path / "cmp", "-q")
        assert_cli_error(result, "compare needs a NoDef model and at least one defended model, got 1 path\\(s\\)")
        assert files_under(tmp_path) == {}

    def test_checkpoints_without_evaluation_model(self, ws, tmp_path):
        result = invoke("compare", ws["target"], ws["target"], "--out", tmp_path / "cmp", "-q")
        assert_cli_error(result, "no evaluation model: pass --eval-model EVAL.safetensors \\(an independent model trained on the private data\\), or --eval-model facenet for face data")
        assert files_under(tmp_path) == {}


DEMO_OPTIONS = [
    (["--data", "cifar"], "--data must be 'digits' or 'orl', got 'cifar'"),
    (["--defense", "dp-sgd"], "--defense must be midre, calor or midre\\+calor, got 'dp-sgd'"),
    (["--data", "orl"], "--data orl needs --data-dir PATH \\(the ORL faces folder\\) or \\$MIDEFEND_ORL_DIR"),
]


class TestDemo:
    @pytest.mark.parametrize(("extra", "message"), DEMO_OPTIONS, ids=[" ".join(e) for e, _ in DEMO_OPTIONS])
    def test_bad_option(self, tmp_path, monkeypatch, extra, message):
        monkeypatch.delenv("MIDEFEND_ORL_DIR", raising=False)
        assert_cli_error(invoke("demo", "--out", tmp_path / "demo", "-q", *extra), message)
        assert files_under(tmp_path) == {}


# ---------------------------------------------------------------------------------------------
# 5b. train options


TRAIN_OPTIONS = [
    (["--batch-size", "1"], "batch_size must be an integer >= 2, got 1"),
    (["--epochs", "0"], "epochs must be an integer >= 1, got 0"),
    (["--lr", "-1"], "lr must be a positive finite number, got -1.0"),
    (["--lr", "nan"], "lr must be a positive finite number, got nan"),
    (["--augment", "mixup"], "augment must be one of none, flip, light, strong, digits or a BatchAugment, got 'mixup'"),
    (["--defense", "dp-sgd"], "unknown defense 'dp-sgd'; known defenses: bido, calor, mid, midre, midre\\+calor, nls, nodef, tl"),
    (["--arch", "timm/not_a_net"], "unknown timm architecture 'not_a_net'"),
    (["--arch", "torchvision/resnet18"], "torchvision models take 3 input channels, got in_chans=1"),
    (["--size", "2"], "size must be an integer in \\[4, 4096\\] or a \\(height, width\\) pair of them, got 2"),
    (["--device", "gpu"], "device must be a torch device such as 'cpu' or 'cuda:0', got 'gpu'"),
    (["--device", "cuda:7"], "device 'cuda:7' is not available \\(no CUDA device found\\)"),
    (["--epochs", "3", "--lr", "1e30"], "training diverged in stage 'train' epoch \\d+ \\(loss nan\\); lower lr \\(now .+\\)"),
    # one step: its loss is still finite, the weights it leaves are not
    (["--epochs", "1", "--lr", "1e30", "--batch-size", "4096"],
     "training diverged in stage 'train' epoch 1 \\(the trained model's outputs are not finite\\); lower lr"),
    (["--defense", "calor", "--ca-params", "backbone"], "ca_params must be one of head, all, got 'backbone'"),
    (["--seed", str(2**64)], f"seed must be an integer in \\[0, 2\\*\\*64 - 1\\], got {2**64}"),
    (["--split-seed", str(-(2**65))], f"split_seed must be an integer in \\[0, 2\\*\\*64 - 1\\], got {-(2**65)}"),
]


class TestTrainOptions:
    @pytest.mark.parametrize(("extra", "message"), TRAIN_OPTIONS, ids=[" ".join(e) for e, _ in TRAIN_OPTIONS])
    def test_bad_option(self, ws, tmp_path, extra, message):
        if extra[0] == "--device" and extra[1].startswith("cuda") and torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
        assert_cli_error(invoke(*train_args(ws["data"], tmp_path / "m.safetensors", *extra)), message)
        assert files_under(tmp_path) == {}

    def test_size_beyond_memory(self, ws, tmp_path, monkeypatch):
        """--size 100000 would need 10 GB per image: refused before any image is decoded (not an OOM kill)."""
        forbid_decoding(monkeypatch)
        result = invoke(*train_args(ws["data"], tmp_path / "m.safetensors", "--size", "100000"))
        assert_cli_error(result, "size must be an integer in \\[4, 4096\\] or a \\(height, width\\) pair of them, got 100000")
        assert files_under(tmp_path) == {}


# ---------------------------------------------------------------------------------------------
# 6. output paths: missing or read-only folder, existing file, a writer that fails half-way


def _read_only(monkeypatch, folder: Path) -> None:
    """Make ``folder`` refuse new files and folders.

    chmod for ordinary users; root ignores file modes, so there the two calls that
    create entries (``tempfile.mkstemp`` in :mod:`midefend.io.atomic`, ``os.mkdir``)
    fail inside ``folder`` exactly as the kernel would: ``EACCES`` naming the entry.
    """
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    import tempfile

    real_mkstemp, real_mkdir = tempfile.mkstemp, os.mkdir

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / f"{prefix}XXXXXX{suffix}"))
        return real_mkstemp(suffix=suffix, prefix=prefix, dir=dir, text=text)

    def mkdir(path, mode=0o777, **kwargs):
        if Path(path).resolve().parent == folder.resolve():
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_mkdir(path, mode, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "mkdir", mkdir)


def _harden_args(ws: dict[str, Path], out: Path) -> list[object]:
    # init=random: the SVD warm start without calibration data prints a note line first.
    return ["harden", ws["target"], out, "--rank", "2", "--init", "random"]


def _disk_full_after_half(monkeypatch) -> None:
    """safetensors' writer writes half of the file, then the disk is full."""
    import safetensors.torch

    real = safetensors.torch.save_file

    def save_file(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        raw = Path(filename).read_bytes()
        Path(filename).write_bytes(raw[: len(raw) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


OSERROR = "\\[Errno {code}\\] {text}: {path}"


class TestOutputs:
    def test_harden_missing_folder(self, ws, tmp_path):
        out = tmp_path / "nowhere" / "h.safetensors"
        assert_cli_error(invoke("harden", ws["target"], out, "--rank", "2"), f"the folder of OUT {q(out.parent)} does not exist")
        assert files_under(tmp_path) == {}

    def test_train_missing_folder(self, ws, tmp_path):
        out = tmp_path / "nowhere" / "m.safetensors"
        assert_cli_error(invoke(*train_args(ws["data"], out)), f"--out folder {q(out.parent)} does not exist")
        assert files_under(tmp_path) == {}

    def test_train_out_not_safetensors(self, ws, tmp_path):
        out = tmp_path / "m.pt"
        assert_cli_error(invoke(*train_args(ws["data"], out)), f"--out must end in .safetensors, got {q(out)}")
        assert files_under(tmp_path) == {}

    def test_harden_out_exists(self, ws, tmp_path):
        out = tmp_path / "h.safetensors"
        out.write_bytes(b"keep me")
        assert_cli_error(invoke("harden", ws["target"], out, "--rank", "2"), f"OUT {q(out)} already exists; pass --force to overwrite it")
        assert out.read_bytes() == b"keep me"

    def test_harden_out_is_a_folder(self, ws, tmp_path):
        assert_cli_error(
            invoke("harden", ws["target"], tmp_path, "--rank", "2"),
            f"OUT {q(tmp_path)} is a folder, expected a .safetensors file name",
        )

    @pytest.mark.parametrize("command", ["harden", "train"])
    def test_read_only_folder(self, ws, tmp_path, monkeypatch, command):
        folder = tmp_path / "ro"
        folder.mkdir()
        out = folder / "m.safetensors"
        _read_only(monkeypatch, folder)
        try:
            result = invoke(*(_harden_args(ws, out) if command == "harden" else train_args(ws["data"], out)))
        finally:
            folder.chmod(0o755)
        assert_cli_error(result, OSERROR.format(code=errno.EACCES, text="Permission denied", path=q(out)))
        assert files_under(folder) == {}

    def test_verify_read_only_folder(self, ws, tmp_path, monkeypatch):
        folder = tmp_path / "ro"
        folder.mkdir()
        _read_only(monkeypatch, folder)
        try:
            result = invoke(*verify_args(ws, folder))
        finally:
            folder.chmod(0o755)
        assert_cli_error(result, OSERROR.format(code=errno.EACCES, text="Permission denied", path=q(folder / "attack")))
        assert files_under(folder) == {}

    @pytest.mark.parametrize("command", ["harden", "train"])
    def test_disk_full_half_way(self, ws, tmp_path, monkeypatch, command):
        out = tmp_path / "m.safetensors"
        out.write_bytes(b"previous version")
        _disk_full_after_half(monkeypatch)
        args = [*_harden_args(ws, out), "--force"] if command == "harden" else train_args(ws["data"], out)
        assert_cli_error(invoke(*args), OSERROR.format(code=errno.ENOSPC, text="No space left on device", path=q(out)))
        assert files_under(tmp_path) == {"m.safetensors": len(b"previous version")}  # old file intact, no temp file

    def test_ctrl_c_half_way_through_a_checkpoint(self, ws, tmp_path, monkeypatch):
        import safetensors.torch

        real = safetensors.torch.save_file

        def save_file(tensors, filename, metadata=None):
            real(tensors, filename, metadata=metadata)
            Path(filename).write_bytes(Path(filename).read_bytes()[:100])
            raise KeyboardInterrupt

        monkeypatch.setattr(safetensors.torch, "save_file", save_file)
        result = invoke(*_harden_args(ws, tmp_path / "h.safetensors"))
        assert result.exit_code == 130
        assert result.stderr.strip() == "interrupted" and "Traceback" not in result.output
        assert files_under(tmp_path) == {}

    def test_verify_report_writer_fails_half_way(self, ws, tmp_path, monkeypatch):
        real = Path.write_text

        def write_text(self, text, *args, **kwargs):
            if "report" in self.name:
                real(self, text[: len(text) // 2], *args, **kwargs)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(self, text, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", write_text)
        out = tmp_path / "run"
        result = invoke(*verify_args(ws, out))
        assert_cli_error(result, OSERROR.format(code=errno.ENOSPC, text="No space left on device", path=q(out / "report.md")))
        assert not [name for name in files_under(out) if "report" in name]


# ---------------------------------------------------------------------------------------------
# 7. command-line usage (exit code 2)


USAGE = [
    (["train", "--out", "m.safetensors"], "Missing option '--data'. \\(see 'midefend train --help'\\)"),
    (["train", "--data", "digits"], "Missing option '--out'. \\(see 'midefend train --help'\\)"),
    (["harden", "EXISTING", "b.safetensors"], "Missing option '--rank'. \\(see 'midefend harden --help'\\)"),
    (["harden", "EXISTING"], "Missing argument 'OUT'. \\(see 'midefend harden --help'\\)"),
    (["harden", "a.safetensors", "b.safetensors", "--rank", "two"], "Invalid value for '--rank': Input should be a valid integer, unable to parse string as an integer \\(see 'midefend harden --help'\\)"),
    (["verify"], "Missing argument 'checkpoint'. \\(see 'midefend verify --help'\\)"),
    (["train", "--data", "digits", "--out", "m.safetensors", "--epochs", "1.5"], "Invalid value for '--epochs': Input should be a valid integer, unable to parse string as an integer \\(see 'midefend train --help'\\)"),
    (["inspect", "a.safetensors", "--jsn"], "No such option: --jsn \\(Possible options: --json\\) \\(see 'midefend inspect --help'\\)"),
]


class TestUsage:
    @pytest.mark.parametrize(("args", "message"), USAGE, ids=[" ".join(a) for a, _ in USAGE])
    def test_usage_error(self, tmp_path, monkeypatch, args, message):
        monkeypatch.chdir(tmp_path)
        args = [__file__ if a == "EXISTING" else a for a in args]  # an input that exists, outside tmp_path
        assert_cli_error(invoke(*args), message, code=2)
        assert files_under(tmp_path) == {}

    def test_verify_without_evaluation_model(self, ws, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        result = invoke("verify", ws["target"])
        # --eval-model is optional (FaceNet judges face data); on these digits the run says what to pass
        assert_cli_error(result, "no evaluation model: pass --eval-model EVAL.safetensors \\(an independent model trained on the private data\\), or --eval-model facenet for face data")
        assert files_under(tmp_path) == {}

    @pytest.mark.parametrize("which", ["checkpoint", "eval-model"])
    def test_verify_missing_file(self, ws, tmp_path, monkeypatch, which):
        monkeypatch.chdir(tmp_path)
        missing = tmp_path / "gone.safetensors"
        target, evaluator = (missing, ws["eval"]) if which == "checkpoint" else (ws["target"], missing)
        result = invoke("verify", target, "--eval-model", evaluator)
        if which == "checkpoint":
            expected = f"Invalid value for 'checkpoint': file {q(missing)} does not exist."
        else:  # --eval-model also takes the word 'facenet'
            expected = f"Invalid value for '--eval-model': {q(missing)} is neither a face recogniser \\(facenet, dlib\\) nor an existing checkpoint file"
        assert_cli_error(result, expected + " \\(see 'midefend verify --help'\\)", code=2)
        assert files_under(tmp_path) == {}

    def test_debug_shows_the_traceback(self, tmp_path):
        bad = tmp_path / "zero.safetensors"
        bad.write_bytes(b"")
        result = invoke("--debug", "inspect", bad)
        assert result.exit_code != 0
        assert type(result.exception).__name__ == "CheckpointError"
        assert "is empty (0 bytes)" in str(result.exception)
