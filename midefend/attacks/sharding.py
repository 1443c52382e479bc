"""Split one attack run into shards and merge their per-class results back into the single-process result.

The engine (:mod:`midefend.attacks.base`) cuts the class list into fixed chunks
and seeds every class from its own stream, so a chunk's reconstructions depend
only on the chunk. A shard is therefore a contiguous group of *whole chunks*:
shard ``i`` of ``N`` owns chunks ``[i*M//N, (i+1)*M//N)`` of the ``M`` chunks of
the full class list. Each shard computes exactly the batches a single process
would, and the merged result is bit-for-bit the single-process one (on the same
kind of device with the same number of threads per process: some CPU and GPU
kernels sum in an order that depends on the thread or block count).

On disk, shard ``i`` of ``N`` is a result folder of its own (``attack.json`` and
``class_<c>.safetensors``, as a single-process run writes), so shards run as
independent jobs (a SLURM array, torchrun ranks, machines with a shared file
system) and each resumes on its own::

    OUT/attack/shard-0000-of-0004/   shard 0/4
    OUT/attack/shard-0001-of-0004/   shard 1/4 ...

:func:`merge_shards` loads every shard folder under ``OUT/attack``, refuses a
class computed twice with different settings and a class that no shard
computed (one line each), and returns the :class:`~midefend.attacks.AttackResult`
of the whole class list.

A shard is a :class:`~midefend.attacks.shard.Shard` (``"i/N"``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import AttackError, ConfigError
from .shard import Shard

_DIR_PATTERN = re.compile(r"^shard-(\d{4,})-of-(\d{4,})$")
#: The settings that must agree for two results of a class to be the same computation.
SETTINGS = ("config", "precision_used", "target_sha256", "prior_sha256")
#: A shard folder's record of its attack time (summed into the merged report's timing).
TIMING_FILE = "timing.json"

__all__ = ["SETTINGS", "TIMING_FILE", "ShardedRun", "merge_shards", "run_sharded", "shard_folders", "write_timing"]


def shard_folders(root: str | Path) -> list[tuple[Shard, Path]]:
    """The shard result folders under ``root`` (an attack's output folder), in name order."""
    base = Path(root)
    found = []
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        match = _DIR_PATTERN.match(path.name)
        if match and path.is_dir():
            index, count = int(match.group(1)), int(match.group(2))
            if index < count:
                found.append((Shard(index, count), path))
    return found


def _read_state(path: Path) -> dict[str, Any]:
    state_file = path / "attack.json"
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        return {}  # the shard started but wrote nothing yet
    except (OSError, json.JSONDecodeError) as exc:
        raise AttackError(f"cannot merge: {str(state_file)!r} is unreadable ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != "midefend-attack-state":
        raise AttackError(f"cannot merge: {str(state_file)!r} is not a midefend attack state")
    return state


def _difference(a: dict[str, Any], b: dict[str, Any], keys: Sequence[str] = SETTINGS) -> str:
    """What differs between two attack states' settings, in a few words (``steps 4 vs 8``, ``target weights``)."""
    for key in keys:
        if a.get(key) == b.get(key):
            continue
        if key == "config" and isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            first = next(n for n in sorted(set(a[key]) | set(b[key])) if a[key].get(n) != b[key].get(n))
            return f"{first} {a[key].get(first)!r} vs {b[key].get(first)!r}"
        if key == "precision_used":
            return f"precision {a.get(key)!r} vs {b.get(key)!r}"
        return {"target_sha256": "target weights", "prior_sha256": "prior weights"}.get(key, key)
    return ""


def merge_shards(root: str | Path, expected: dict[str, Any], *, attack: str, chunks: Sequence[Sequence[int]]) -> Any:
    """The :class:`~midefend.attacks.AttackResult` of the whole class list from the shard folders under ``root``.

    Args:
        root: the attack's output folder (holding ``shard-*-of-*`` folders).
        expected: the merging command's attack state (settings, digests and class
            list): shards computed with other settings are refused. Its precision
            is not compared (the merge may run on another device than the
            shards), but all shards must share one.
        attack: the attack's registry name.
        chunks: the chunks of the full class list, to name the shard a missing class belongs to.

    Raises:
        AttackError: no shard folder; a class computed twice with different
            settings; shards computed with other settings than ``expected`` or
            at different precisions; a class without a result (a missing or
            unfinished shard).
    """
    from .base import AttackResult, _ResultStore
    from .query import merged_query_counts

    base = Path(root)
    folders = [(shard, path, _read_state(path)) for shard, path in shard_folders(base)]
    folders = [(shard, path, state) for shard, path, state in folders if state]
    if not folders:
        raise AttackError(f"cannot merge: no shard results in {str(base)!r} (run the same command with --shard i/N for every i first)")
    classes = list(expected["classes"])
    owners: dict[int, tuple[Shard, dict[str, Any]]] = {}
    for shard, path, state in folders:
        if state.get("all_classes", state.get("classes")) != classes:
            raise AttackError(f"cannot merge: shard {shard} in {str(path)!r} attacked another class list than this command (check --classes)")
        for c in state.get("classes", []):
            if c in owners and any(owners[c][1].get(k) != state.get(k) for k in SETTINGS):
                other = owners[c]
                raise AttackError(
                    f"cannot merge: class {c} was computed twice with different settings (shard {other[0]} and shard {shard}: "
                    f"{_difference(other[1], state)}); remove the stale shard folder"
                )
            owners.setdefault(c, (shard, state))
    command_keys = [k for k in SETTINGS if k != "precision_used"]
    first_shard, _, first_state = folders[0]
    for shard, path, state in folders:
        if any(state.get(k) != expected.get(k) for k in command_keys):
            raise AttackError(
                f"cannot merge: shard {shard} in {str(path)!r} was computed with other settings than this command "
                f"({_difference(state, expected, command_keys)})"
            )
        if state.get("precision_used") != first_state.get("precision_used"):
            raise AttackError(f"cannot merge: shards {first_shard} and {shard} ran at different precisions ({_difference(first_state, state)})")
    found: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for _shard, path, state in folders:
        store = _ResultStore(path, state)
        for c in state["classes"]:
            if c not in found:
                loaded = store._load_class(c)
                if loaded is not None:
                    found[c] = loaded
    missing = [c for c in classes if c not in found]
    if missing:
        count = max(shard.count for shard, _, _ in folders)
        culprits = _owning_shards(missing, chunks, count)
        shown = ", ".join(str(c) for c in missing[:8]) + (", ..." if len(missing) > 8 else "")
        raise AttackError(
            f"cannot merge: missing shard {', '.join(str(s) for s in culprits)}: class(es) {shown} have no result in {str(base)!r} "
            "(run it, or finish it with --resume)"
        )
    return AttackResult(
        attack=attack,
        classes=classes,
        images=torch.stack([found[c][0] for c in classes]),
        target_confidence=torch.stack([found[c][1] for c in classes]),
        config=dict(expected["config"], precision_used=first_state["precision_used"], **merged_query_counts([p for _, p, _ in folders], classes)),
        seconds=sum(_read_timing(path) for _, path, _ in folders),
    )


def _owning_shards(missing: Sequence[int], chunks: Sequence[Sequence[int]], count: int) -> list[Shard]:
    wanted = set(missing)
    return [shard for shard in (Shard(i, count) for i in range(count)) if any(c in wanted for chunk in shard.select(chunks) for c in chunk)]


def write_timing(path: str | Path, seconds: float) -> None:
    """Record the attack time of a shard (summed into the merged report's timing)."""
    from ..io.atomic import atomic_write_text

    atomic_write_text(Path(path) / TIMING_FILE, json.dumps({"attack_seconds": round(float(seconds), 3)}) + "\n")


def _read_timing(path: Path) -> float:
    try:
        return float(json.loads((path / TIMING_FILE).read_text())["attack_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


@dataclass
class ShardedRun:
    """What :func:`run_sharded` computed in this process.

    Attributes:
        result: the whole class list's result when ``complete``; otherwise this
            process's shard only (an explicit ``--shard``, or a torchrun rank other than 0).
        complete: whether ``result`` covers every class (metrics may be computed from it).
        shard: the shard this process computed (``None`` for a plain run or a merge).
    """

    result: Any
    complete: bool
    shard: Shard | None = None


def run_sharded(
    attack: Any,
    target: Any,
    prior: Any = None,
    *,
    classes: Sequence[int] | None = None,
    out_dir: str | Path,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
    shard: str | Shard | None = None,
    merge: bool = False,
) -> ShardedRun:
    """Run ``attack`` in one of four ways, all with the single-process result:

    * plain (no ``shard``, no ``merge``, no torchrun): :meth:`Attack.run` into ``out_dir``;
    * ``shard="i/N"``: shard ``i`` of ``N`` into ``out_dir/shard-<i>-of-<N>`` (incomplete);
    * ``merge=True``: nothing is attacked; the shard folders under ``out_dir`` are merged;
    * under torchrun (more than one process): rank ``r`` of ``W`` computes shard
      ``r/W``; all ranks wait for each other (a failure on one rank stops all);
      rank 0 merges the shard folders, which must therefore lie on a file system
      all ranks share. Other ranks return their shard.
    """
    from ..distributed import check_all_ranks, detect_world, process_group

    root = Path(out_dir)
    if shard is not None and merge:
        raise ConfigError("--shard and --merge exclude each other: run the shards first, then the merge")
    if (shard is not None or merge) and detect_world() is not None:
        raise ConfigError("--shard and --merge are for independent jobs; under torchrun every rank attacks its own shard and rank 0 merges")
    if merge:
        return ShardedRun(_merge(attack, target, prior, classes, root, device), complete=True)
    if shard is not None:
        part = Shard.parse(shard)
        return ShardedRun(_run_part(attack, target, prior, classes, root, resume, device, progress, part), complete=False, shard=part)
    with process_group(device if device is not None else "cpu") as world:
        if world is None:
            return ShardedRun(attack.run(target, prior, classes=classes, out_dir=root, resume=resume, device=device, progress=progress), complete=True)
        part = Shard(world.rank, world.size)
        error: BaseException | None = None
        try:
            result = _run_part(attack, target, prior, classes, root, resume, device, progress and world.is_main, part)
        except Exception as exc:  # noqa: BLE001 - every rank must learn of it, or the others hang in the next collective
            error = exc
        check_all_ranks(error)  # also the barrier: every shard folder is complete after it
        if not world.is_main:
            return ShardedRun(result, complete=False, shard=part)
    try:
        merged = _merge(attack, target, prior, classes, root, device)
    except AttackError as exc:
        if "missing shard" in str(exc):
            raise AttackError(f"{exc}; under torchrun the output folder must be on a file system all ranks share") from None
        raise
    return ShardedRun(merged, complete=True, shard=part)


def _run_part(attack: Any, target: Any, prior: Any, classes: Any, root: Path, resume: bool, device: Any, progress: bool, part: Shard) -> Any:
    folder = root / part.dirname
    result = attack.run(target, prior, classes=classes, out_dir=folder, resume=resume, device=device, progress=progress, shard=part)
    write_timing(folder, result.seconds + (_read_timing(folder) if resume else 0.0))
    return result


def _merge(attack: Any, target: Any, prior: Any, classes: Any, root: Path, device: Any) -> Any:
    """Merge the shard folders under ``root`` for the settings of ``attack`` on ``target``/``prior``."""
    from .base import resolve_precision

    dev = torch.device(device) if device is not None else target.mean.device
    class_list = attack._class_list(classes, attack._num_classes(target, dev))
    expected = attack._state(target, prior, class_list, resolve_precision(attack.options["precision"], dev))
    return merge_shards(root, expected, attack=attack.name, chunks=attack._chunks(class_list))
