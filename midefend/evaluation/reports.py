"""Reports a person can read and look at: JSON, Markdown and a PNG grid; the comparison table.

``midefend verify`` writes three files into its output folder, each atomically
(temporary file, then rename — a crash never leaves a half-written report):

- ``report.json``: everything (settings, metrics, per-class rows), machine-readable;
- ``report.md``: the same as a short Markdown summary;
- ``grid.png``: one row per attacked class — a private image of the class,
  then its reconstructions, best first.

``midefend compare`` turns several reports into one table: the identity columns first
(the consensus of the independent judges, each judge, the evaluation model's hits they do not
confirm), then the papers' layout — AttAcc@1, AttAcc@5, KNN, FID, Δ — the first report being the
undefended (NoDef) reference of Δ.

>>> row = {"name": "nodef", "accuracy": 0.95, "attack_acc_top1": 0.6, "attack_acc_top1_std": 0.2,
...        "attack_acc_top5": 0.9, "attack_acc_top5_std": 0.1, "knn_distance": 120.0, "fid": 35.0, "delta": None}
>>> print(render_comparison_markdown([{**row, "strongest_attack": "ppa"}]).splitlines()[2])
| nodef | 95.0 | – | – | 60.0 ± 20.0 | – | 90.0 ± 10.0 | 120.00 | 35.0 | – | ppa |
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import ConfigError
from ..io.atomic import atomic_write, atomic_write_text
from .metrics import format_delta, tradeoff_delta

REPORT_FORMAT = "midefend-verify-report"
REPORT_VERSION = 1


# --------------------------------------------------------------------------- one report


def _pct(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "–"
    text = f"{100 * value:.1f}"
    return f"{text} ± {100 * std:.1f}" if std is not None else text


def _num(value: float | None, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def std_label(metrics: dict[str, Any]) -> str:
    """What the "±" of a metrics dict is: ``"std over N runs"`` or ``"std over classes"``."""
    if metrics.get("std_over") == "runs":
        return f"std over {metrics.get('runs', '?')} runs"
    return "std over classes"


def scope_prefix(report: dict[str, Any]) -> str:
    """What the verdict covers when it is less than a verdict: a smoke-test preset, a subset of the classes.

    >>> scope_prefix({"attacks": [{"preset": "fast"}], "metrics": {"per_class": [{}, {}]}, "target": {"num_classes": 40}})
    'smoke test (--fast), not a verdict; 2 of 40 classes attacked: '
    """
    parts = []
    if any(r.get("preset") == "fast" for r in report.get("attacks", [])):
        parts.append("smoke test (--fast), not a verdict")
    budget = report.get("budget")
    if budget:
        interval = budget.get("headline_interval")
        parts.append(f"budgeted run ({budget['budget_seconds'] / 60:.0f} min)" + (" too small for a verdict: a smoke test" if budget.get("smoke_test") else "")
                     + (f", headline 95% interval over all classes {100 * interval[0]:.1f}–{100 * interval[1]:.1f}%" if interval else ""))
    done, total = len(report.get("metrics", {}).get("per_class") or []), (report.get("target") or {}).get("num_classes")
    if total and 0 < done < total:
        parts.append(f"{done} of {total} classes attacked")
    return "; ".join(parts) + ": " if parts else ""


def verdict_line(report: dict[str, Any]) -> str:
    """The one-line verdict: what the strongest attack recovers as the independent judges see it, and whether its optimisation worked.

    Reports without an identity verdict (older ones, or none computed) give the evaluator's acceptance, named as such.

    >>> m = {"attack_acc_top1": 0.531, "attack_acc_top1_std": 0.02, "std_over": "runs", "runs": 5, "target_acc_top1": 0.95}
    >>> verdict_line({"strongest_attack": "ppa+eot", "metrics": m, "attacks": [{"name": "ppa+eot", "adaptive": True, "threat_model": "white-box"}]})
    'strongest attack ppa+eot (white-box, adaptive): 53.1 ± 2.0% of reconstructions accepted by the evaluation model (std over 5 runs; no independent judge); the target itself recognises 95.0%'
    """
    from .consensus import IdentityVerdict, verdict_sentence

    m = report["metrics"]
    name = report.get("strongest_attack") or report.get("attack", {}).get("attack", "?")
    row = next((r for r in report.get("attacks", []) if r.get("name") == name), {})
    kind = ", ".join(x for x in (row.get("threat_model"), "adaptive" if row.get("adaptive") else None) if x)
    if (m.get("identity") or {}).get("headline") is not None:
        what = verdict_sentence(IdentityVerdict.from_json(m["identity"]))
    else:
        what = (f"{_pct(m['attack_acc_top1'], m.get('attack_acc_top1_std'))}% of reconstructions accepted by the evaluation model "
                f"({std_label(m)}; no independent judge)")
    line = f"{scope_prefix(report)}strongest attack {name}{f' ({kind})' if kind else ''}: {what}"
    target_acc = m.get("target_acc_top1")
    if target_acc is not None:
        line += f"; the target itself recognises {_pct(target_acc)}%"
        if target_acc < 0.5:
            line += " (the optimisation largely failed: this is not evidence of privacy)"
    return line


ATTACK_HEADER = (
    "attack", "threat model", "adaptive", "identity (%)", "judges @1 (%)", "eval model @1 (%)", "unconfirmed (%)",
    "eval model @5 (%)", "target acc on recon. (%)", "KNN", "FID", "queries", "time (s)",
)  # fmt: skip


_EVAL_COLUMNS = ("eval model @1 (%)", "unconfirmed (%)", "eval model @5 (%)")


def attack_columns(report: dict[str, Any], header: Sequence[str] = ATTACK_HEADER) -> list[int]:
    """Indices of the :data:`ATTACK_HEADER` columns to show: without an evaluation model among the judges
    (face recognisers only) its three columns would be empty, and their "eval model" headers would name a judge
    that did not run, so they are left out.

    >>> [ATTACK_HEADER[i] for i in attack_columns({"judges": [{"name": "facenet", "kind": "face recogniser"}]})][3:6]
    ['identity (%)', 'judges @1 (%)', 'target acc on recon. (%)']
    """
    judges = report.get("judges")
    has_eval = judges is None or any(j.get("kind") == "evaluation model" for j in judges)
    return [i for i, name in enumerate(header) if has_eval or name not in _EVAL_COLUMNS]


def _judge_cells(identity: dict[str, Any] | None) -> tuple[str, str, str]:
    # (headline, each judge's top-1 with its name, unconfirmed share); "–" where not computed
    if not identity or "headline" not in identity:
        return "–", "–", "–"
    head = _pct(identity["headline"]) + ("" if identity.get("consensus_top1") is not None else " (eval)")
    judges = ", ".join(f"{j['name']}{'' if j.get('independent', True) else '*'} {_pct(j['top1'])}" for j in identity.get("judges", [])) or "–"
    return head, judges, _pct(identity.get("unconfirmed_share"))


def attack_cells(row: dict[str, Any], *, time: bool = True) -> list[str]:
    """The cells of one portfolio row, in :data:`ATTACK_HEADER` order (without the time with ``time=False``).

    ``identity`` is the consensus of the independent judges ("(eval)": no independent judge, the evaluation
    model's acceptance); a judge marked ``*`` shares the target's network and is left out of the consensus.
    """
    m = row["metrics"]
    head, judges, unconfirmed = _judge_cells(m.get("identity"))
    evaluator = m.get("evaluator") or "eval"
    has_eval = evaluator not in {j.get("name") for j in (m.get("identity") or {}).get("judges", [])}
    cells = [
        str(row["name"]),
        str(row.get("threat_model", "?")),
        "yes" if row.get("adaptive") else "no",
        head,
        judges,
        _pct(m["attack_acc_top1"], m.get("attack_acc_top1_std")) if has_eval else "–",
        unconfirmed,
        _pct(m["attack_acc_top5"], m.get("attack_acc_top5_std")) if has_eval else "–",
        _pct(m.get("target_acc_top1")),
        _num(m.get("knn_distance"), 2),
        _num(m.get("fid"), 1),
        str(row["queries"]) if row.get("queries") is not None else "–",
    ]
    return cells + [_num(row.get("seconds"), 0)] if time else cells


def render_markdown(report: dict[str, Any]) -> str:
    """A short Markdown summary of a verify report (the content of ``report.md``), verdict first."""
    m, target, attack = report["metrics"], report.get("target", {}), report.get("attack", {})
    rows = report.get("attacks") or []
    lines = [
        f"# midefend verify: {target.get('name', 'target')}",
        "",
        f"**Verdict: {report.get('verdict') or verdict_line(report)}.**",
        "",
        f"- target: `{target.get('path', '?')}` ({target.get('arch', '?')}, defense: {target.get('defense') or 'none'})",
        *_judge_lines(report),
        f"- prior: {(report.get('prior') or {}).get('name', 'none')}",
        f"- threat model: {report.get('threat_model', 'white-box')}; adaptive attacks: {report.get('adaptive_mode', 'auto')}; "
        f"runs per attack: {report.get('repeats', 1)}",
        f"- strongest attack: {report.get('strongest_attack') or attack.get('attack', '?')} (loss {attack.get('loss', '?')}, {attack.get('per_class', '?')} per class "
        f"from {attack.get('candidates', '?')} candidates, {attack.get('steps', '?')} steps, seed {attack.get('seed', '?')})",
        f"- classes attacked: {len(m.get('per_class', []))}; wall time {_num(report.get('timing', {}).get('total_seconds'), 1)} s"
        + (" (" + ", ".join(f"{r['name']} {_num(r.get('seconds'), 0)} s" for r in rows) + " per run)" if rows else ""),
        *(f"- note: {note}" for note in report.get("notes", [])),
        "",
        f"Headline (the strongest attack; ± is the {std_label(m)}):",
        "",
        "| metric | value |",
        "|---|---|",
        f"| natural accuracy (%) | {_pct(m.get('accuracy'))} |",
        *_identity_rows(m.get("identity")),
        f"| attack accuracy @1, {_primary_name(m)} (%) | {_pct(m['attack_acc_top1'], m['attack_acc_top1_std'])} |",
        f"| attack accuracy @5, {_primary_name(m)} (%) | {_pct(m['attack_acc_top5'], m['attack_acc_top5_std'])} |",
    ]
    if m.get("std_over") == "runs":
        lines.append(f"| per-class spread of attack accuracy @1 (std over classes, %) | {_pct(m.get('attack_acc_top1_std_classes'))} |")
    lines += [
        f"| KNN distance ({_primary_name(m).replace(' model', '')} features) | {_num(m['knn_distance'], 2)} |",
        f"| FID ({_primary_name(m).replace(' model', '')} features) | {_num(m['fid'], 1) if m.get('fid') is not None or 'fid' not in (m.get('not_computed') or {}) else 'not computed: ' + m['not_computed']['fid']} |",
        f"| target's own accuracy on reconstructions (%) | {_pct(m.get('target_acc_top1'))} |",
        f"| target's mean confidence on reconstructions | {_num(m.get('target_confidence_mean'), 3)} |",
        *(row for j in (m.get("identity") or {}).get("judges", []) for row in _recogniser_rows(j["name"], m.get(j["name"]))),
        "",
        "A low attack accuracy together with a low *target* accuracy on the reconstructions means the",
        "optimisation failed, not that the identity is hidden: compare models by their strongest attack.",
        "",
    ]
    if rows:
        keep = attack_columns(report, ATTACK_HEADER[:-1])  # times are on the wall-time line above: the table stays the same across runs
        header = [ATTACK_HEADER[i] for i in keep]
        lines += [f"Every attack (± is the {std_label(m)}):", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(attack_cells(row, time=False)[i] for i in keep) + " |" for row in rows]
        lines.append("")
    for skipped in report.get("skipped_attacks") or []:
        lines.append(f"- not run: {skipped['attack']} ({skipped['reason']})")
    if report.get("skipped_attacks"):
        lines.append("")
    if report.get("files", {}).get("grid"):
        lines += [f"![reconstructions]({Path(report['files']['grid']).name})", "", "Each row: a private image, then the strongest attack's reconstructions.", ""]
    for row in rows:
        if row.get("grid"):
            lines += [f"- {row['name']}: ![{row['name']}]({row['grid']})"]
    lines += _reach_lines(report.get("reach"))
    lines += _human_lines(report.get("human"))
    return "\n".join(lines) + ("\n" if rows else "")


def _reach_lines(reach: dict[str, Any] | None) -> list[str]:
    """The prior's reach (midefend.evaluation.reach): per search space, what each judge recognises of the projections."""
    if not reach or "spaces" not in reach:
        return ["", f"Prior reach: {reach['summary']}"] if reach and reach.get("summary") else []
    judges = list(reach["real"])
    lines = [
        "",
        f"Prior reach: {reach['images']} held-out private photos projected into the prior by pixel MSE alone (no judge in the "
        "objective); the share each judge places nearest their person — what any attack through this prior can at best recover "
        f"(chance {_pct(reach['chance_top1'])} %):",
        "",
        "| search space | pixel MSE | " + " | ".join(f"{j} top-1 (%)" for j in judges) + " |",
        "|---|---|" + "---|" * len(judges),
        "| the real photos | – | " + " | ".join(_pct(reach["real"][j]["top1"]) for j in judges) + " |",
    ]
    for space in reach["spaces"]:
        lines.append(f"| {space['space']} | {_num(space['mse'], 4)} | " + " | ".join(_pct((space["judges"].get(j) or {}).get("top1")) for j in judges) + " |")
    if reach.get("grid"):
        lines += ["", f"![real | projection]({reach['grid']})"]
    return lines


def _human_lines(verdict: dict[str, Any] | None) -> list[str]:
    """The "Human verdict" section of report.md (empty without one; ``midefend review`` writes the verdict)."""
    return ["", *human_markdown(verdict)] if verdict else []


def human_markdown(verdict: dict[str, Any] | None) -> list[str]:
    """Markdown lines of a human verdict (a heading, the accuracy table, the judges' agreement); ``[]`` for none."""
    if not verdict:
        return []
    lines = [
        "## Human verdict", "",
        f"Reviewers: {', '.join(verdict['reviewers'])}. Forced choice among K candidate identities; "
        f"\"none of these\" counts as wrong; 95 % interval: {verdict['interval'].split(',')[0]}.", "",
        "| attack | trials | human accuracy (%) | 95 % CI (%) | chance (%) | verdict |", "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, row in verdict["attacks"].items():
        low, high = row["ci95"]
        said = "identity recognised above chance" if row["above_chance"] else "not distinguishable from chance"
        lines.append(f"| {name} | {row['n']} | {_pct(row['accuracy'])} | {_pct(low)}–{_pct(high)} | {_pct(row['chance'])} | {said} |")
    lines += ["", "Automatic judges on the same trials:", ""]
    for name, row in verdict["attacks"].items():
        judges = row["judges"]
        if "note" in judges:
            lines.append(f"- {name}: {judges['note']}")
            continue
        for judge, j in judges.items():
            lines.append(
                f"- {name}, {judge}: judge accuracy {_pct(j['judge_accuracy'])} %, agrees with the person on {_pct(j['agreement'])} % "
                f"of {j['n']} trials; {j['judge_hits_not_confirmed']} of its {j['judge_hits']} hits not confirmed by the person"
            )
    return [*lines, ""]


def _primary_name(m: dict[str, Any]) -> str:
    # the judge of the papers' metrics: the evaluation model, or (without one) the first face recogniser
    evaluator = m.get("evaluator")
    return "eval model" if evaluator in (None, "eval") or evaluator not in {j.get("name") for j in (m.get("identity") or {}).get("judges", [])} else evaluator


def _judge_lines(report: dict[str, Any]) -> list[str]:
    # every judge named as what it is; older reports name only the evaluation model
    judges = report.get("judges")
    if judges is None:
        ev = report.get("eval_model") or {}
        return [f"- evaluation model: `{ev.get('path', '?')}` ({ev.get('arch', '?')})"]
    lines = []
    for j in judges:
        status = "independent" if j.get("independent") else "not independent"
        lines.append(f"- judge {j['name']}: {j.get('description', '?')} ({status}{'; ' + j['note'] if j.get('note') else ''})")
    return lines


def _identity_rows(identity: dict[str, Any] | None) -> list[str]:
    if not identity or "headline" not in identity:
        return ["| identity: no verdict of independent judges in this report | – |"]
    if identity.get("consensus_top1") is None:
        rows = ["| identity: no independent judge — the headline is the evaluation model's acceptance | – |"]
    else:
        who = " + ".join(identity["consensus_judges"])
        rows = [
            f"| **identity: confirmed by every independent judge ({who}), top-1 (%)** | **{_pct(identity['consensus_top1'])}** (chance {_pct(identity['chance_top1'])}) |",
            f"| identities recovered (≥ half their reconstructions confirmed) | {identity['identities_recovered']:g} of {identity['n_identities']} (chance {identity['identities_by_chance']:.1f}) |",
        ]
    for j in identity.get("judges", []):
        mark = "" if j.get("independent", True) else " — not independent, left out of the consensus"
        rows.append(f"| {j['name']} nearest identity @1 / @5 (%){mark} | {_pct(j['top1'])} / {_pct(j['top5'])} (chance {_pct(j['chance_top1'])} / {_pct(j['chance_top5'])}) |")
    if identity.get("unconfirmed_share") is not None:
        rows.append(f"| evaluation model's hits no independent judge confirms (%) | {_pct(identity['unconfirmed_share'])} |")
    return rows


def _recogniser_rows(name: str, face: dict[str, Any] | None) -> list[str]:
    # one face recogniser's δ_face, agreement and alignment fallbacks (midefend.evaluation.identity)
    if not face:
        return []
    rows = [f"| δ_face ({name} l2 distance to the nearest private image) | {_num(face['delta_face'], 3)} |"]
    if face.get("agreement") is not None:
        rows.append(f"| eval model and {name} agree (same top-1 hit/miss, %) | {_pct(face['agreement'])} |")
    if face.get("fallbacks"):
        rows.append(f"| {name}: reconstructions with no face found (centre-crop fallback) | {face['fallbacks']} |")
    return rows


def save_grid(path: str | Path, private: torch.Tensor, reconstructions: torch.Tensor, *, padding: int = 2) -> Path:
    """Write a PNG: row ``i`` = ``private[i]`` then ``reconstructions[i, 0..K-1]``.

    Args:
        private: ``(N, C, H, W)`` in ``[0, 1]``, one private image per class.
        reconstructions: ``(N, K, C, H, W)`` in ``[0, 1]`` (same ``C, H, W``).
    """
    from PIL import Image
    from torchvision.utils import make_grid

    if reconstructions.ndim != 5 or private.ndim != 4 or private.shape[0] != reconstructions.shape[0]:
        raise ConfigError(f"grid needs private (N, C, H, W) and reconstructions (N, K, C, H, W), got {tuple(private.shape)} and {tuple(reconstructions.shape)}")
    if private.shape[1:] != reconstructions.shape[2:]:
        raise ConfigError(f"private images {tuple(private.shape[1:])} and reconstructions {tuple(reconstructions.shape[2:])} differ in shape")
    n, k = reconstructions.shape[:2]
    rows = torch.cat([private[:, None].float().cpu(), reconstructions.float().cpu()], dim=1)  # (N, K+1, C, H, W)
    grid = make_grid(rows.reshape(n * (k + 1), *rows.shape[2:]).clamp(0, 1), nrow=k + 1, padding=padding, pad_value=1.0)
    array = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    with atomic_write(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return Path(path)


def write_report(
    out_dir: str | Path,
    report: dict[str, Any],
    *,
    private: torch.Tensor | None = None,
    reconstructions: torch.Tensor | None = None,
    attack_grids: dict[str, torch.Tensor] | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and (given the images) ``grid.png`` into ``out_dir``; returns the paths.

    ``attack_grids`` (attack name -> reconstructions) adds one ``grid-<name>.png`` per attack.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    if private is not None and reconstructions is not None:
        paths["grid"] = save_grid(out / "grid.png", private, reconstructions)
    if private is not None:
        for name, images in (attack_grids or {}).items():
            paths[f"grid-{name}"] = save_grid(out / f"grid-{name}.png", private, images)
    full = {"format": REPORT_FORMAT, "version": REPORT_VERSION, **report, "files": {k: str(v) for k, v in paths.items()}}
    atomic_write_text(paths["markdown"], render_markdown(full))
    atomic_write_text(paths["json"], json.dumps(full, indent=2, sort_keys=False, allow_nan=False) + "\n")
    return paths


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a ``report.json`` written by :func:`write_report` (a folder holding one works too)."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        report = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"report {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"report {str(p)!r} is not readable JSON: {exc}") from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT or "metrics" not in report:
        raise ConfigError(f"{str(p)!r} is not a midefend verify report")
    return report


# --------------------------------------------------------------------------- comparison


def comparison_rows(reports: Sequence[dict[str, Any]], names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per report with Δ against the first (NoDef) report; see :func:`tradeoff_delta`."""
    if len(reports) < 1:
        raise ConfigError("compare needs at least one report")
    names = list(names) if names is not None else [r.get("target", {}).get("name", f"model{i}") for i, r in enumerate(reports)]
    ref = reports[0]["metrics"]
    rows = []
    for i, (name, report) in enumerate(zip(names, reports)):
        m = report["metrics"]
        delta, no_loss = None, None  # the reference row, or no accuracy to compare
        if i > 0 and None not in (ref.get("accuracy"), m.get("accuracy")):
            delta = tradeoff_delta(
                acc_nodef=ref["accuracy"], attack_nodef=ref["attack_acc_top1"], acc_def=m["accuracy"], attack_def=m["attack_acc_top1"]
            )
            no_loss = delta is None
        rows.append(
            {
                "name": name,
                "defense": report.get("target", {}).get("defense"),
                **{key: m.get(key) for key in ("accuracy", "attack_acc_top1", "attack_acc_top1_std", "attack_acc_top5", "attack_acc_top5_std", "knn_distance", "fid", "target_acc_top1")},
                "delta": delta,
                **{f"facenet_{key}": (m.get("facenet") or {}).get(key) for key in ("attack_acc_top1", "attack_acc_top5", "delta_face", "agreement")},
                "identity": m.get("identity"),
                "evaluator": m.get("evaluator"),
                "no_accuracy_lost": no_loss,
                "strongest_attack": report.get("strongest_attack") or report.get("attack", {}).get("attack"),
                "std_over": m.get("std_over", "classes"),
            }
        )
    return rows


def _delta_text(row: dict[str, Any]) -> str:
    return "–" if row.get("no_accuracy_lost") is None else format_delta(row.get("delta"))


COMPARISON_HEADER = ("model", "Acc (%)", "identity (%)", "judges @1 (%)", "eval AttAcc@1 (%)", "unconfirmed (%)", "eval AttAcc@5 (%)", "KNN", "FID", "Δ", "strongest attack")


def comparison_cells(row: dict[str, Any]) -> list[str]:
    """The table cells of one row, in :data:`COMPARISON_HEADER` order."""
    head, judges, unconfirmed = _judge_cells(row.get("identity"))
    # no evaluation model (a face recogniser judged alone): the "eval" columns have nothing to show
    has_eval = row.get("evaluator") not in {j.get("name") for j in (row.get("identity") or {}).get("judges", [])}
    return [
        str(row["name"]),
        _pct(row.get("accuracy")),
        head,
        judges,
        _pct(row["attack_acc_top1"], row.get("attack_acc_top1_std")) if has_eval else "–",
        unconfirmed,
        _pct(row["attack_acc_top5"], row.get("attack_acc_top5_std")) if has_eval else "–",
        _num(row.get("knn_distance"), 2),
        _num(row.get("fid"), 1),
        _delta_text(row),
        str(row.get("strongest_attack") or "–"),
    ]


def render_comparison_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (Δ against the first row; "OP": no accuracy lost), then what ± is."""
    lines = ["| " + " | ".join(COMPARISON_HEADER) + " |", "|" + "---|" * len(COMPARISON_HEADER)]
    lines += ["| " + " | ".join(comparison_cells(row)) + " |" for row in rows]
    kinds = sorted({row.get("std_over", "classes") for row in rows})
    lines += ["", "Each model is judged by its strongest attack, chosen by the identity headline (the consensus of the independent "
              "judges; \"(eval)\": no independent judge). ± is the std over " + " or ".join(kinds) + "; Δ is the papers' trade-off on the "
              "evaluation model's accuracy."]
    if len(kinds) > 1:
        lines.append("Warning: the rows mix a std over runs with a std over classes; do not compare their ± directly.")
    return "\n".join(lines) + "\n"


def write_comparison(out_dir: str | Path, rows: Sequence[dict[str, Any]]) -> dict[str, Path]:
    """Write ``compare.json`` and ``compare.md`` into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compare.json", "markdown": out / "compare.md"}
    atomic_write_text(paths["json"], json.dumps({"format": "midefend-comparison", "rows": list(rows)}, indent=2) + "\n")
    atomic_write_text(paths["markdown"], render_comparison_markdown(rows))
    return paths


__all__ = [
    "COMPARISON_HEADER",
    "ATTACK_HEADER",
    "attack_cells",
    "comparison_cells",
    "comparison_rows",
    "load_report",
    "render_comparison_markdown",
    "human_markdown",
    "render_markdown",
    "save_grid",
    "std_label",
    "verdict_line",
    "attack_columns",
    "write_comparison",
    "write_report",
]
