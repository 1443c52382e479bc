"""midefend._validate: one wording, finite numbers, bool is not a number; and the callers use it."""

from __future__ import annotations

import doctest

import pytest
import torch

from midefend import _validate as v
from midefend.errors import ConfigError
from midefend.training import defense_stages


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (lambda x: v.check_positive_int("rank", x), 0, r"^rank must be a positive integer, got 0$"),
        (lambda x: v.check_positive_int("rank", x), True, r"^rank must be a positive integer, got True$"),
        (lambda x: v.check_positive_int("rank", x), 2.0, r"^rank must be a positive integer, got 2\.0$"),
        (lambda x: v.check_int("epochs", x, minimum=0), -1, r"^epochs must be an integer >= 0, got -1$"),
        (lambda x: v.check_positive_real("lr", x), float("inf"), r"^lr must be a positive finite number, got inf$"),
        (lambda x: v.check_positive_real("lr", x), float("nan"), r"^lr must be a positive finite number, got nan$"),
        (lambda x: v.check_positive_real("lr", x), False, r"^lr must be a positive finite number, got False$"),
        (lambda x: v.check_probability("p", x), 1.5, r"^p must be a probability in \[0, 1\], got 1\.5$"),
        (lambda x: v.check_pair("scale", x, upper=1.0), (0.5, 0.2), r"^scale must be a \(min, max\) pair with 0 < min <= max <= 1, got \(0\.5, 0\.2\)$"),
        (lambda x: v.check_pair("ratio", x, upper=None), [1.0, float("inf")], r"^ratio must be a \(min, max\) pair with 0 < min <= max, got \(1\.0, inf\)$"),
        (lambda x: v.check_bool("strict", x), 1, r"^strict must be True or False, got 1$"),
        (lambda x: v.check_choice("mode", x, ("a", "b")), "c", r"^mode must be one of a, b, got 'c'$"),
        (v.check_device, "gpu:0", r"^device must be a torch device such as 'cpu' or 'cuda:0', got 'gpu:0'$"),
    ],
)
def test_refusals_have_one_wording(check, value, message):
    with pytest.raises(ConfigError, match=message):
        check(value)


def test_accepted_values_come_back_as_plain_python():
    assert v.check_positive_int("n", torch.tensor(3).item()) == 3 and type(v.check_positive_int("n", 3)) is int
    assert v.check_positive_real("lr", 1) == 1.0 and type(v.check_positive_real("lr", 1)) is float
    assert v.check_pair("scale", [0.1, 0.4], upper=1.0) == (0.1, 0.4)
    assert v.check_probability("p", 0) == 0.0 and v.check_probability("p", 1) == 1.0
    assert v.real_tuple(0.5) == (0.5,) and v.real_tuple([1, 2]) == (1.0, 2.0)
    assert v.real_tuple("ab") is None and v.real_tuple([]) is None and v.real_tuple([1, float("nan")]) is None


def test_an_infinite_learning_rate_is_refused_where_it_used_to_pass():
    for name in ("lr", "ca_lr", "head_lr_mult"):
        kwargs = {"epochs": 1, "lr": 1e-3, name: float("inf")}
        with pytest.raises(ConfigError, match=rf"^{name} must be a positive finite number, got inf$"):
            defense_stages("calor", **kwargs)


def test_docstring_example():
    result = doctest.testmod(v, raise_on_error=False, verbose=False)
    assert result.attempted > 0 and result.failed == 0
