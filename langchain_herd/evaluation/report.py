"""The Markdown report and PNG plots of an evaluation (the dict :func:`evaluate` returns)."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from langchain_herd.errors import ArtifactError
from langchain_herd.evaluation.scoring import (
    BUDGET_FRACTIONS,
    budget_accuracies,
    reachable_accuracy,
)

__all__ = [
    "budget_reference",
    "budget_view",
    "equal_costs",
    "format_stats",
    "headline",
    "honest_view",
    "legacy_vote",
    "markdown_report",
    "merge_reports",
    "plot_names",
    "routellm_view",
    "write_plots",
]


def merge_reports(base: dict[str, Any], extra: dict[str, Any], *, note: str) -> dict[str, Any]:
    """Add the routers of another run on the same questions (e.g. the fine-tuning routers,
    run on a GPU machine) to a report.

    Raises:
        ArtifactError: the two runs differ in herd, seeds, held-out questions or cost weights,
            so their figures are not comparable.
    """
    checks = {
        "herd": (base["data"]["models"], extra["data"]["models"]),
        "seeds": (base["split"]["seeds"], extra["split"]["seeds"]),
        "held-out questions": (base["split"]["test_sha256"], extra["split"]["test_sha256"]),
        "pair": (base.get("pair"), extra.get("pair")),
    }
    for what, (ours, theirs) in checks.items():
        if ours != theirs:
            raise ArtifactError(f"cannot merge: the runs differ in {what} ({ours} vs {theirs})")
    # Compared with a tolerance: numpy versions differ in the last bits of geomspace.
    ours_w, theirs_w = base["cost_weights"], extra["cost_weights"]
    same = len(ours_w) == len(theirs_w) and all(
        math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        for a, b in zip(ours_w, theirs_w, strict=False)
    )
    if not same:
        raise ArtifactError("cannot merge: the runs swept different cost weights (other versions)")
    merged = dict(base)
    merged["routers"] = dict(base["routers"])
    for name, router in extra["routers"].items():
        merged["routers"][name] = {**router, "note": note}
    merged["skipped"] = {k: v for k, v in base["skipped"].items() if k not in extra["routers"]}
    merged.setdefault("merged", []).append({"note": note, "command": extra.get("command")})
    return merged


def format_stats(stats: dict[str, Any] | None, digits: int = 3, percent: bool = False) -> str:
    """``mean ± std`` (or ``mean`` for one seed); ``-`` when there is no figure.

    Example:
        >>> format_stats({"mean": 0.5, "std": 0.01, "n": 5}), format_stats(None)
        ('0.500 ± 0.010', '-')
    """
    if not stats:
        return "-"
    scale, suffix = (100.0, "%") if percent else (1.0, "")
    mean = f"{stats['mean'] * scale:.{digits}f}{suffix}"
    if stats.get("n", 1) > 1:
        return f"{mean} ± {stats['std'] * scale:.{digits}f}"
    return mean


def headline(report: dict[str, Any], families: Collection[str] | None = None) -> dict[str, Any]:
    """The best non-bound router (of ``families``, if given) by mean held-out accuracy, and
    how it compares."""
    routers = {
        name: r
        for name, r in report["routers"].items()
        if r["family"] != "bound"
        and (families is None or r["family"] in families)
        and r["summary"].get("accuracy")
    }
    if not routers:
        return {}
    name = max(routers, key=lambda n: routers[n]["summary"]["accuracy"]["mean"])
    summary = routers[name]["summary"]
    base = report["baselines"]["summary"]
    return {
        "router": name,
        "accuracy": summary["accuracy"]["mean"],
        "cost": summary["cost"]["mean"],
        "oracle_gap_closed": (summary.get("oracle_gap_closed") or {}).get("mean"),
        "best_single_accuracy": base["best_single_accuracy"]["mean"],
        "oracle_accuracy": base["oracle_accuracy"]["mean"],
    }


def markdown_report(report: dict[str, Any], *, title: str | None = None) -> str:
    """A readable report: setup, the router table, baselines, shares and per-group figures."""
    data, split = report["data"], report["split"]
    base = report["baselines"]["summary"]
    pair = report.get("pair")
    seeds = split["seeds"]
    lines = [
        f"# {title or 'herd eval: ' + Path(data['file']).name}",
        "",
        f"- Table: `{data['file']}`"
        + (f", rows where {', '.join(data['where'])}" if data["where"] else "")
        + f": {data['rows']} questions"
        + (
            f" ({data['rows_without_every_result']} without a result from every herd model "
            f"left out)"
            if data["rows_without_every_result"]
            else ""
        ),
        f"- Herd: {len(data['models'])} models; cost = {data['cost_unit']} per query",
        "- Split: "
        + (
            "the table's own `split` column; seeds vary training only"
            if split["method"] == "column"
            else f"seeded random, {split['test_share']:.0%} of questions held out per seed"
        )
        + f"; seeds {seeds}; held-out questions per seed {sorted(set(split['n_test']))}",
        "- Every figure is on held-out questions: mean ± standard deviation over seeds.",
    ]
    if pair:
        lines.append(f"- Strong/weak pair: strong `{pair['strong']}`, weak `{pair['weak']}`")
    if data.get("reference"):
        lines.append(
            f"- Reference (not routed to): `{data['reference']}`, accuracy "
            f"{format_stats(base.get('reference_accuracy'))}"
        )
    lines += ["", "## Routers, cascades and votes"]
    lines += honest_view(report)
    if pair:
        lines += routellm_view(report)
    lines += [
        "",
        f"Best single model (chosen on train): {', '.join(base['best_single_chosen'])}, "
        f"accuracy {format_stats(base['best_single_accuracy'])}; "
        f"oracle {format_stats(base['oracle_accuracy'])}.",
        "Oracle gap closed = (router - best single) / (oracle - best single). ECE: "
        "calibration of predicted correctness (routers that predict it). A router's "
        "operating points: its cost policy swept over the cost weight, and for a pair the "
        "threshold policy over every share of strong calls.",
    ]
    hl = headline(report)
    if hl:
        lines += [
            "",
            f"**Most accurate here: `{hl['router']}`**, accuracy {hl['accuracy']:.4f} vs best "
            f"single {hl['best_single_accuracy']:.4f} (oracle {hl['oracle_accuracy']:.4f}), "
            f"cost {hl['cost']:.2f} per query. It is picked by held-out accuracy among the "
            f"entries listed, so read it as an upper estimate.",
        ]
    lines += ["", "## Models", "", "| model | accuracy | cost |", "|---|---|---|"]
    for model, m in base["models"].items():
        lines.append(f"| {model} | {m['accuracy']:.4f} | {m['cost']:g} |")
    models = list(base["models"])
    lines += _router_table(
        "Share of calls per model",
        models,
        report,
        lambda summary, m: f"{summary['shares'][m]:.2f}",
    )
    groups = sorted({g for r in report["routers"].values() for g in r["summary"]["by_label"]})
    if groups:
        lines += _router_table(
            "Accuracy per MMLU group",
            groups,
            report,
            lambda summary, g: f"{summary['by_label'][g]:.3f}" if g in summary["by_label"] else "-",
        )
    for part in report.get("merged", []):
        lines += ["", f"Merged from another run ({part['note']}): `{part['command']}`"]
    if report.get("skipped"):
        lines += ["", "## Not run", ""]
        lines += [f"- `{name}`: {why}" for name, why in report["skipped"].items()]
    lines += ["", "## Plots", ""]
    lines += [f"![{_PLOT_TITLES[name]}]({name})" for name in plot_names(report)]
    return "\n".join(lines) + "\n"


_PLOT_TITLES = {
    "frontier.png": "cost-accuracy frontier",
    "accuracy.png": "accuracy per router over seeds",
    "pgr.png": "PGR curves",
}


def legacy_vote(report: dict[str, Any]) -> dict[str, Any] | None:
    """The harness's own majority vote, unless the ``vote-majority`` entry (the same vote,
    with every figure of an entry) is in the report."""
    return None if "vote-majority" in report["routers"] else report.get("majority_vote")


def equal_costs(report: dict[str, Any]) -> bool:
    """Whether every herd model costs the same (no ``--costs``: one per call)."""
    models = report["baselines"]["summary"]["models"].values()
    return len({m["cost"] for m in models}) == 1


def plot_names(report: dict[str, Any]) -> list[str]:
    """The PNG files :func:`write_plots` writes for ``report``, in report order.

    ``frontier.png`` unless every call costs the same and no entry has operating points at
    different costs (a cascade has: it pays for more calls when it escalates);
    ``accuracy.png`` when every call costs the same; ``pgr.png`` for a pair.
    """
    names = []
    if not equal_costs(report) or any(_cost_range(r) > 0 for r in report["routers"].values()):
        names.append("frontier.png")
    if equal_costs(report):
        names.append("accuracy.png")
    if report.get("pair"):
        names.append("pgr.png")
    return names


def _cost_range(entry: dict[str, Any]) -> float:
    costs = [p["cost"] for run in entry["per_seed"] for p in run.get("frontier", [])]
    return max(costs) - min(costs) if costs else 0.0


def budget_reference(report: dict[str, Any], seed_index: int) -> float:
    """The cost the honest view's budgets are shares of, on one split: the strong model's
    (a pair) or the best single model's (chosen on that split's training rows)."""
    base = report["baselines"]["per_seed"][seed_index]
    pair = report.get("pair")
    if pair:
        return float(base["models"][pair["strong"]]["cost"])
    return float(base["best_single_cost"])


def budget_view(report: dict[str, Any]) -> dict[str, dict[str, dict[str, Any] | None]]:
    """Per entry (router, cascade or vote), its accuracy at each budget of
    :data:`~langchain_herd.evaluation.scoring.BUDGET_FRACTIONS`, read off each split's
    reachable frontier (mixing two operating points allowed), as mean/std/min/max/n over
    seeds; ``None`` where a split has no operating point within the budget."""
    view: dict[str, dict[str, dict[str, Any] | None]] = {}
    for name, entry in report["routers"].items():
        per_seed = [
            budget_accuracies(run["frontier"], budget_reference(report, i), BUDGET_FRACTIONS)
            if _complete_frontier(report, run)
            else dict.fromkeys((f"{f:g}" for f in BUDGET_FRACTIONS), None)
            for i, run in enumerate(entry["per_seed"])
        ]
        view[name] = {
            f"{fraction:g}": _spread([seed[f"{fraction:g}"] for seed in per_seed])
            for fraction in BUDGET_FRACTIONS
        }
    return view


def _complete_frontier(report: dict[str, Any], run: dict[str, Any]) -> bool:
    """Whether a split's operating points can be read for budgets: for a pair they must
    include the threshold sweep (points without a cost weight), which reports written
    before it was added (e.g. a merged GPU run) lack."""
    points = run.get("frontier") or []
    if not points:
        return False
    return not report.get("pair") or any(p.get("cost_weight") is None for p in points)


def _spread(values: list[float | None]) -> dict[str, Any] | None:
    """Mean, std, min, max and n over seeds; ``None`` unless every seed has a value."""
    if not values or any(v is None for v in values):
        return None
    known = [float(v) for v in values if v is not None]
    mean = sum(known) / len(known)
    var = sum((v - mean) ** 2 for v in known) / (len(known) - 1) if len(known) > 1 else 0.0
    return {
        "mean": mean,
        "std": math.sqrt(var),
        "min": min(known),
        "max": max(known),
        "n": len(known),
    }


def honest_view(report: dict[str, Any], level: int = 3) -> list[str]:
    """Markdown lines: the table of every entry's accuracy against what it costs, every call
    paid, with AIQ and the accuracy at each budget (a heading of ``level`` first)."""
    pair = report.get("pair")
    unit = report["data"]["cost_unit"]
    budgets = not equal_costs(report)
    lines = [
        "",
        "#" * level + " The honest view: accuracy against average cost per query, every call paid",
        "",
        f"Cost per query in {unit}, counting every call an entry makes (a cascade pays for "
        "its first tier on every query, a vote for all its members). AIQ (RouterBench): "
        "the area under the entry's reachable cost-accuracy frontier (the upper convex hull "
        "of its operating points, non-decreasing) over its cost range.",
    ]
    if budgets:
        what = f"the strong model `{pair['strong']}`" if pair else "the best single model"
        lines += [
            "",
            f"At 0.5/0.6/0.75 C: the accuracy reachable at an average cost of that share of "
            f"C, the cost of {what} on each split, read off the entry's reachable frontier "
            "(two operating points may be mixed); `-`: no operating point is that cheap.",
        ]
    header = "| router | family | accuracy | cost/query | oracle gap closed | AIQ | ECE |"
    rule = "|---|---|---|---|---|---|---|"
    if budgets:
        header += "".join(f" at {f:g} C |" for f in BUDGET_FRACTIONS)
        rule += "---|" * len(BUDGET_FRACTIONS)
    lines += ["", header, rule]
    view = budget_view(report) if budgets else {}
    for name, router in report["routers"].items():
        s = router["summary"]
        row = (
            f"| {name} | {router['family']} | {format_stats(s.get('accuracy'))} | "
            f"{format_stats(s.get('cost'), 2)} | {format_stats(s.get('oracle_gap_closed'), 3)} | "
            f"{format_stats(s.get('aiq'))} | {format_stats(s.get('ece'))} |"
        )
        if budgets:
            row += "".join(f" {format_stats(view[name][f'{f:g}'])} |" for f in BUDGET_FRACTIONS)
        lines.append(row)
    vote = legacy_vote(report)
    if vote:
        lines.append(
            f"| majority vote | ensemble | {format_stats(vote['accuracy'])} | "
            f"{vote['cost']:.2f} | {format_stats(vote['oracle_gap_closed'])} | - | - |"
            + (" - |" * len(BUDGET_FRACTIONS) if budgets else "")
        )
    return lines


def routellm_view(report: dict[str, Any], level: int = 3) -> list[str]:
    """Markdown lines: APGR and CPT over the share of strong-model calls (RouteLLM's
    metrics), for a pair (a heading of ``level`` first)."""
    lines = [
        "",
        "#" * level + " The RouteLLM view: quality against the share of strong-model calls",
        "",
        f"PGR = (accuracy - weak) / (strong - weak) as the share of queries answered by "
        f"`{report['pair']['strong']}` grows; APGR is its area, CPT(x%) the smallest share "
        "reaching PGR x%. Only strong-model calls count here: a cascade's weak-model and "
        "helper calls are free in this view (the honest view above pays for them). Random "
        "routing gives APGR about 0.5. A cascade that keeps its first tier's vote starts above "
        "PGR 0: 'as a router' ranks its escalation score as a plain strong/weak router (the "
        "weak model's own answer when not escalated), comparable with the routers' APGR.",
        "",
        "| router | family | APGR | APGR as a router | CPT(50%) | CPT(80%) |",
        "|---|---|---|---|---|---|",
    ]
    for name, router in report["routers"].items():
        s = router["summary"]
        as_router = s.get("apgr_router", s.get("apgr") if router["family"] != "cascade" else None)
        lines.append(
            f"| {name} | {router['family']} | {format_stats(s.get('apgr'))} | "
            f"{format_stats(as_router)} | "
            f"{format_stats(s.get('cpt50'), 1, True)} | {format_stats(s.get('cpt80'), 1, True)} |"
        )
    return lines


def _router_table(
    title: str,
    columns: list[str],
    report: dict[str, Any],
    cell: Callable[[dict[str, Any], str], str],
) -> list[str]:
    """A Markdown section: one row per router, one cell per column."""
    lines = ["", f"## {title}", "", "| router | " + " | ".join(columns) + " |"]
    lines.append("|---|" + "---|" * len(columns))
    for name, router in report["routers"].items():
        cells = " | ".join(cell(router["summary"], c) for c in columns)
        lines.append(f"| {name} | {cells} |")
    return lines


_STYLES: dict[str, dict[str, Any]] = {
    "bound": {"linestyle": ":", "linewidth": 1.0},
    "baseline": {"linestyle": "--", "linewidth": 1.0},
    "published": {"linestyle": "-", "linewidth": 1.0},
    "project": {"linestyle": "-", "linewidth": 1.6},
    "cascade": {"linestyle": "-", "linewidth": 2.6},
    "vote": {"linestyle": "-.", "linewidth": 2.2},
}


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """The plots :func:`plot_names` lists: ``frontier.png`` (the honest view: each
    entry's reachable frontier, single models, votes, the budgets), ``accuracy.png``
    (every call costs the same: accuracy per entry over seeds) and, for a pair,
    ``pgr.png`` (the RouteLLM view). Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    # 20 distinct colours: a report compares more routers than the default cycle's 10.
    colours = [plt.get_cmap("tab20")(i) for i in range(20)]
    written = []
    for name in plot_names(report):
        draw = {"frontier.png": _frontier_plot, "accuracy.png": _accuracy_plot}.get(name)
        if draw is not None:
            written.append(draw(report, out_dir / name, colours))
    if report.get("pair"):
        fig, ax = plt.subplots(figsize=(7, 6))
        ax.set_prop_cycle(color=colours)
        for name, router in report["routers"].items():
            curve = router["summary"].get("pgr_curve")
            if curve:
                ax.plot(
                    curve["share"],
                    [float("nan") if v is None else v for v in curve["pgr"]],
                    label=f"{name} (APGR {format_stats(router['summary'].get('apgr'))})",
                    **_STYLES.get(router["family"], {}),
                )
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random (expected)")
        ax.set_xlabel(f"share of calls to the strong model ({report['pair']['strong']})")
        ax.set_ylabel("performance gap recovered")
        ax.set_title("The RouteLLM view: PGR over the share of strong calls")
        written.append(_save(fig, ax, out_dir / "pgr.png"))
    return written


def _hull(points: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """The reachable frontier of operating points, at their distinct costs."""
    costs = [float(p["cost"]) for p in points]
    accuracies = [float(p["accuracy"]) for p in points]
    xs = sorted(set(costs))
    ys = [reachable_accuracy(costs, accuracies, x) for x in xs]
    return xs, [float("nan") if y is None else y for y in ys]


def _frontier_plot(report: dict[str, Any], path: Path, colours: list[Any]) -> Path:
    import matplotlib.pyplot as plt

    base = report["baselines"]["summary"]
    fig, ax = plt.subplots(figsize=(10, 6.5))
    ax.set_prop_cycle(color=colours)
    for name, router in report["routers"].items():
        points = router["summary"].get("frontier") or []
        if not points:
            continue
        xs, ys = _hull(points)
        style = _STYLES.get(router["family"], {})
        if len(xs) == 1:  # one operating point (a vote): a marker, not a line
            ax.plot(xs, ys, marker="*", markersize=11, linestyle="none", label=name)
        else:
            ax.plot(xs, ys, label=f"{name} ({router['family']})", **style)
    for model, m in base["models"].items():
        ax.scatter([m["cost"]], [m["accuracy"]], color="black", marker="x", zorder=3)
        ax.annotate(model.split("/")[-1], (m["cost"], m["accuracy"]), fontsize=6)
    vote = legacy_vote(report)
    if vote:
        ax.scatter(
            [vote["cost"]], [vote["accuracy"]["mean"]], marker="*", s=120, label="majority vote"
        )
    if base.get("reference_accuracy"):
        ax.axhline(
            base["reference_accuracy"]["mean"],
            color="grey",
            linestyle=":",
            label=f"reference {report['data']['reference']}",
        )
    if not equal_costs(report):
        seeds = len(report["baselines"]["per_seed"])
        reference = sum(budget_reference(report, i) for i in range(seeds)) / seeds
        view = budget_view(report)
        for i, fraction in enumerate(BUDGET_FRACTIONS):
            reached = any(
                view[name][f"{fraction:g}"] is not None
                for name, r in report["routers"].items()
                if r["family"] != "bound"
            )
            if not reached:  # a budget under every operating point: nothing to read there
                continue
            ax.axvline(fraction * reference, color="grey", linewidth=0.6, alpha=0.6)
            ax.annotate(
                f"{fraction:g} C",
                (fraction * reference, 0.99 - 0.03 * i),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                color="grey",
                va="top",
            )
    ax.set_xlabel(f"average cost per query, every call paid ({report['data']['cost_unit']})")
    ax.set_ylabel("held-out accuracy (mean over seeds)")
    ax.set_title(
        f"The honest view: reachable cost-accuracy frontiers, {Path(report['data']['file']).name}"
    )
    return _save(fig, ax, path)


def _accuracy_plot(report: dict[str, Any], path: Path, colours: list[Any]) -> Path:
    """Every call costs the same, so a frontier is one column at cost 1: instead, each
    entry's accuracy per seed (left) and its gain over the best single model on the same
    split (right), which takes out the split-to-split spread the entries share."""
    import matplotlib.pyplot as plt

    best = [b["best_single_accuracy"] for b in report["baselines"]["per_seed"]]
    # The oracle is the dotted line: as a row it would stretch the scale past the others.
    rows: list[tuple[str, str, list[float]]] = [
        (name, r["family"], [run["accuracy"] for run in r["per_seed"]])
        for name, r in report["routers"].items()
        if r["family"] != "bound"
    ]
    vote = legacy_vote(report)
    if vote:
        rows.append(("majority vote", "vote", [v["accuracy"] for v in vote["per_seed"]]))
    height = 1.8 + 0.32 * len(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, height), sharey=True)
    for y, (_, _, accuracies) in enumerate(rows):
        colour = colours[y % len(colours)]
        gains = [a - b for a, b in zip(accuracies, best, strict=False)]
        for ax, values in ((left, accuracies), (right, gains)):
            stats = _spread(list(values))
            assert stats is not None
            ax.scatter(values, [y] * len(values), color=colour, s=12, alpha=0.6, zorder=2)
            ax.errorbar(
                [stats["mean"]],
                [y],
                xerr=[stats["std"]],
                color=colour,
                marker="D",
                markersize=6,
                capsize=3,
            )
    base = report["baselines"]["summary"]
    left.axvline(
        base["best_single_accuracy"]["mean"],
        color="black",
        linestyle="--",
        label=f"best single {base['best_single_accuracy']['mean']:.3f}",
    )
    left.axvline(
        base["oracle_accuracy"]["mean"],
        color="grey",
        linestyle=":",
        label=f"oracle {base['oracle_accuracy']['mean']:.3f}",
    )
    right.axvline(0.0, color="black", linestyle="--", label="best single (same split)")
    left.set_yticks(range(len(rows)), [f"{name} ({family})" for name, family, _ in rows])
    left.invert_yaxis()
    left.set_xlabel("held-out accuracy: seeds (dots), mean ± std (diamond)")
    right.set_xlabel("accuracy - best single model's, per split")
    fig.suptitle(
        f"Accuracy per router over {len(best)} seeds (every call costs the same): "
        f"{Path(report['data']['file']).name}",
        fontsize=10,
    )
    for ax in (left, right):
        # Below the axes: inside, the legend would hide a row.
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _save(fig: Any, ax: Any, path: Path) -> Path:
    """Legend, grid, and the PNG written; the figure is closed (no memory kept)."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
