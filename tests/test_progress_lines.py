"""Long stages print progress lines when stderr is not a terminal (a log, CI, ``| tee``), where a live bar prints nothing."""

from __future__ import annotations

import io

from rich.console import Console

from midefend.attacks import _progress
from midefend.training.progress import TrainingProgress


def test_attack_bar_prints_start_periodic_and_end_lines(capsys, monkeypatch):
    monkeypatch.setattr(_progress, "LOG_EVERY_S", 0.0)  # every advance is due
    with _progress.progress_bar(True, "ppa attack", 3) as advance:
        for _ in range(4):  # one more than the total: the end line is printed once
            advance()
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert lines[0] == "ppa attack: 0/3"
    assert [line.split(" (")[0] for line in lines[1:]] == ["ppa attack: 1/3", "ppa attack: 2/3", "ppa attack: 3/3"]


def test_attack_bar_is_silent_when_disabled(capsys):
    with _progress.progress_bar(False, "ppa attack", 3) as advance:
        advance()
    assert capsys.readouterr().err == ""


def test_training_prints_one_line_per_epoch_in_a_log():
    log = io.StringIO()
    row = {"loss": 0.5, "train_accuracy": 0.9, "confidence": 0.8, "test_accuracy": 0.85}
    with TrainingProgress(console=Console(file=log, width=240)) as bar:
        bar.start_stage("train", 2)
        bar.update(row)
        bar.update(row)
    assert log.getvalue().splitlines() == [
        "train    epoch 1/2  loss 0.500  acc 90.0%  p_y 0.80  test 85.0%",
        "train    epoch 2/2  loss 0.500  acc 90.0%  p_y 0.80  test 85.0%",
    ]
