"""Data-parallel training: the plan's arithmetic in one process, and a real 2-process torchrun run against one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from midefend.distributed import World, env_world, local_device
from midefend.errors import ConfigError
from midefend.training.augment import get_augment
from midefend.training.distributed import CrossRankBatchNorm1d, plan_data_parallel, sync_head_norms, unsync_head_norms

TESTS = Path(__file__).resolve().parent


def _plans(size: int, batch: int):
    return [plan_data_parallel(World(r, size, r), batch) for r in range(size)]


class TestPlan:
    def test_ranks_split_each_single_process_batch(self):
        plans = _plans(2, 8)
        batches = [list(p.global_batches(21, torch.Generator().manual_seed(5))) for p in plans]
        order = torch.randperm(21, generator=torch.Generator().manual_seed(5))
        assert len(batches[0]) == plans[0].steps_per_epoch(21) == 2  # the incomplete global batch of 5 is dropped
        for step, batch in enumerate(batches[0]):
            assert torch.equal(batch, order[8 * step : 8 * step + 8]) and torch.equal(batches[1][step], batch)
            assert torch.equal(torch.cat([p.local(batch) for p in plans]), batch)

    def test_ranks_warp_their_slice_as_one_process_would(self):
        images = torch.rand(10, 1, 8, 8)
        augment = get_augment("strong")
        batch = torch.tensor([3, 1, 4, 0, 9, 2, 6, 5])
        single = augment(images[batch], generator=torch.Generator().manual_seed(2))
        parts = [p.augment(augment, images, batch, torch.Generator().manual_seed(2)) for p in _plans(2, 8)]
        torch.testing.assert_close(torch.cat(parts), single, rtol=0, atol=1e-6)
        assert not torch.allclose(parts[0], parts[1])

    def test_streams_per_rank(self):
        p0, p1 = _plans(2, 8)
        assert p0.erase_seed(7) == 8 and p0.rng_seed(7) == 7  # rank 0: the single-process streams
        assert len({p0.erase_seed(7), p1.erase_seed(7), p0.rng_seed(7), p1.rng_seed(7)}) == 4

    def test_global_batch_must_divide(self):
        assert plan_data_parallel(None, 7) is None
        with pytest.raises(ConfigError, match=r"^batch_size 10 is the global batch and must be divisible by the 4 processes of this torchrun"):
            plan_data_parallel(World(0, 4, 0), 10)
        with pytest.raises(ConfigError, match="batch_size 4 leaves 1 image per process; BatchNorm needs at least 2"):
            plan_data_parallel(World(0, 4, 0), 4)

    def test_torchrun_environment(self):
        assert env_world({}) is None and env_world({"WORLD_SIZE": "1", "RANK": "0"}) is None
        assert env_world({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == World(3, 4, 1)
        with pytest.raises(ConfigError, match="torchrun environment is inconsistent: RANK=4, WORLD_SIZE=4"):
            env_world({"WORLD_SIZE": "4", "RANK": "4"})
        assert local_device("cuda", World(3, 4, 1)) == torch.device("cuda", 1)
        assert local_device("cpu", World(3, 4, 1)) == torch.device("cpu")

    @pytest.mark.parametrize("device, backend, device_id", [("cuda", "nccl", torch.device("cuda", 1)), ("cpu", "gloo", None)])
    def test_backend_dispatch_under_torchrun(self, monkeypatch, device, backend, device_id):
        """NCCL with this rank's GPU for CUDA runs, gloo on the CPU (CUDA calls mocked: no GPU here)."""
        import midefend.distributed as md

        calls = []
        monkeypatch.setattr(md, "env_world", lambda env=None: World(3, 4, 1))
        monkeypatch.setattr(md.dist, "is_initialized", lambda: False)
        monkeypatch.setattr(md.dist, "init_process_group", lambda **kw: calls.append(("init", kw)))
        monkeypatch.setattr(md.torch.cuda, "set_device", lambda dev: calls.append(("set_device", dev)))
        monkeypatch.setattr(md.atexit, "register", lambda fn: None)
        with md.process_group(device) as world:
            assert world == World(3, 4, 1)
        expected = [("init", {"backend": backend, "device_id": device_id})]
        assert calls == ([("set_device", device_id)] + expected if device == "cuda" else expected)

    def test_head_norm_sync_round_trip(self):
        from midefend.defenses.heads import LowRankTanhHead

        model = nn.Sequential(nn.Flatten(), LowRankTanhHead(6, 3, 2))
        model[1].norm.running_mean.fill_(0.25)
        x = torch.randn(5, 6)
        expected = model(x)
        sync_head_norms(model, torch.device("cpu"))
        assert type(model[1].norm) is CrossRankBatchNorm1d
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)  # no process group: a plain BatchNorm1d
        state = {k: v.clone() for k, v in model[1].norm.state_dict().items()}
        assert float(state["running_mean"][0]) != 0.25 and int(state["num_batches_tracked"]) == 2  # two training passes
        unsync_head_norms(model)
        assert type(model[1].norm) is nn.BatchNorm1d and model[1].norm.training
        for key, value in model[1].norm.state_dict().items():
            assert torch.equal(value, state[key]), key


def test_torchrun_training_matches_one_process(tmp_path):
    """``train_target`` on 2 gloo processes (global batch 8 = 2 x 4) trains the weights one process trains with batch 8.

    A CALoR recipe: pre-training, hardening with the SVD warm start, the head stage
    (the head's BatchNorm synchronised across ranks: left per rank, the weights differ
    by about 0.05) and the head-only CA stage. Then an interrupted and resumed run.
    """
    sys.path.insert(0, str(TESTS))
    import ddp_train_worker
    from midefend.io.checkpoints import load_checkpoint

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]))
    worker = str(TESTS / "ddp_train_worker.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker, str(tmp_path / "ddp.safetensors"), str(tmp_path / "resumed.safetensors")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # No deprecation from the DDP plumbing (the tiny model's CA guard-rail warning about low p_y is expected).
    assert "FutureWarning" not in done.stderr and "DeprecationWarning" not in done.stderr, done.stderr[-3000:]

    single = ddp_train_worker.train(tmp_path / "one.safetensors")
    ddp = load_checkpoint(tmp_path / "ddp.safetensors")
    assert ddp.extra["training"]["world_size"] == 2 and single.config["world_size"] == 1
    assert ddp.hardening is not None
    reference = single.model.state_dict()
    loaded = ddp.model.state_dict()
    assert sorted(loaded) == sorted(reference)
    for name, value in reference.items():
        torch.testing.assert_close(loaded[name].float(), value.float(), rtol=1e-4, atol=1e-5, msg=name)
    assert single.history[-1]["train_accuracy"] > 0.4  # it learned something (chance: 0.25)
    # The same run stopped after 3 of its 7 epochs and resumed from rank 0's state file: the same weights, bit for bit.
    resumed = load_checkpoint(tmp_path / "resumed.safetensors").model.state_dict()
    for name, value in loaded.items():
        assert torch.equal(resumed[name], value), name


def _fail_on_rank_1(rank: int, port: int, results: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    from midefend.distributed import check_all_ranks, process_group

    with process_group("cpu") as world:
        try:
            check_all_ranks(ConfigError("bad input on this rank") if world.rank == 1 else None)
            message = "no error"
        except Exception as exc:  # noqa: BLE001 - the test reads what each rank raised
            message = f"{type(exc).__name__}: {exc}"
    Path(results, f"{rank}.txt").write_text(message)


def test_a_failing_rank_stops_every_rank(tmp_path):
    """Without the shared check, rank 0 would wait in its next collective until the 30-minute timeout."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_fail_on_rank_1, args=(port, str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "0.txt").read_text() == "RankFailed: rank 1 of 2 failed: bad input on this rank"
    assert (tmp_path / "1.txt").read_text() == "ConfigError: bad input on this rank"
