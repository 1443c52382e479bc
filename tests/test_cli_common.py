"""CLI-wide error policy: usage errors and anticipated errors are one line, never a traceback."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from midefend.cli import app

runner = CliRunner()


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bogus"], r"^error: No such command 'bogus'\. \(see 'midefend --help'\)$"),
        (["inspect"], r"^error: Missing argument 'CKPT'\. \(see 'midefend inspect --help'\)$"),
        (["harden", __file__, "b.safetensors"], r"^error: Missing option '--rank'\."),  # IN must exist: this file
        (["harden", __file__, "b.safetensors", "--rank", "x"], r"^error: Invalid value for '--rank'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    import re

    assert re.search(message, _one_error_line(result))


def test_runtime_error_is_one_line_exit_1(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    result = runner.invoke(app, ["inspect", str(tmp_path / "empty.safetensors")])
    assert result.exit_code == 1
    assert _one_error_line(result).startswith("error: ")


def _commands_given(path: str) -> list[list[str]]:
    """Every command that reads an input file, called with ``path`` as that file."""
    return [
        ["inspect", path],
        ["harden", path, path + ".out", "--rank", "2"],
        ["verify", path, "--data", "digits", "--eval-model", path],
        ["compare", path, path],
    ]


@pytest.mark.parametrize("index", range(4), ids=["inspect", "harden", "verify", "compare"])
def test_exit_code_policy_is_the_same_in_every_command(tmp_path, index):
    """One policy: an input path that does not exist is a usage error (2) in every command; a file
    that exists but is not a checkpoint is a runtime error (1)."""
    missing = _commands_given(str(tmp_path / "missing.safetensors"))[index]
    result = runner.invoke(app, missing)
    assert result.exit_code == 2, result.output
    # verify's --eval-model also takes the word 'facenet', so its message names both choices
    assert re.fullmatch(
        r"error: Invalid value for .*(?:(?:file|path) '.*missing\.safetensors' does not exist\.|'.*missing\.safetensors' is neither a face recogniser \(facenet, dlib\) nor an existing checkpoint file).*",
        _one_error_line(result),
    )
    (tmp_path / "garbage.safetensors").write_bytes(b"not a checkpoint at all")
    garbage = _commands_given(str(tmp_path / "garbage.safetensors"))[index]
    result = runner.invoke(app, garbage)
    assert result.exit_code == 1, result.output
    assert _one_error_line(result).startswith("error: ")


def test_no_arguments_shows_help():
    result = runner.invoke(app, [])
    assert "Usage" in result.output
    for command in ("inspect", "harden", "train", "verify", "compare", "demo"):
        assert command in result.output


class TestTheCliAnswersAtOnce:
    """``--help``, ``--version``, every ``<command> --help``, ``inspect`` and argument errors never import torch.

    The import list is pinned (not a wall time, which a shared machine would make flaky); one case measures
    the CPU time of a missing-file error in a fresh process, with a bound far above what it takes (~0.2 s).
    """

    HEAVY = ("torch", "torchvision", "timm")
    PROBE = (
        "import sys\n"
        "sys.argv = ['midefend', *sys.argv[1:]]\n"
        "from midefend.cli import main\n"
        "code = 0\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print('HEAVY=' + ','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )

    def _run(self, *args: str):
        import subprocess
        import sys

        probe = self.PROBE.format(heavy=self.HEAVY)
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
        heavy = [line for line in done.stderr.splitlines() if line.startswith("HEAVY=")]
        assert heavy, done.stderr[-2000:]
        return done, heavy[-1].removeprefix("HEAVY=")

    @pytest.mark.parametrize(
        "args",
        [["--help"], ["--version"], *[[command, "--help"] for command in
         ("verify", "compare", "demo", "train", "tune", "inspect", "harden", "review")]],  # fmt: skip
        ids=lambda args: " ".join(args),
    )
    def test_help_imports_no_torch(self, args):
        _, heavy = self._run(*args)
        assert heavy == "", f"midefend {' '.join(args)} imported {heavy}"

    def test_every_command_is_in_the_help_list(self):
        names = sorted(command.name for command in app.registered_commands)
        assert names == ["compare", "demo", "harden", "inspect", "review", "train", "tune", "verify"]

    @pytest.mark.parametrize(
        "args",
        [["verify", "missing.safetensors"], ["verify", "--bogus"], ["compare", "a.safetensors", "b.safetensors"],
         ["train", "--data", "digits", "--out", "x.pt"], ["train", "--data", "digits", "--out", "x.safetensors", "--defense", "bogus"],
         ["inspect", "missing.safetensors"], ["verify", __file__, "--eval-model", "bogus"]],  # fmt: skip
        ids=lambda args: " ".join(args),
    )
    def test_argument_errors_import_no_torch(self, args, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        done, heavy = self._run(*args)
        assert done.returncode in (1, 2) and "error:" in done.stderr, done.stderr[-2000:]
        assert heavy == "", f"midefend {' '.join(args)} imported {heavy} before refusing its arguments"

    def test_inspect_reads_the_header_without_torch(self, tmp_path):
        import torch

        from midefend.architectures import build_model
        from midefend.io.checkpoints import save_checkpoint

        path = tmp_path / "m.safetensors"
        save_checkpoint(build_model("timm/test_resnet", num_classes=3, in_chans=1), path, arch="timm/test_resnet",
                        arch_kwargs={"in_chans": 1}, num_classes=3, input_size=(1, 32, 32), mean=(0.5,), std=(0.5,))  # fmt: skip
        assert torch.is_tensor(torch.zeros(1))
        done, heavy = self._run("inspect", str(path))
        assert done.returncode == 0 and "timm/test_resnet" in done.stdout, done.stderr[-2000:]
        assert heavy == ""

    def test_a_missing_file_is_refused_in_under_one_cpu_second(self, tmp_path):
        import resource
        import subprocess
        import sys

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run([sys.executable, "-m", "midefend", "verify", str(tmp_path / "missing.safetensors")],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert done.returncode == 2 and "does not exist" in done.stderr, done.stderr
        assert cpu <= 1.0, f"a missing file took {cpu:.2f} CPU-s to report"


def test_builtin_defense_names_for_the_help_match_the_registry():
    from midefend.cli._common import BUILTIN_DEFENSES
    from midefend.training.recipes import list_defenses

    assert sorted(BUILTIN_DEFENSES) == list_defenses()


def test_builtin_recogniser_names_match_the_registry():
    from midefend.cli._common import BUILTIN_RECOGNISERS
    from midefend.evaluation.recognisers import registered_recognisers

    assert list(BUILTIN_RECOGNISERS) == registered_recognisers()


def test_an_unknown_defense_has_the_registrys_message_without_the_registry():
    from midefend.errors import ConfigError
    from midefend.training.recipes import get_defense

    with pytest.raises(ConfigError) as registry:
        get_defense("bogus")
    result = runner.invoke(app, ["train", "--data", "digits", "--out", "x.safetensors", "--defense", "bogus"])
    assert result.exit_code == 1 and _one_error_line(result) == f"error: {registry.value}"
