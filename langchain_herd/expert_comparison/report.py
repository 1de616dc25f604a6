"""The side-by-side report: bootstrap intervals, JSON, Markdown and plots.

Intervals are percentile bootstraps over questions (the same resampled question sets for
every contender, so rows are compared on equal draws), seeded for repeatable reports.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from langchain_herd.expert_comparison.run import ComparisonSettings, QuestionSetResult

__all__ = ["bootstrap_interval", "plot_accuracy", "plot_swarm", "summarize", "write_report"]


def bootstrap_interval(
    values: np.ndarray, *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """The percentile bootstrap interval of ``values``' mean.

    Example:
        >>> low, high = bootstrap_interval(np.array([0.0, 1.0] * 50))
        >>> round(low, 2) < 0.5 < round(high, 2)
        True
    """
    if len(values) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(resamples, len(values)))
    means = values[draws].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def _kind(name: str) -> str:
    if name == "base":
        return "base"
    for prefix in ("merge", "oracle"):
        if name.startswith(prefix + ":"):
            return prefix
    return name if name in ("router", "swarm") else "adapter"


def summarize(result: QuestionSetResult, settings: ComparisonSettings) -> dict[str, Any]:
    """Per contender: accuracy and gold log-likelihood with intervals, and per-group accuracy."""
    groups = sorted({q.group for q in result.questions})
    membership = {g: np.array([q.group == g for q in result.questions]) for g in groups}
    rows: dict[str, Any] = {}
    for name, scores in result.scores.items():
        correct = scores.correct.astype(np.float64)
        rows[name] = {
            "kind": _kind(name),
            "accuracy": scores.accuracy,
            "accuracy_ci95": bootstrap_interval(
                correct, resamples=settings.bootstrap, seed=settings.seed
            ),
            "gold_loglik": scores.mean_gold_loglik,
            "gold_loglik_ci95": bootstrap_interval(
                scores.gold_loglik, resamples=settings.bootstrap, seed=settings.seed
            ),
            "accuracy_by_group": {
                g: float(correct[membership[g]].mean()) for g in groups if membership[g].any()
            },
        }
    routed = np.array(result.routed)
    return {
        "questions": len(result.questions),
        "questions_by_group": {g: int(m.sum()) for g, m in membership.items()},
        "router_share_per_adapter": {
            name: float((routed == name).mean()) for name in sorted(set(result.routed))
        },
        "contenders": rows,
    }


def _markdown(summaries: dict[str, dict[str, Any]], command: str | None) -> str:
    lines = ["# Experts side by side", ""]
    if command:
        lines += ["Made by:", "", "```", command, "```", ""]
    lines += [
        "Held-out questions only (the `test` split: never used to train an adapter, pick merge "
        "weights or score the swarm). Accuracy: the gold choice has the highest per-token "
        "log-likelihood (cloze). Gold log-likelihood: the gold answer's summed log-probability "
        "in nats (higher is better). Brackets: 95% bootstrap intervals over questions.",
        "",
    ]
    for source, summary in summaries.items():
        groups = list(summary["questions_by_group"])
        lines += [f"## {source} ({summary['questions']} questions)", ""]
        header = "| contender | kind | accuracy | gold log-lik | " + " | ".join(groups) + " |"
        lines += [header, "|" + "---|" * (4 + len(groups))]
        for name, row in summary["contenders"].items():
            low, high = row["accuracy_ci95"]
            llow, lhigh = row["gold_loglik_ci95"]
            by_group = " | ".join(f"{row['accuracy_by_group'].get(g, 0.0):.3f}" for g in groups)
            lines.append(
                f"| {name} | {row['kind']} | {row['accuracy']:.3f} [{low:.3f}, {high:.3f}] | "
                f"{row['gold_loglik']:.2f} [{llow:.2f}, {lhigh:.2f}] | {by_group} |"
            )
        shares = ", ".join(f"{k} {v:.0%}" for k, v in summary["router_share_per_adapter"].items())
        lines += ["", f"Router's picks: {shares}.", ""]
    return "\n".join(lines)


def plot_accuracy(summaries: dict[str, dict[str, Any]], path: Path) -> None:
    """One panel per question set: each contender's accuracy with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "base": "grey",
        "adapter": "tab:blue",
        "router": "tab:red",
        "oracle": "lightcoral",
        "merge": "tab:green",
        "swarm": "tab:purple",
    }
    fig, axes = plt.subplots(
        1, len(summaries), figsize=(6 * len(summaries), 5), squeeze=False, sharey=True
    )
    for axis, (source, summary) in zip(axes[0], summaries.items(), strict=True):
        names = list(summary["contenders"])
        rows = [summary["contenders"][n] for n in names]
        values = [r["accuracy"] for r in rows]
        errors = np.array(
            [
                [v - r["accuracy_ci95"][0], r["accuracy_ci95"][1] - v]
                for v, r in zip(values, rows, strict=True)
            ]
        ).T
        positions = np.arange(len(names))
        axis.barh(
            positions, values, xerr=errors, color=[colours[r["kind"]] for r in rows], capsize=3
        )
        axis.set_yticks(positions, names)
        axis.invert_yaxis()
        axis.set_xlabel("accuracy (95% bootstrap interval)")
        axis.set_title(f"{source}: {summary['questions']} held-out questions")
        axis.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_swarm(swarm_json: Path, path: Path) -> bool:
    """The swarm's global-best utility per step (both metrics), from ``herd swarm``'s record.

    Returns:
        Whether there was a history to plot.
    """
    record = json.loads(swarm_json.read_text())
    steps: Sequence[dict[str, Any]] = record.get("history", [])
    if not steps:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [s["step"] for s in steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric, label in (
        (left, "accuracy", "accuracy"),
        (right, "loglik", "gold log-likelihood"),
    ):
        best = [s[f"best_{metric}"] for s in steps]
        mean = [float(np.mean([p[metric] for p in s["particles"]])) for s in steps]
        axis.plot(x, best, marker="o", label="global best")
        axis.plot(x, mean, marker=".", linestyle="--", label="particles' mean")
        axis.set_xlabel("step (0: the starting particles)")
        axis.set_ylabel(f"{label} ({record.get('questions', {}).get('count', '?')} dev questions)")
        axis.grid(alpha=0.3)
        axis.legend()
    metric = record.get("settings", {}).get("metric", "")
    fig.suptitle(f"Model Swarms: utility per step (searched on {metric})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(
    results: list[QuestionSetResult],
    settings: ComparisonSettings,
    out: Path,
    *,
    command: str | None = None,
) -> dict[str, Any]:
    """Write ``report.json``, ``report.md``, ``accuracy.png`` and, with a swarm,
    ``swarm_utility.png`` to ``out``; return the JSON's content."""
    out.mkdir(parents=True, exist_ok=True)
    summaries = {result.name: summarize(result, settings) for result in results}
    report: dict[str, Any] = {
        "command": command,
        "settings": {
            "question_sets": list(settings.question_sets),
            "split": "test",
            "per_group": settings.per_group,
            "seed": settings.seed,
            "bootstrap": settings.bootstrap,
            "merges": {k: str(v) for k, v in settings.merges.items()},
            "swarm": str(settings.swarm) if settings.swarm else None,
        },
        "question_sets": summaries,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_markdown(summaries, command))
    plot_accuracy(summaries, out / "accuracy.png")
    if settings.swarm is not None and (settings.swarm / "swarm.json").is_file():
        plot_swarm(settings.swarm / "swarm.json", out / "swarm_utility.png")
    return report
