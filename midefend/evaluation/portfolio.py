"""Which attacks ``verify`` runs: every registered attack the threat model allows, plus adaptive variants.

A defense is judged by the strongest attack that can be run against it. The
portfolio is planned from three things:

- the **threat model** (``"white-box"`` > ``"black-box"`` > ``"label-only"``):
  an attacker runs every attack that needs no more than it sees, so a
  white-box attacker also runs the black-box and label-only attacks;
- the **registry**: every attack registered with
  :func:`~midefend.attacks.register_attack` joins, unless its class sets
  ``in_portfolio = False`` (too slow by default; ``--attack NAME`` still runs
  it). An attack that needs a prior is skipped when there is none, and one
  that refuses the prior (GMI needs a discriminator) is skipped with its reason;
- the **defense the checkpoint records**: for each attack that supports the
  adaptive options (and sets ``adaptive_in_portfolio``, or is asked for with
  ``attack=``), one adaptive variant with every adaptation the defense calls
  for (:func:`~midefend.attacks.adaptive.adaptive_options`: EOT over erasures
  against MIDRE, BPDA + the CA-optimum loss against CALoR). ``adaptive="on"``
  forces them, ``"off"`` drops them.

>>> [p.label for p in plan_portfolio(attack="miface", defense={"name": "nodef"})[0]]
['miface']
>>> [p.label for p in plan_portfolio(attack="miface", defense={"name": "calor", "rank": 12, "ca_b": 8.0})[0]]
['miface', 'miface+bpda+ca']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import AttackError, ConfigError

ADAPTIVE_MODES = ("auto", "on", "off")


@dataclass
class PlannedAttack:
    """One row of the portfolio: a registered attack with its options."""

    label: str
    attack: str
    options: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    adaptive: bool = False
    threat_model: str = "white-box"

    def build(self, **overrides: Any) -> Any:
        """The attack instance (``overrides``, e.g. another ``seed``, on top of the planned options)."""
        from ..attacks import get_attack

        return get_attack(self.attack)(preset=self.preset, **{**self.options, **overrides})


def allowed_threat_models(threat_model: str) -> tuple[str, ...]:
    """The threat models an attacker with ``threat_model`` may use (itself and every weaker one).

    >>> allowed_threat_models("black-box")
    ('black-box', 'label-only')
    """
    from ..attacks.base import THREAT_MODELS

    if threat_model not in THREAT_MODELS:
        raise ConfigError(f"threat model must be one of {', '.join(THREAT_MODELS)}, got {threat_model!r}")
    return THREAT_MODELS[THREAT_MODELS.index(threat_model) :]


def _label(attack: str, options: Mapping[str, Any]) -> str:
    parts = [attack]
    if options.get("eot"):
        parts.append("eot")
    if options.get("bpda"):
        parts.append("bpda")
    if options.get("ca_target") is not None:
        parts.append("ca")
    return "+".join(parts)


def _accepted(cls: type, preset: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """The shared options this attack class knows (an option one attack lacks must not stop the others)."""
    known = set(cls(preset=preset if preset in cls.presets else None).options)
    return {k: v for k, v in options.items() if k in known}


def plan_portfolio(
    *,
    threat_model: str = "white-box",
    defense: Mapping[str, Any] | None = None,
    prior: Any = None,
    adaptive: str = "auto",
    attack: str | None = None,
    fast: bool = False,
    options: Mapping[str, Any] | None = None,
) -> tuple[list[PlannedAttack], list[dict[str, str]]]:
    """``(planned, skipped)``: the attacks to run, in order (each base attack, then its adaptive variant),
    and ``{"attack", "reason"}`` for each registered attack left out.

    Args:
        threat_model: what the attacker sees of the target.
        defense: the target checkpoint's defense record (chooses the adaptive variants).
        prior: the loaded prior, or ``None`` (attacks that need one are skipped).
        adaptive: ``"auto"`` (from ``defense``), ``"on"`` (all adaptations) or ``"off"``.
        attack: run only this registered attack (and its adaptive variant), whatever its
            threat model and ``in_portfolio``.
        fast: use each attack's ``"fast"`` preset where it has one.
        options: shared attack options (``per_class``, ``steps``, ``seed`` ...); each attack
            receives those it knows.
    """
    from ..attacks import get_attack, list_attacks
    from ..attacks.adaptive import adaptive_options

    if adaptive not in ADAPTIVE_MODES:
        raise ConfigError(f"adaptive must be one of {', '.join(ADAPTIVE_MODES)}, got {adaptive!r}")
    allowed = allowed_threat_models(threat_model)
    names = [attack] if attack is not None else list_attacks()
    extra = {} if adaptive == "off" else adaptive_options(defense, force=adaptive == "on")
    planned: list[PlannedAttack] = []
    skipped: list[dict[str, str]] = []
    for name in names:
        cls = get_attack(name)
        if attack is None and not cls.in_portfolio:
            skipped.append({"attack": name, "reason": "not in the default portfolio (too slow); run it with --attack"})
            continue
        if attack is None and cls.threat_model not in allowed:
            skipped.append({"attack": name, "reason": f"needs {cls.threat_model} access; the threat model is {threat_model}"})
            continue
        if cls.uses_prior and prior is None:
            if attack is not None:
                raise AttackError(f"attack {name!r} needs a generator prior (for example 'face-gan')")
            skipped.append({"attack": name, "reason": "needs a generator prior"})
            continue
        preset = "fast" if fast and "fast" in cls.presets else None
        shared = _accepted(cls, preset, options or {})
        instance = cls(preset=preset, **shared)
        try:
            instance.check_prior(prior)
        except AttackError as exc:
            if attack is not None:
                raise
            skipped.append({"attack": name, "reason": str(exc)})
            continue
        planned.append(PlannedAttack(name, name, shared, preset, False, cls.threat_model))
        if extra and cls.supports_adaptive and (attack is not None or cls.adaptive_in_portfolio):
            variant = {**shared, **extra}
            planned.append(PlannedAttack(_label(name, variant), name, variant, preset, True, cls.threat_model))
    if not planned:
        raise ConfigError(f"no attack can run under the {threat_model} threat model with this prior: " + "; ".join(f"{s['attack']}: {s['reason']}" for s in skipped))
    unused = sorted(set(options or {}) - {k for row in planned for k in row.options})
    if unused:  # an option no planned attack knows would be silently ignored: say so instead
        raise ConfigError(
            f"option {', '.join(map(repr, unused))} applies to none of the planned attacks ({', '.join(r.label for r in planned)})"
        )
    return planned, skipped


__all__ = ["ADAPTIVE_MODES", "PlannedAttack", "allowed_threat_models", "plan_portfolio"]
