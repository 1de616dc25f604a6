"""`herd eval`'s margin tuning, budget read-off, equal-cost plot and the two report views.

Small hand-made tables with made-up model names; expected figures are worked out by hand in
comments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
import pandas as pd

from langchain_herd.evaluation.data import load_eval_data, splits
from langchain_herd.evaluation.report import (
    budget_view,
    markdown_report,
    plot_names,
    write_plots,
)
from langchain_herd.evaluation.routers import (
    ROUTERS,
    RouterContext,
    RouterOutput,
    _with_margin,
    tune_margin,
)
from langchain_herd.evaluation.run import EvalOptions, evaluate
from langchain_herd.evaluation.scoring import (
    budget_accuracies,
    reachable_accuracy,
    score_output,
    split_baselines,
)
from langchain_herd.training.progress import SilentProgress

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


def no_embeddings() -> npt.NDArray[np.float32]:
    raise AssertionError("no router here needs embeddings")


# ---------------------------------------------------------------- out-of-fold margin

# Each row has a signal s. The default model `steady` is right exactly when s <= 0.7, `spiky`
# exactly when s > 0.7, `never` never. A router predicts 0.5 for steady, s for spiky, 0 for
# never, so the margin policy sends a row to spiky when s > 0.5 + margin: margin 0.20 is
# right on every row, 0.18 also takes the s = 0.69 rows (wrong), 0.22 misses the s = 0.71 rows.
SIGNALS = (0.55, 0.62, 0.69, 0.69, 0.71, 0.71, 0.8, 0.9, 0.3, 0.4)
MARGIN_MODELS = ["steady", "spiky", "never"]


def signal_frame(repeats: int = 12) -> tuple[pd.DataFrame, npt.NDArray[np.float64]]:
    s = np.tile(np.asarray(SIGNALS), repeats)
    frame = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(len(s))],
            "prompt": [f"question {i}" for i in range(len(s))],
            "steady": (s <= 0.7).astype(int),  # 6 of 10: the best single model
            "spiky": (s > 0.7).astype(int),
            "never": np.zeros(len(s), dtype=int),
        }
    )
    return frame, s


class SignalRouter:
    """A router reading each row's signal; it records every (train, predict, fixed) call."""

    def __init__(self, signal: npt.NDArray[np.float64]) -> None:
        self.signal = signal
        self.calls: list[tuple[set[int], set[int], dict[str, Any]]] = []

    def __call__(self, ctx: RouterContext) -> RouterOutput:
        self.calls.append((set(ctx.train.tolist()), set(ctx.predict.tolist()), dict(ctx.fixed)))
        s = self.signal[ctx.predict]
        u = np.column_stack([np.full(len(s), 0.5), s, np.zeros(len(s))])
        return RouterOutput(u, probabilities=True, details={"width": len(ctx.train)})


def test_tune_margin_finds_the_known_margin() -> None:
    _, s = signal_frame(1)
    u = np.column_stack([np.full(len(s), 0.5), s, np.zeros(len(s))])
    y = np.column_stack([s <= 0.7, s > 0.7, np.zeros(len(s))]).astype(float)
    margin, accuracies = tune_margin(u, y, default=0)
    assert margin == pytest.approx(0.2)
    assert max(accuracies) == 1.0 and accuracies.count(1.0) == 1
    # Margin 0: spiky wins every row with s > 0.5: right on 0.71, 0.71, 0.8, 0.9, 0.3, 0.4
    # (steady stays) = 6 of 10.
    assert accuracies[0] == pytest.approx(0.6)
    # Ties go to the larger margin: with only s = 0.9 rows every margin under 0.4 is perfect.
    top = np.array([[0.5, 0.9]])
    assert tune_margin(top, np.array([[0.0, 1.0]]), default=0)[0] == pytest.approx(0.3)


def test_margin_is_tuned_out_of_fold_and_the_router_refitted_on_all_training_rows(
    tmp_path: Path,
) -> None:
    frame, s = signal_frame()
    data = load_eval_data(write(frame, tmp_path / "signal.parquet"))
    (split,) = splits(data, [3], use_split_column=None)
    ctx = RouterContext(data, split, split.train, split.test, no_embeddings, SilentProgress())
    base = SignalRouter(s)
    output = _with_margin(base)(ctx)
    assert output.details["margin"] == pytest.approx(0.2)
    assert output.details["default"] == "steady"
    assert output.details["margin_tuning"] == "5-fold out-of-fold over the training rows"
    assert max(output.details["oof_accuracy"]) == 1.0
    # First the full fit (all training rows, the held-out rows scored), then five refits,
    # each on the other folds with the full fit's choices fixed; the folds cover train once.
    train, test = set(split.train.tolist()), set(split.test.tolist())
    assert base.calls[0] == (train, test, {})
    folds = [predict for _, predict, _ in base.calls[1:]]
    assert len(folds) == 5 and set().union(*folds) == train
    assert sum(len(f) for f in folds) == len(train)
    for fit_rows, predict, fixed in base.calls[1:]:
        assert fit_rows == train - predict and fixed == {"width": len(train)}
    # The held-out utilities are the full fit's, with the margin on the default model.
    expected = np.column_stack([np.full(len(test), 0.7), s[split.test], np.zeros(len(test))])
    np.testing.assert_allclose(output.utilities, expected)
    # Held out, the policy routes every row right.
    figures = score_output(data, split, output, split_baselines(data, split))
    assert figures["accuracy"] == 1.0


def test_tfidf_margin_refits_folds_with_the_chosen_c(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    frame, _ = signal_frame(4)
    # Words carry the signal, so TF-IDF has something to learn.
    frame["prompt"] = [
        f"question {i} about {'spikes' if r.spiky else 'calm'}"
        for i, r in enumerate(frame.itertuples())
    ]
    data = load_eval_data(write(frame, tmp_path / "words.parquet"))
    (split,) = splits(data, [0], use_split_column=None)
    ctx = RouterContext(data, split, split.train, split.test, no_embeddings, SilentProgress())
    output = ROUTERS["tfidf+margin"].run(ctx)
    details = output.details
    # C chosen per model on the full fit, reused by the out-of-fold refits.
    assert len(details["C"]) == 3 and details["default"] == "steady"
    assert len(details["oof_accuracy"]) == 16  # margins 0.00, 0.02, ..., 0.30
    assert output.utilities.shape == (len(split.test), 3)


# ---------------------------------------------------------------- budget read-off


def test_reachable_accuracy_by_hand() -> None:
    costs, accuracies = [1.0, 2.0, 4.0, 3.0], [0.40, 0.45, 0.90, 0.50]
    # Hull: (1, 0.40) -> (4, 0.90); (2, 0.45) and (3, 0.50) lie under it.
    # At 2.5: 0.40 + (0.90 - 0.40) * 1.5 / 3 = 0.65.
    assert reachable_accuracy(costs, accuracies, 2.5) == pytest.approx(0.65)
    assert reachable_accuracy(costs, accuracies, 1.0) == pytest.approx(0.40)
    assert reachable_accuracy(costs, accuracies, 0.99) is None
    # Beyond the dearest point: its accuracy (paying more need not lower it).
    assert reachable_accuracy(costs, accuracies, 9.0) == pytest.approx(0.90)
    # A cheap point better than a dear one: the frontier stays flat (non-decreasing).
    assert reachable_accuracy([1.0, 2.0], [0.8, 0.6], 1.5) == pytest.approx(0.8)


def test_budget_accuracies_by_hand() -> None:
    # A pair: weak costs 8, strong 70 (the reference), one cascade point at 30.
    frontier = [
        {"cost": 8.0, "accuracy": 0.45},
        {"cost": 30.0, "accuracy": 0.62},
        {"cost": 70.0, "accuracy": 0.66},
    ]
    got = budget_accuracies(frontier, 70.0)
    assert list(got) == ["0.5", "0.6", "0.75"]
    # 0.5 C = 35: 0.62 + 0.04 * 5 / 40 = 0.625; 0.6 C = 42: 0.62 + 0.04 * 12 / 40 = 0.632;
    # 0.75 C = 52.5: 0.62 + 0.04 * 22.5 / 40 = 0.6425.
    assert got == pytest.approx({"0.5": 0.625, "0.6": 0.632, "0.75": 0.6425})
    assert budget_accuracies(frontier, 10.0, [0.5]) == {"0.5": None}


def hand_report(pair: bool) -> dict[str, Any]:
    """Two seeds; the strong model (or best single) costs 70 on seed 0 and 50 on seed 1."""

    def seed_base(cost: float) -> dict[str, Any]:
        return {
            "best_single_cost": cost,
            "models": {"big": {"cost": cost, "accuracy": 0.7}, "small": {"cost": 10.0}},
        }

    # Threshold points (no cost weight), as a pair router's or a cascade's.
    run0 = {
        "frontier": [
            {"cost_weight": None, "cost": 10.0, "accuracy": 0.4},
            {"cost_weight": None, "cost": 70.0, "accuracy": 0.7},
        ]
    }
    run1 = {
        "frontier": [
            {"cost_weight": None, "cost": 10.0, "accuracy": 0.5},
            {"cost_weight": None, "cost": 50.0, "accuracy": 0.7},
        ]
    }
    report: dict[str, Any] = {
        "pair": {"strong": "big", "weak": "small"} if pair else None,
        "baselines": {"per_seed": [seed_base(70.0), seed_base(50.0)]},
        "routers": {"mine": {"family": "cascade", "per_seed": [run0, run1]}},
    }
    return report


@pytest.mark.parametrize("pair", [True, False])
def test_budget_view_over_seeds_by_hand(pair: bool) -> None:
    view = budget_view(hand_report(pair))["mine"]
    # Seed 0, C = 70: 0.5 C = 35 -> 0.4 + 0.3 * 25 / 60 = 0.525. Seed 1, C = 50: 0.5 C = 25
    # -> 0.5 + 0.2 * 15 / 40 = 0.575. Mean 0.55, std (ddof 1) 0.025 * sqrt(2).
    assert view["0.5"] == pytest.approx(
        {"mean": 0.55, "std": 0.025 * 2**0.5, "min": 0.525, "max": 0.575, "n": 2}
    )
    # 0.75 C: seed 0 52.5 -> 0.4 + 0.3 * 42.5 / 60 = 0.6125; seed 1 37.5 -> 0.5 + 0.2 * 27.5
    # / 40 = 0.6375.
    assert view["0.75"]["mean"] == pytest.approx(0.625)


def test_a_pair_frontier_without_the_threshold_sweep_is_not_read() -> None:
    # A report written before the sweep joined the frontier (a merged GPU run): its
    # cost-weight points alone would understate the router, so no budget figure.
    report = hand_report(pair=True)
    for run in report["routers"]["mine"]["per_seed"]:
        for point in run["frontier"]:
            point["cost_weight"] = 0.5
    assert budget_view(report)["mine"] == {"0.5": None, "0.6": None, "0.75": None}
    report["pair"] = None  # N experts: cost-weight points are the frontier
    assert budget_view(report)["mine"]["0.5"] is not None


def test_budget_view_is_none_where_a_seed_cannot_reach_the_budget() -> None:
    report = hand_report(pair=True)
    report["routers"]["mine"]["per_seed"][1]["frontier"][0]["cost"] = 30.0  # over 0.5 * 50
    assert budget_view(report)["mine"]["0.5"] is None
    assert budget_view(report)["mine"]["0.75"] is not None


# ---------------------------------------------------------------- reports and plots


def herd_frame(n: int = 80, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = np.array(["g1", "g2"])[np.arange(n) % 2]
    frame = pd.DataFrame(
        {"id": [f"q{i}" for i in range(n)], "prompt": [f"q {i}" for i in range(n)], "group": group}
    )
    frame["Big 70B"] = (rng.random(n) < np.where(group == "g1", 0.9, 0.6)).astype(int)
    frame["small/8b"] = (rng.random(n) < np.where(group == "g1", 0.3, 0.6)).astype(int)
    frame["mid"] = (rng.random(n) < 0.5).astype(int)
    return frame


ROUTER_SET = ["oracle", "random", "best-single", "group-best"]


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_equal_costs_give_the_accuracy_plot_from_the_report_alone(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    data = load_eval_data(write(herd_frame(), tmp_path / "h.parquet"))  # no costs: 1 per call
    report = evaluate(data, EvalOptions(seeds=[0, 1, 2], routers=ROUTER_SET))
    # Written from report.json alone: the JSON round trip leaves nothing else to read.
    report = json.loads(json.dumps(report))
    assert plot_names(report) == ["accuracy.png"]
    out = tmp_path / "plots"
    out.mkdir()
    written = write_plots(report, out)
    assert written == [out / "accuracy.png"] and is_png(out / "accuracy.png")
    assert not (out / "frontier.png").exists()
    text = markdown_report(report)
    assert "![accuracy per router over seeds](accuracy.png)" in text
    assert "frontier.png" not in text
    # No budgets when every call costs the same (each route costs 1), no RouteLLM view.
    assert "| router | family | accuracy | cost/query | oracle gap closed | AIQ | ECE |\n" in text
    assert " at 0.5 C |" not in text and "RouteLLM" not in text
    # A taller plot for more rows: the figure follows the report's entries.
    from PIL import Image

    small = Image.open(out / "accuracy.png").size
    report["routers"]["copy"] = report["routers"]["random"]
    write_plots(report, out)
    assert Image.open(out / "accuracy.png").size[1] > small[1]


def test_an_entry_with_operating_points_at_several_costs_adds_the_frontier(
    tmp_path: Path,
) -> None:
    data = load_eval_data(write(herd_frame(), tmp_path / "h.parquet"))
    report = json.loads(json.dumps(evaluate(data, EvalOptions(seeds=[0], routers=ROUTER_SET))))
    cascade = json.loads(json.dumps(report["routers"]["best-single"]))
    cascade["family"] = "cascade"
    cascade["per_seed"][0]["frontier"] = [
        {"cost": 1.0, "accuracy": 0.5},
        {"cost": 1.6, "accuracy": 0.7},
    ]
    report["routers"]["cascade"] = cascade
    assert plot_names(report) == ["frontier.png", "accuracy.png"]


def test_pair_report_has_both_views_and_budgets(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    data = load_eval_data(
        write(herd_frame(), tmp_path / "h.parquet"),
        models=["Big 70B", "small/8b"],
        costs_path=write_costs(tmp_path),
    )
    report = evaluate(
        data, EvalOptions(seeds=[0, 1], routers=ROUTER_SET, pair=("Big 70B", "small/8b"))
    )
    text = markdown_report(report)
    assert "## Routers, cascades and votes" in text
    assert "### The honest view: accuracy against average cost per query, every call paid" in text
    assert "### The RouteLLM view: quality against the share of strong-model calls" in text
    assert text.index("The honest view") < text.index("The RouteLLM view") < text.index("## Models")
    assert "| router | family | APGR | APGR as a router | CPT(50%) | CPT(80%) |" in text
    assert " at 0.5 C | at 0.6 C | at 0.75 C |" in text
    assert "the cost of the strong model `Big 70B`" in text
    # The threshold policy's points (a share of strong calls each) are on every router's
    # frontier, so the budgets read its whole threshold sweep.
    for router in report["routers"].values():
        for run in router["per_seed"]:
            points = [p for p in run["frontier"] if p["cost_weight"] is None]
            assert [p["strong_share"] for p in points] == pytest.approx(np.linspace(0, 1, 101))
            assert points[0]["cost"] == 8.0 and points[-1]["cost"] == 70.0
    view = budget_view(report)
    for fraction in ("0.5", "0.6", "0.75"):
        assert view["oracle"][fraction]["mean"] > view["random"][fraction]["mean"]
    assert plot_names(report) == ["frontier.png", "pgr.png"]
    written = write_plots(report, tmp_path)
    assert all(is_png(path) for path in written)


def test_n_expert_report_reads_budgets_against_the_best_single_model(tmp_path: Path) -> None:
    costs = write_costs(tmp_path)
    data = load_eval_data(write(herd_frame(), tmp_path / "h.parquet"), costs_path=costs)
    report = evaluate(data, EvalOptions(seeds=[0, 1], routers=ROUTER_SET))
    text = markdown_report(report)
    assert "the cost of the best single model on each split" in text
    assert "RouteLLM" not in text and "APGR" not in text
    # Big 70B is the best single model (cost 70) on both splits: budgets 35, 42, 52.5.
    assert {b["best_single"] for b in report["baselines"]["per_seed"]} == {"Big 70B"}
    for name, router in report["routers"].items():
        for fraction in ("0.5", "0.6", "0.75"):
            expected = [
                reachable_accuracy(
                    [p["cost"] for p in run["frontier"]],
                    [p["accuracy"] for p in run["frontier"]],
                    float(fraction) * 70.0,
                )
                for run in router["per_seed"]
            ]
            got = budget_view(report)[name][fraction]
            assert got is not None and got["mean"] == pytest.approx(np.mean(expected)), name


def write_costs(tmp_path: Path) -> Path:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"Big 70B": 70.0, "small/8b": 8.0, "mid": 30.0}), "utf-8")
    return path


# ---------------------------------------------------------------- docs/results.md and README


def results_table_module() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "results_table.py"
    spec = importlib.util.spec_from_file_location("results_table", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_are_rewritten_between_markers_only() -> None:
    table = results_table_module()
    text = (
        "intro\n<!-- results:pairs:start -->\nold\nrows\n<!-- results:pairs:end -->\n"
        "middle\n<!-- results:n-expert:start -->\nx\n<!-- results:n-expert:end -->\nend\n"
    )
    new = table.rewrite_between_markers(text, {"pairs": "| a |\n| b |", "n-expert": "| c |"})
    assert new == (
        "intro\n<!-- results:pairs:start -->\n| a |\n| b |\n<!-- results:pairs:end -->\n"
        "middle\n<!-- results:n-expert:start -->\n| c |\n<!-- results:n-expert:end -->\nend\n"
    )
    # Idempotent: a second run changes nothing.
    blocks = {"pairs": "| a |\n| b |", "n-expert": "| c |"}
    assert table.rewrite_between_markers(new, blocks) == new
    with pytest.raises(SystemExit, match="no <!-- results:other:start/end --> markers"):
        table.rewrite_between_markers(text, {"other": "x"})


def test_results_tables_carry_cascades_votes_and_targets(tmp_path: Path) -> None:
    table = results_table_module()
    costs = write_costs(tmp_path)
    frame = herd_frame()
    pair_data = load_eval_data(
        write(frame, tmp_path / "h.parquet"), models=["Big 70B", "small/8b"], costs_path=costs
    )
    options = EvalOptions(seeds=[0, 1], routers=ROUTER_SET, pair=("Big 70B", "small/8b"))
    pair = json.loads(json.dumps(evaluate(pair_data, options)))
    # A cascade and a learned vote as helper A's harness reports them (family, per-seed
    # figures): here copies of the oracle, which beats every text router.
    pair["routers"]["cascade"] = {**pair["routers"]["oracle"], "family": "cascade"}
    pair["routers"]["text"] = {**pair["routers"]["random"], "family": "published"}
    # A cascade that keeps its tier's vote: a high plain APGR, judged on its APGR as a router.
    kept = {**pair["routers"]["oracle"]["summary"], "apgr_router": {"mean": 0.4, "std": 0.0}}
    pair["routers"]["cascade-kept"] = {**pair["routers"]["oracle"], "family": "cascade"}
    pair["routers"]["cascade-kept"]["summary"] = kept
    pair["command"] = "herd eval pair"
    herd = json.loads(
        json.dumps(
            evaluate(
                load_eval_data(tmp_path / "h.parquet", costs_path=costs),
                EvalOptions(seeds=[0, 1], routers=ROUTER_SET),
            )
        )
    )
    herd["routers"]["vote-learned"] = {**herd["routers"]["oracle"], "family": "vote"}
    herd["command"] = "herd eval herd"
    reports = {"mmlu_pro_llama70b_vs_8b": pair, "mmlu_pro_open_vs_gemini": herd}
    pairs = "\n".join(table.pairs_table(reports))
    assert "| `cascade` (cascade) |" in pairs
    kept_row = next(line for line in pairs.splitlines() if "`cascade-kept`" in line)
    assert "| 0.400" in kept_row and "APGR as a router >= 0.70: NOT met" in kept_row
    assert "APGR as a router >= 0.70: met" in pairs
    assert "above text at 0.5/0.6/0.75 C: yes/yes/yes" in pairs
    assert "best text router at each budget" in pairs
    experts = "\n".join(table.n_expert_table(reports))
    assert "`vote-learned`" in experts and "> 0: met" in experts
    page = table.results_page(reports)
    for heading in (
        "## N experts: oracle gap closed, margin routers and the learned vote",
        "## Strong/weak pairs: both views",
        "### The honest view",
        "### The RouteLLM view",
    ):
        assert heading in page
