"""The Markdown report and PNG plots of an evaluation (the dict :func:`evaluate` returns)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_herd.errors import ArtifactError

__all__ = ["format_stats", "headline", "markdown_report", "merge_reports", "write_plots"]


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


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The best non-bound router by mean held-out accuracy, and how it compares."""
    routers = {
        name: r
        for name, r in report["routers"].items()
        if r["family"] != "bound" and r["summary"].get("accuracy")
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
    lines += [
        "",
        "## Routers",
        "",
        "| router | family | accuracy | cost/query | oracle gap closed | AIQ | ECE |"
        + (" APGR | CPT(50%) | CPT(80%) |" if pair else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|---|" if pair else ""),
    ]
    for name, router in report["routers"].items():
        s = router["summary"]
        row = (
            f"| {name} | {router['family']} | {format_stats(s.get('accuracy'))} | "
            f"{format_stats(s.get('cost'), 2)} | {format_stats(s.get('oracle_gap_closed'), 3)} | "
            f"{format_stats(s.get('aiq'))} | {format_stats(s.get('ece'))} |"
        )
        if pair:
            row += (
                f" {format_stats(s.get('apgr'))} | {format_stats(s.get('cpt50'), 1, True)} | "
                f"{format_stats(s.get('cpt80'), 1, True)} |"
            )
        lines.append(row)
    vote = report.get("majority_vote")
    if vote:
        lines.append(
            f"| majority vote | ensemble | {format_stats(vote['accuracy'])} | "
            f"{vote['cost']:.2f} | {format_stats(vote['oracle_gap_closed'])} | - | - |"
            + (" - | - | - |" if pair else "")
        )
    lines += [
        "",
        f"Best single model (chosen on train): {', '.join(base['best_single_chosen'])}, "
        f"accuracy {format_stats(base['best_single_accuracy'])}; "
        f"oracle {format_stats(base['oracle_accuracy'])}.",
        "Oracle gap closed = (router - best single) / (oracle - best single). AIQ: area under "
        "the non-decreasing convex hull of the cost-accuracy frontier swept over the cost "
        "weight, over the cost range. ECE: calibration of predicted correctness (routers that "
        "predict it).",
    ]
    hl = headline(report)
    if hl:
        lines += [
            "",
            f"**Best router here: `{hl['router']}`**, accuracy {hl['accuracy']:.4f} vs best "
            f"single {hl['best_single_accuracy']:.4f} (oracle {hl['oracle_accuracy']:.4f}), "
            f"cost {hl['cost']:.2f} per query. It is picked by held-out accuracy among the "
            f"routers listed, so read it as an upper estimate.",
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
    lines += ["", "## Plots", "", "![cost-accuracy frontier](frontier.png)"]
    if pair:
        lines.append("![PGR curves](pgr.png)")
    return "\n".join(lines) + "\n"


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


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """``frontier.png`` (every router's cost-accuracy frontier, single models, vote,
    reference) and, for a pair, ``pgr.png``. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    written = []
    base = report["baselines"]["summary"]
    # 20 distinct colours: a report compares more routers than the default cycle's 10.
    colours = [plt.get_cmap("tab20")(i) for i in range(20)]
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.set_prop_cycle(color=colours)
    for name, router in report["routers"].items():
        points = sorted((p["cost"], p["accuracy"]) for p in router["summary"]["frontier"])
        style = "--" if router["family"] in ("bound", "baseline") else "-"
        ax.plot([c for c, _ in points], [a for _, a in points], style, marker=".", label=name)
    for model, m in base["models"].items():
        ax.scatter([m["cost"]], [m["accuracy"]], color="black", marker="x", zorder=3)
        ax.annotate(model.split("/")[-1], (m["cost"], m["accuracy"]), fontsize=6)
    vote = report.get("majority_vote")
    if vote:
        ax.scatter([vote["cost"]], [vote["accuracy"]["mean"]], marker="*", s=120, label="vote")
    if base.get("reference_accuracy"):
        ax.axhline(
            base["reference_accuracy"]["mean"],
            color="grey",
            linestyle=":",
            label=f"reference {report['data']['reference']}",
        )
    ax.set_xlabel(f"cost per query ({report['data']['cost_unit']})")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"Cost-accuracy frontier: {Path(report['data']['file']).name}")
    written.append(_save(fig, ax, out_dir / "frontier.png"))
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
                )
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random (expected)")
        ax.set_xlabel(f"share of calls to the strong model ({report['pair']['strong']})")
        ax.set_ylabel("performance gap recovered")
        ax.set_title("PGR curves (RouteLLM)")
        written.append(_save(fig, ax, out_dir / "pgr.png"))
    return written


def _save(fig: Any, ax: Any, path: Path) -> Path:
    """Legend, grid, and the PNG written; the figure is closed (no memory kept)."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
