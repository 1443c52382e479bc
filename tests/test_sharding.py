"""Sharded verification: ``--shard i/N`` + ``--merge`` and torchrun give exactly the single-process report.

The tiny world has 5 classes; ``class_batch=2`` cuts them into the chunks
[0, 1], [2, 3], [4], so 2 shards own [0, 1] and [2, 3, 4], and 3 shards one
chunk each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from attack_fixtures import tiny_world  # noqa: F401  (session fixture: tiny models, data, prior)
from midefend.attacks.base import Attack
from midefend.attacks.shard import Shard
from midefend.cli import app
from midefend.errors import AttackError, ConfigError
from midefend.evaluation.verify import verify

OPTIONS = {"per_class": 2, "candidates": 3, "steps": 4, "class_batch": 2, "seed": 0}  # with PPA's "fast" preset
VOLATILE = ("timing", "files")  # wall times and output paths: everything else must match exactly


def _verify(w, out, **kwargs):
    options = dict(OPTIONS, **kwargs.pop("options", {}))
    return verify(
        w.paths["target"], eval_model=w.paths["eval"], data=w.folder, prior=w.paths["prior"], attack="ppa", fast=True, out_dir=out, attack_options=options, **kwargs
    )


def _stable(report: dict) -> dict:
    """The report without wall times and paths (also in each attack's row)."""
    out = {k: v for k, v in report.items() if k not in VOLATILE}
    out["attacks"] = [{k: v for k, v in row.items() if k != "seconds"} for row in report["attacks"]]
    if isinstance(out.get("reach"), dict):  # the prior-reach step's wall time
        out["reach"] = {k: v for k, v in out["reach"].items() if k != "seconds"}
    return out


def _class_files(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: load_file(str(p)) for p in sorted(folder.rglob("class_*.safetensors"))}


@pytest.fixture
def one_thread():
    """One thread per process, as torchrun gives each worker: some kernels sum in a thread-dependent order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tiny_world, tmp_path_factory):
    """The single-process run (one thread): its report and reconstructions are what every sharded run must give."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("reference")
        return out, _verify(tiny_world, out)
    finally:
        torch.set_num_threads(threads)


class TestShard:
    def test_parse_and_name(self):
        assert Shard.parse(" 3 / 8 ") == Shard(3, 8)
        assert Shard(3, 8).dirname == "shard-0003-of-0008" and str(Shard(3, 8)) == "3/8"

    @pytest.mark.parametrize(
        "spec, message",
        [("2/2", r"shard index must be in 0\.\.1 for 2 shards, got 2"), ("0/0", "shard count must be a positive integer, got 0"),
         ("1-4", r"shard must look like 'i/N' with 0 <= i < N \(e\.g\. '0/4'\), got '1-4'"), ("-1/4", "shard must look like")],
    )  # fmt: skip
    def test_bad_specs(self, spec, message):
        with pytest.raises(ConfigError, match=message):
            Shard.parse(spec)

    def test_no_shard_or_merge_option_under_torchrun(self, monkeypatch, tmp_path):
        from midefend.attacks.sharding import run_sharded

        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "1")
        for kwargs in ({"shard": "0/2"}, {"merge": True}):
            with pytest.raises(ConfigError, match="^--shard and --merge are for independent jobs; under torchrun every rank attacks its own shard"):
                run_sharded(None, None, out_dir=tmp_path, **kwargs)

    def test_shards_partition_the_chunks_contiguously_and_evenly(self):
        for m in range(0, 12):
            chunks = [[2 * i, 2 * i + 1] for i in range(m)]
            for n in range(1, 9):
                parts = [Shard(i, n).select(chunks) for i in range(n)]
                assert [c for part in parts for c in part] == chunks  # every chunk once, in order
                assert max(map(len, parts)) - min(map(len, parts)) <= 1


class TestShardAndMerge:
    def test_shards_then_merge_equal_the_single_process_report(self, tiny_world, reference, tmp_path, monkeypatch, one_thread):
        ref_dir, ref_report = reference
        out = tmp_path / "sharded"
        summary = _verify(tiny_world, out, shard="0/2")
        assert summary["format"] == "midefend-verify-shard" and [run["classes"] for run in summary["runs"]] == [[0, 1]]
        assert not (out / "report.json").exists()

        # Shard 1/2 owns two chunks; it is interrupted in the second one, then resumed.
        calls = {"n": 0}
        original = Attack._attack_chunk

        def interrupted(self, ctx, chunk, advance):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return original(self, ctx, chunk, advance)

        monkeypatch.setattr(Attack, "_attack_chunk", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _verify(tiny_world, out, shard="1/2")
        assert sorted(p.name for p in (out / "attack" / "shard-0001-of-0002").glob("class_*")) == ["class_00002.safetensors", "class_00003.safetensors"]
        calls["n"] = 10
        _verify(tiny_world, out, shard="1/2", resume=True)
        assert calls["n"] == 11  # only the unfinished chunk [4] was attacked again
        monkeypatch.undo()

        merged = _verify(tiny_world, out, merge=True)
        assert _stable(merged) == _stable(ref_report)
        assert (out / "grid.png").read_bytes() == (ref_dir / "grid.png").read_bytes()
        ref_files, shard_files = _class_files(ref_dir / "attack"), _class_files(out / "attack")
        assert sorted(shard_files) == sorted(ref_files) == [f"class_0000{c}.safetensors" for c in range(5)]
        for name, tensors in ref_files.items():
            for key, value in tensors.items():
                assert torch.equal(shard_files[name][key], value), (name, key)

    def test_merged_query_counts_equal_the_single_process_counts(self, tiny_world, tmp_path, one_thread):
        """A black-box attack's queries survive the merge: per class from its shard, the shared pool once."""
        from midefend.attacks import get_attack
        from midefend.attacks.sharding import run_sharded

        options = {"per_class": 1, "candidates": 2, "steps": 2, "samples": 2, "init_pool": 20, "class_batch": 2, "seed": 0}
        single = get_attack("nes")(**options).run(tiny_world.target, tiny_world.prior, out_dir=tmp_path / "single")
        for i in range(2):
            run_sharded(get_attack("nes")(**options), tiny_world.target, tiny_world.prior, out_dir=tmp_path / "sharded", shard=f"{i}/2")
        merged = run_sharded(get_attack("nes")(**options), tiny_world.target, tiny_world.prior, out_dir=tmp_path / "sharded", merge=True).result
        keys = ("queries", "queries_shared", "queries_per_class")
        assert single.config["queries_shared"] == 20 and None not in single.config["queries_per_class"]
        assert {k: merged.config[k] for k in keys} == {k: single.config[k] for k in keys}
        assert torch.equal(merged.images, single.images)

    def test_merge_refuses_missing_and_mismatched_shards(self, tiny_world, tmp_path):
        """At the engine level (no data, no metrics): the merge's one-line refusals."""
        from midefend.attacks.registry import get_attack
        from midefend.attacks.sharding import run_sharded

        w, out = tiny_world, tmp_path / "bad"

        def run(**kwargs):
            options = dict(OPTIONS, init_pool=32, **kwargs.pop("options", {}))
            return run_sharded(get_attack("ppa")(preset="fast", **options), w.target, w.prior, out_dir=out, classes=kwargs.pop("classes", None), **kwargs)

        with pytest.raises(AttackError, match=r"cannot merge: no shard results in .* \(run the same command with --shard i/N for every i first\)"):
            run(merge=True)
        run(shard="0/3")
        run(shard="1/3")
        with pytest.raises(AttackError, match=r"^cannot merge: missing shard 2/3: class\(es\) 4 have no result in .* \(run it, or finish it with --resume\)$"):
            run(merge=True)
        run(shard="1/2", options={"steps": 5})  # classes 2, 3 (also in shard 1/3) and 4
        with pytest.raises(AttackError, match=r"^cannot merge: class 2 was computed twice with different settings \(shard 1/2 and shard 1/3: steps 5 vs 4\); remove the stale shard folder$"):
            run(merge=True)
        (out / "shard-0001-of-0002" / "attack.json").unlink()
        with pytest.raises(AttackError, match=r"shard 0/3 in .* was computed with other settings than this command \(seed 0 vs 1\)$"):
            run(merge=True, options={"seed": 1})
        with pytest.raises(AttackError, match=r"shard 0/3 in .* attacked another class list than this command \(check --classes\)"):
            run(merge=True, classes=[0, 1, 2, 3])
        with pytest.raises(ConfigError, match="--shard and --merge exclude each other"):
            run(merge=True, shard="0/3")
        run(shard="2/3")
        merged = run(merge=True)
        assert merged.complete and merged.result.classes == [0, 1, 2, 3, 4] and merged.result.images.shape[:2] == (5, 2)

    def test_cli_shard_and_merge_errors(self, tiny_world, tmp_path):
        w = tiny_world
        base = ["verify", w.paths["target"], "--eval-model", w.paths["eval"], "--data", w.folder, "--prior", w.paths["prior"], "--attack", "ppa"]
        base += ["--out", tmp_path / "cli", "--steps", "2", "--per-class", "1", "--class-batch", "2", "--fast", "--quiet"]
        runner = CliRunner()
        done = runner.invoke(app, [str(a) for a in base + ["--shard", "0/2"]])
        assert done.exit_code == 0, done.output
        assert "shard 0/2: 2 class result(s) in 1 attack run(s)" in done.output and "run the same command with --merge" in done.output
        merged = runner.invoke(app, [str(a) for a in base + ["--merge"]])
        assert merged.exit_code == 1
        assert "error: cannot merge: missing shard 1/2: class(es) 2, 3, 4 have no result" in merged.output


def test_torchrun_verify_equals_the_single_process_report(tiny_world, reference, tmp_path):
    """Two gloo processes under torchrun: rank r attacks shard r/2, rank 0 merges and writes the one report."""
    ref_dir, ref_report = reference
    w = tiny_world
    out = tmp_path / "torchrun"
    args = ["verify", w.paths["target"], "--eval-model", w.paths["eval"], "--data", w.folder, "--prior", w.paths["prior"], "--attack", "ppa", "--out", out, "--quiet"]
    args += ["--fast", "--per-class", "2", "--candidates", "3", "--steps", "4", "--class-batch", "2", "--seed", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "midefend", *map(str, args)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "shard 1/2: 3 class result(s) in 1 attack run(s)" in done.stdout and "rank 0 writes the report" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert _stable(report) == _stable(json.loads((ref_dir / "report.json").read_text()))
    assert (out / "grid.png").read_bytes() == (ref_dir / "grid.png").read_bytes()
    assert sorted(p.parent.name for p in (out / "attack").rglob("class_*.safetensors")) == ["shard-0000-of-0002"] * 2 + ["shard-0001-of-0002"] * 3
