"""``midefend demo``: the shipped models, the verdict and caption rules, and (slow) a whole run."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from midefend.evaluation.demo import DEMO_ASSETS, DEMO_FILES, demo_caption, shipped_demo_models


class TestShippedModels:
    def test_files_are_small_and_carry_their_provenance(self):
        paths = shipped_demo_models()
        assert sorted(p.name for p in paths.values()) == sorted(DEMO_FILES.values())
        assert sum(p.stat().st_size for p in paths.values()) < 5_000_000
        for role, path in paths.items():
            with safe_open(str(path), framework="pt") as handle:
                provenance = json.loads(handle.metadata()["provenance"])
            assert provenance["command"].startswith("python benchmarks/demo_models.py"), (role, provenance)
            assert {"role", "seed", "seconds", "git_commit", "written", "data"} <= set(provenance), (role, provenance)

    def test_they_load_and_the_prior_is_named(self):
        from midefend.attacks.priors import load_prior
        from midefend.io.checkpoints import load_checkpoint

        paths = shipped_demo_models()
        nodef, hardened = load_checkpoint(paths["nodef"]), load_checkpoint(paths["hardened"])
        assert nodef.num_classes == hardened.num_classes == 5
        assert hardened.defense and "calor" in json.dumps(hardened.defense)
        assert load_prior(paths["prior"]).name == "digits DCGAN (public digits 5-9)"

    def test_they_are_package_data_and_not_ignored(self):
        import subprocess

        root = DEMO_ASSETS.parents[2]
        package_data = (root / "pyproject.toml").read_text().split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
        assert '"assets/demo/*.safetensors"' in package_data
        done = subprocess.run(["git", "check-ignore", "-q", str(DEMO_ASSETS / "nodef.safetensors")], cwd=root, capture_output=True)
        assert done.returncode == 1, "the shipped demo models must not be ignored by .gitignore"


def _report(rate: float, std: float, classes: int = 5, per_class: int = 8) -> dict:
    return {"metrics": {"attack_acc_top1": rate, "attack_acc_top1_std": std, "per_class": [{}] * classes},
            "attack": {"per_class": per_class}, "target": {"num_classes": classes}}  # fmt: skip


class TestVerdictAndCaption:
    def test_a_difference_within_the_noise_is_not_an_effect(self):
        verdict, caption = demo_caption([_report(0.725, 0.391), _report(0.925, 0.15)], ["NoDef", "MIDRE+CALoR"], data="digits")
        assert verdict.startswith("this run cannot tell NoDef from MIDRE+CALoR: the evaluation model accepts 72.5% and 92.5%")
        assert "within the noise" in verdict and "leaks" not in verdict

    def test_a_difference_beyond_the_noise_is_named_with_its_noise(self):
        verdict, _ = demo_caption([_report(0.9, 0.05, classes=40), _report(0.3, 0.05, classes=40)], ["NoDef", "X"], data="orl")
        assert verdict.startswith("X leaks lower than NoDef on this run:") and "beyond the noise (±" in verdict

    def test_zero_and_full_rates_still_carry_noise(self):
        verdict, _ = demo_caption([_report(1.0, 0.0), _report(1.0, 0.0)], ["NoDef", "X"], data="digits")
        assert "cannot tell" in verdict and "±0.0 points" not in verdict

    def test_the_caption_says_classes_reconstructions_spread_judges_and_limits(self):
        _, caption = demo_caption([_report(0.7, 0.3), _report(0.6, 0.3)], ["NoDef", "X"], data="digits")
        text = "\n".join(caption)
        assert "5 of 5 classes, 8 reconstructions each (40 per target)" in text
        assert "one standard error" in text and "The table above does not carry a smaller one" in text
        assert "It is not an independent judge" in text
        assert "What it cannot show: whether a defense protects faces" in text


@pytest.mark.slow
def test_the_demo_runs_on_the_shipped_models_and_ends_with_a_verdict_and_caption(tmp_path):
    """The whole README command 1 demo (about a minute on 2 cores): a real verify of both shipped targets."""
    from midefend.cli import app

    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--quiet"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    verdict = next(i for i, line in enumerate(lines) if line.startswith("verdict: "))
    assert lines[verdict + 1].startswith("- What this shows:") and lines[-1].startswith("- What it cannot show:")
    assert "using the shipped demo models" in result.output
    for name in ("compare.md", "compare.json", "demo.md"):
        assert (tmp_path / "demo" / name).is_file(), name
    md = (tmp_path / "demo" / "verify-nodef" / "report.md").read_text()
    assert "- prior: digits DCGAN (public digits 5-9)" in md
