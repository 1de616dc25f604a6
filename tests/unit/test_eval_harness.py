"""The `herd eval` harness on small hand-made tables: data, splits, routers, scoring, report.

Every table here has made-up model names and counts (3, 5 or 2 models), so nothing may
assume a name or a number of models. Expected figures are worked out by hand in comments.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
# Imported after the skips, so an install without the data extras skips instead of failing.
import pandas as pd

from langchain_herd.errors import ConfigError
from langchain_herd.evaluation.data import (
    EvalData,
    EvalSplit,
    load_costs,
    load_eval_data,
    parse_where,
    splits,
)
from langchain_herd.evaluation.metrics import apgr
from langchain_herd.evaluation.report import headline, markdown_report, merge_reports
from langchain_herd.evaluation.routers import (
    ROUTERS,
    RouterContext,
    RouterOutput,
    default_routers,
)
from langchain_herd.evaluation.run import EvalOptions, evaluate
from langchain_herd.evaluation.scoring import (
    COST_WEIGHTS,
    choose,
    majority_vote,
    score_output,
    split_baselines,
)
from langchain_herd.tables import TableError
from langchain_herd.training.progress import SilentProgress
from tests.unit.test_eval_metrics import _oracle_apgr_closed_form

Embeddings = Callable[[], npt.NDArray[np.float32]]

THREE = ["m one", "org/Model-2", "x3"]
FIVE = ["alpha", "Beta_2", "c", "d.e", "vendor/F-9b"]
FIVE_COSTS = {"alpha": 7.0, "Beta_2": 4.0, "c": 1.0, "d.e": 2.0, "vendor/F-9b": 0.5}


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


def write_json(value: Any, path: Path) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def three_model_frame(n: int = 40) -> pd.DataFrame:
    """Three models with odd names; ``source`` is ori_mmlu-algebra (even k), ori_mmlu-law
    (k % 4 == 1) or gsm8k (k % 4 == 3)."""
    k = np.arange(n)
    source = np.where(k % 2 == 0, "ori_mmlu-algebra", np.where(k % 4 == 1, "ori_mmlu-law", "gsm8k"))
    return pd.DataFrame(
        {
            "id": [f"q{i:02d}" for i in k],
            "prompt": [f"Question number {i}?" for i in k],
            "source": source,
            "m one": pd.array((k % 2 == 0).astype(int), dtype="Int8"),
            "org/Model-2": pd.array((k % 3 == 0).astype(int), dtype="Int8"),
            "x3": (k % 5 == 0).astype(float),
        }
    )


# The five-model table: ten train rows, then ten test rows (its own `split` column).
# Train: model m is right on train rows r < count[m], so train accuracy is count / 10.
FIVE_TRAIN_COUNT = {"alpha": 3, "Beta_2": 5, "c": 8, "d.e": 6, "vendor/F-9b": 2}
# Test: the rows each model gets right. Row 9 nobody gets right.
FIVE_TEST_RIGHT = {
    "alpha": {0, 1, 2, 3},  # 0.4
    "Beta_2": {3, 4, 5, 6, 7, 8},  # 0.6: best on test
    "c": {0, 2, 4, 6, 8},  # 0.5: c is best on train (0.8), so it is the best single
    "d.e": {1, 8},  # 0.2
    "vendor/F-9b": {0},  # 0.1
}
# Oracle on test: rows 0..8 have a right model -> 0.9.
FIVE_TEST_ANSWERS = ["B", "C", "C", "A", "A", "A", "D", "C", "B", "A"]
# Each model's letter per test row (columns in FIVE order); None and "" are no answer.
FIVE_TEST_VOTES: list[list[str | None]] = [
    ["B", "B", "B", "A", "C"],  # 0: B has 3 -> B, right
    ["A", "C", "C", "", "D"],  # 1: C has 2 -> C, right
    ["A", "B", "C", "D", ""],  # 2: 4-way tie -> c's letter (best on train) C, right
    ["A", "A", "B", "B", "C"],  # 3: A/B tie -> c's letter B, wrong (answer A)
    ["B", "B", "", "A", "A"],  # 4: A/B tie, c silent -> d.e (2nd on train) A, right
    [None, None, None, None, None],  # 5: no votes -> wrong
    ["d", " d ", "D", None, ""],  # 6: letters are normalised -> D, right
    ["C", "C", "A", "A", "A"],  # 7: A has 3 -> A, wrong (answer C)
    ["B", "", "", "", ""],  # 8: B alone -> right
    [None, None, None, None, None],  # 9: no votes -> wrong
]
# Majority vote: rows 0, 1, 2, 4, 6, 8 right -> 0.6.


def five_model_frame() -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for r in range(10):
        right = {m: int(r < FIVE_TRAIN_COUNT[m]) for m in FIVE}
        group = ["stem", "humanities"][r % 2]
        meta = {"id": f"tr{r}", "split": "train", "group": group, "answer": "A"}
        rows.append({**meta, "prompt": f"train question {r}", **right})
    for r in range(10):
        right = {m: int(r in FIVE_TEST_RIGHT[m]) for m in FIVE}
        group = "stem" if r < 5 else "humanities"
        meta = {"id": f"te{r}", "split": "test", "group": group, "answer": FIVE_TEST_ANSWERS[r]}
        rows.append({**meta, "prompt": f"test question {r}", **right})
    return pd.DataFrame(rows)


def five_model_predictions() -> pd.DataFrame:
    train = [["A"] * 5 for _ in range(10)]
    frame = pd.DataFrame(train + FIVE_TEST_VOTES, columns=FIVE)
    frame.insert(0, "id", [f"tr{r}" for r in range(10)] + [f"te{r}" for r in range(10)])
    return frame


@pytest.fixture
def five(tmp_path: Path) -> EvalData:
    """The five-model table with costs and predictions."""
    return load_eval_data(
        write(five_model_frame(), tmp_path / "five.parquet"),
        costs_path=write_json(FIVE_COSTS, tmp_path / "models.json"),
        predictions_path=write(five_model_predictions(), tmp_path / "predictions.parquet"),
    )


def column_split(data: EvalData, seed: int = 0) -> EvalSplit:
    (split,) = splits(data, [seed], use_split_column=None)
    return split


def no_embeddings() -> npt.NDArray[np.float32]:
    raise AssertionError("this router should not need embeddings")


def context(
    data: EvalData,
    split: EvalSplit,
    *,
    embeddings: Embeddings = no_embeddings,
    pair: tuple[int, int] | None = None,
) -> RouterContext:
    return RouterContext(
        data=data,
        split=split,
        train=split.train,
        predict=split.test,
        embeddings=embeddings,
        progress=SilentProgress(),
        pair=pair,
    )


def run(name: str, ctx: RouterContext) -> RouterOutput:
    return ROUTERS[name].run(ctx)


# ---------------------------------------------------------------- load_eval_data


def test_model_columns_are_found_whatever_their_names(tmp_path: Path) -> None:
    data = load_eval_data(write(three_model_frame(), tmp_path / "t.parquet"))
    assert data.models == THREE
    assert data.correct.shape == (40, 3)
    assert data.correct[:4].tolist() == [[1, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0]]
    assert data.costs.tolist() == [1.0, 1.0, 1.0] and data.cost_unit == "calls"
    assert data.texts[:2] == ["Question number 0?", "Question number 1?"]
    assert data.info["rows_in_file"] == 40 and data.info["rows_without_every_result"] == 0


def test_five_models_load_with_votes_and_answers(five: EvalData) -> None:
    assert five.models == FIVE
    assert five.costs.tolist() == [7.0, 4.0, 1.0, 2.0, 0.5]
    assert five.cost_unit == "active params (B)"
    assert five.votes is not None and five.answers is not None
    assert five.votes.shape == (20, 5)
    assert five.votes[16].tolist() == ["D", "D", "D", "", ""]  # stripped, upper-cased
    assert five.answers[10:].tolist() == FIVE_TEST_ANSWERS
    assert five.labels["group"][10:].tolist() == ["stem"] * 5 + ["humanities"] * 5


def test_parse_where() -> None:
    assert parse_where(["source=ori_mmlu-*", " id = q1* "]) == [
        ("source", "ori_mmlu-*"),
        ("id", "q1*"),
    ]
    for bad in ["source", "=ori_mmlu-*"]:
        with pytest.raises(TableError, match="write COLUMN=PATTERN"):
            parse_where([bad])


def test_where_keeps_matching_rows(tmp_path: Path) -> None:
    path = write(three_model_frame(), tmp_path / "t.parquet")
    data = load_eval_data(path, where=parse_where(["source=ori_mmlu-*"]))
    assert data.table.frame["id"].tolist() == [f"q{k:02d}" for k in range(40) if k % 4 != 3]
    assert data.info["rows"] == 30 and data.info["where"] == ["source=ori_mmlu-*"]
    # Every filter must match; [0-2] is a character range: q00..q29 without k % 4 == 3.
    data = load_eval_data(path, where=[("source", "ori_mmlu-*"), ("id", "q[0-2]*")])
    assert data.table.frame["id"].tolist() == [f"q{k:02d}" for k in range(30) if k % 4 != 3]
    assert len(data) == 23 and len(data.texts) == 23
    data = load_eval_data(path, where=[("source", "ori_mmlu-l?w")])
    assert data.table.frame["id"].tolist() == [f"q{k:02d}" for k in range(1, 40, 4)]


def test_where_matching_nothing_or_unknown_column_raises(tmp_path: Path) -> None:
    path = write(three_model_frame(), tmp_path / "t.parquet")
    with pytest.raises(TableError, match=r"no row has source matching 'nothing\*'"):
        load_eval_data(path, where=[("source", "nothing*")])
    with pytest.raises(TableError, match=r"--where names column 'origin'.*'source'"):
        load_eval_data(path, where=[("origin", "x")])
    # gsm8k rows (k % 4 == 3) with an id q0*: q03 and q07 only, too few to evaluate.
    with pytest.raises(TableError, match="only 2 rows"):
        load_eval_data(path, where=[("source", "gsm8k"), ("id", "q0*")])


def test_rows_without_every_herd_result_are_dropped_and_counted(tmp_path: Path) -> None:
    frame = three_model_frame()
    frame.loc[[1, 2, 3], "org/Model-2"] = pd.NA
    frame.loc[[3, 4], "x3"] = np.nan
    data = load_eval_data(write(frame, tmp_path / "t.parquet"))
    assert data.info["rows_without_every_result"] == 4  # rows 1, 2, 3, 4
    assert data.info["rows"] == 36 and len(data) == 36
    assert not np.isnan(data.correct).any()
    assert "q01" not in data.table.frame["id"].tolist()
    # Only the herd counts: without org/Model-2, rows 1 and 2 stay.
    data = load_eval_data(write(frame, tmp_path / "t.parquet"), models=["m one", "x3"])
    assert data.info["rows_without_every_result"] == 2  # rows 3, 4 (x3)


def test_costs_keyed_by_the_table_file_name(tmp_path: Path) -> None:
    table = write(three_model_frame(), tmp_path / "t.parquet")
    costs = {
        "other.parquet": {m: {"active_params_b": 99.0} for m in THREE},
        "t.parquet": {
            "m one": {"active_params_b": 1.5},
            "org/Model-2": {"active_params_b": 7},
            "x3": {"active_params_b": 70},
        },
    }
    data = load_eval_data(table, costs_path=write_json(costs, tmp_path / "models.json"))
    assert data.costs.tolist() == [1.5, 7.0, 70.0]
    assert data.cost_unit == "active params (B)"
    assert data.info["costs"] == {"m one": 1.5, "org/Model-2": 7.0, "x3": 70.0}


def test_costs_flat_shape(tmp_path: Path) -> None:
    table = write(three_model_frame(), tmp_path / "t.parquet")
    flat = write_json({"m one": 2, "org/Model-2": 3.5, "x3": 0.5}, tmp_path / "flat.json")
    assert load_eval_data(table, costs_path=flat).costs.tolist() == [2.0, 3.5, 0.5]
    per_model = write_json({"m one": {"active_params_b": 8}, "x3": None}, tmp_path / "pm.json")
    assert load_costs(per_model) == {"m one": 8.0, "x3": None}


def test_bad_costs_files_raise(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TableError, match="cannot read the costs file"):
        load_costs(tmp_path / "broken.json")
    with pytest.raises(TableError, match="cost of 'x3' must be a number >= 0"):
        load_costs(write_json({"x3": -1}, tmp_path / "negative.json"))
    with pytest.raises(TableError, match="expected a JSON object"):
        load_costs(write_json([1, 2], tmp_path / "list.json"))


def test_max_cost_selects_the_herd(tmp_path: Path) -> None:
    table = write(three_model_frame(), tmp_path / "t.parquet")
    costs = write_json({"m one": 2, "org/Model-2": 3.5, "x3": 0.5}, tmp_path / "m.json")
    data = load_eval_data(table, costs_path=costs, max_cost=3.0)
    assert data.models == ["m one", "x3"]
    assert data.costs.tolist() == [2.0, 0.5]
    with pytest.raises(TableError, match=r"at least two herd models.*max cost 1"):
        load_eval_data(table, costs_path=costs, max_cost=1.0)
    with pytest.raises(TableError, match="--max-cost needs a costs file"):
        load_eval_data(table, max_cost=3.0)


def test_herd_model_without_a_cost_raises(tmp_path: Path) -> None:
    table = write(three_model_frame(), tmp_path / "t.parquet")
    costs = write_json({"m one": 2, "org/Model-2": None}, tmp_path / "m.json")
    with pytest.raises(TableError, match=r"no cost for herd model\(s\) \['org/Model-2', 'x3'\]"):
        load_eval_data(table, costs_path=costs)
    # Leaving them out of the herd is the way out the message names.
    with pytest.raises(TableError, match="at least two"):
        load_eval_data(table, costs_path=costs, models=["m one"])


def test_reference_is_kept_apart_from_the_herd(tmp_path: Path) -> None:
    frame = three_model_frame()
    frame.loc[[1, 2], "org/Model-2"] = pd.NA
    frame.loc[[4], "x3"] = np.nan
    data = load_eval_data(write(frame, tmp_path / "t.parquet"), reference="x3")
    assert data.models == ["m one", "org/Model-2"]
    assert data.correct.shape == (38, 2)
    # The reference's missing result (row 4) drops nothing; the herd's (rows 1, 2) do.
    assert data.info["rows_without_every_result"] == 2
    assert data.reference == "x3"
    assert data.reference_correct is not None
    expected = frame["x3"].drop(index=[1, 2]).to_numpy()
    np.testing.assert_array_equal(data.reference_correct, expected)
    assert np.isnan(data.reference_correct[2])  # row 4 is the third row kept


def test_reference_errors(tmp_path: Path) -> None:
    table = write(three_model_frame(), tmp_path / "t.parquet")
    with pytest.raises(TableError, match="reference model 'x3' cannot also be in the herd"):
        load_eval_data(table, models=["m one", "x3"], reference="x3")
    with pytest.raises(TableError, match="reference model 'gpt' is not a model column"):
        load_eval_data(table, reference="gpt")


def test_fewer_than_two_herd_models_raise(tmp_path: Path) -> None:
    table = write(three_model_frame(), tmp_path / "t.parquet")
    with pytest.raises(TableError, match=r"at least two herd models, got \['x3'\]"):
        load_eval_data(table, models=["x3"])
    two = write(three_model_frame().drop(columns="x3"), tmp_path / "two.parquet")
    with pytest.raises(TableError, match=r"at least two herd models, got \['m one'\]"):
        load_eval_data(two, reference="org/Model-2")
    with pytest.raises(TableError, match=r"no model column\(s\) \['gpt'\]"):
        load_eval_data(table, models=["m one", "gpt"])


# ---------------------------------------------------------------- splits


def test_split_column_gives_its_rows_for_every_seed(five: EvalData) -> None:
    for split in splits(five, [0, 1, 7], use_split_column=None):
        assert split.method == "column"
        assert split.train.tolist() == list(range(10))
        assert split.test.tolist() == list(range(10, 20))


def test_seeded_splits_are_disjoint_covering_and_reproducible(tmp_path: Path) -> None:
    frame = three_model_frame()
    frame.loc[[5, 6], "x3"] = np.nan  # dropped rows must not break row positions
    data = load_eval_data(write(frame, tmp_path / "t.parquet"))
    first = splits(data, [0, 1, 2], use_split_column=None)
    for split in first:
        assert split.method == "seeded"
        assert len(split.test) == round(0.2 * 38) == 8
        assert set(split.train.tolist()).isdisjoint(split.test.tolist())
        assert sorted([*split.train.tolist(), *split.test.tolist()]) == list(range(38))
    tests = [split.test.tolist() for split in first]
    assert tests[0] != tests[1] and tests[1] != tests[2] and tests[0] != tests[2]
    again = splits(data, [0, 1, 2], use_split_column=None)
    assert [split.test.tolist() for split in again] == tests
    assert [split.train.tolist() for split in again] == [s.train.tolist() for s in first]


# ---------------------------------------------------------------- choose and baselines


def test_choose_takes_the_argmax_and_ties_go_to_the_earlier_model() -> None:
    u = np.array([[0.2, 0.9, 0.1], [0.5, 0.5, 0.5], [0.1, 0.3, 0.3]])
    assert choose(u, np.ones(3)).tolist() == [1, 0, 1]


def test_choose_with_a_cost_weight_prefers_the_cheaper_model_on_a_small_gap() -> None:
    u = np.array([[0.6, 0.5]])
    costs = np.array([10.0, 2.0])  # relative costs 1.0 and 0.2: a gap of 0.8
    # Weight 0.1: weighted cost gap 0.08 < utility gap 0.1, the better model stays.
    assert choose(u, costs, 0.1).tolist() == [0]
    # Weight 0.2: weighted cost gap 0.16 > utility gap 0.1, the cheaper model wins.
    assert choose(u, costs, 0.2).tolist() == [1]
    assert choose(u, costs, 0.0).tolist() == [0]


def test_split_baselines_choose_the_best_single_on_train_rows(five: EvalData) -> None:
    base = split_baselines(five, column_split(five))
    assert (base["n_train"], base["n_test"]) == (10, 10)
    # c is best on train (0.8) but only third on test (0.5); Beta_2 is best on test (0.6).
    assert base["best_single"] == "c"
    assert base["best_single_accuracy"] == pytest.approx(0.5)
    assert base["best_single_cost"] == pytest.approx(1.0)
    assert base["best_on_test"] == "Beta_2"
    assert base["oracle_accuracy"] == pytest.approx(0.9)
    assert base["models"]["Beta_2"] == pytest.approx(
        {"train_accuracy": 0.5, "accuracy": 0.6, "cost": 4.0}
    )
    assert base["models"]["vendor/F-9b"] == pytest.approx(
        {"train_accuracy": 0.2, "accuracy": 0.1, "cost": 0.5}
    )
    assert "reference_accuracy" not in base


# ---------------------------------------------------------------- routers


def groups_frame() -> pd.DataFrame:
    """Train: in group g1 `m one` is right 5 of 6 times, in g2 `org/Model-2` 6 of 6.
    Test: two g1 rows, two g2 rows and one row of a group never seen in training."""
    train = {
        "m one": [1, 1, 1, 1, 1, 0] + [0] * 6,
        "org/Model-2": [0, 0, 0, 0, 0, 1] + [1] * 6,
        "x3": [0] * 6 + [1, 1, 1, 0, 0, 0],
    }
    test = {"m one": [1, 0, 0, 0, 1], "org/Model-2": [0, 1, 1, 1, 0], "x3": [0, 0, 1, 0, 0]}
    groups = ["g1"] * 6 + ["g2"] * 6 + ["g1", "g1", "g2", "g2", "g3"]
    frame = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(17)],
            "prompt": [f"question {i}" for i in range(17)],
            "group": groups,
            "split": ["train"] * 12 + ["test"] * 5,
        }
    )
    for model in THREE:
        frame[model] = train[model] + test[model]
    return frame


def test_oracle_reaches_the_oracle_and_picks_the_cheapest_right_model(five: EvalData) -> None:
    split = column_split(five)
    out = run("oracle", context(five, split))
    # Row 0: alpha, c, F right -> F (0.5); row 1: alpha, d.e -> d.e (2); row 2: c;
    # row 3: alpha, Beta_2 -> Beta_2 (4); rows 4, 6, 8: c (1); rows 5, 7: Beta_2;
    # row 9: nobody right -> the cheapest, F.
    assert choose(out.utilities, five.costs).tolist() == [4, 3, 2, 1, 2, 1, 2, 1, 2, 4]
    figures = score_output(five, split, out, split_baselines(five, split))
    assert figures["accuracy"] == pytest.approx(0.9)
    assert figures["oracle_gap_closed"] == pytest.approx(1.0)
    # (0.5 + 2 + 1 + 4 + 1 + 4 + 1 + 4 + 1 + 0.5) / 10
    assert figures["cost"] == pytest.approx(1.9)


def test_best_single_always_picks_the_train_best_model(five: EvalData) -> None:
    out = run("best-single", context(five, column_split(five)))
    assert out.probabilities
    np.testing.assert_allclose(out.utilities, np.tile([0.3, 0.5, 0.8, 0.6, 0.2], (10, 1)))
    assert choose(out.utilities, five.costs).tolist() == [2] * 10  # c


def test_group_best_picks_the_train_best_model_per_group(tmp_path: Path) -> None:
    data = load_eval_data(write(groups_frame(), tmp_path / "g.parquet"))
    out = run("group-best", context(data, column_split(data)))
    # Overall train rates: 5/12, 7/12, 3/12. A group's rate is shrunk toward them with
    # 5 pseudo-questions: (right + 5 * overall) / (rows + 5).
    # g1: (5 + 25/12) / 11 = 85/132, (1 + 35/12) / 11 = 47/132, (0 + 15/12) / 11 = 15/132
    # g2: (0 + 25/12) / 11 = 25/132, (6 + 35/12) / 11 = 107/132, (3 + 15/12) / 11 = 51/132
    # g3 (not in train): the overall rates.
    g1, g2 = np.array([85, 47, 15]) / 132, np.array([25, 107, 51]) / 132
    np.testing.assert_allclose(out.utilities, [g1, g1, g2, g2, np.array([5, 7, 3]) / 12])
    assert choose(out.utilities, data.costs).tolist() == [0, 0, 1, 1, 1]


def test_random_router_is_reproducible_per_seed(five: EvalData) -> None:
    first, second, again = splits(five, [0, 1, 0], use_split_column=None)
    u0 = run("random", context(five, first)).utilities
    assert u0.shape == (10, 5)
    np.testing.assert_array_equal(u0, run("random", context(five, again)).utilities)
    assert not np.array_equal(u0, run("random", context(five, second)).utilities)


def cluster_frame(n: int = 200) -> pd.DataFrame:
    """Even rows are cluster A, where `m one` is right; odd rows cluster B, where `x3` is."""
    k = np.arange(n)
    in_a = k % 2 == 0
    return pd.DataFrame(
        {
            "id": [f"q{i}" for i in k],
            "prompt": [
                f"{'apples and pears' if a else 'rockets and orbits'} {i}"
                for i, a in zip(k, in_a, strict=True)
            ],
            "m one": in_a.astype(int),
            "org/Model-2": (k % 3 == 0).astype(int),
            "x3": (~in_a).astype(int),
        }
    )


def cluster_embeddings(n: int = 200) -> npt.NDArray[np.float32]:
    x = np.zeros((n, 4), dtype=np.float32)
    x[0::2, 0] = 1.0
    x[1::2, 1] = 1.0
    return x


def test_knn_routes_each_cluster_to_its_model(tmp_path: Path) -> None:
    data = load_eval_data(write(cluster_frame(), tmp_path / "c.parquet"))
    (split,) = splits(data, [0], use_split_column=None)
    x = cluster_embeddings()
    out = run("knn", context(data, split, embeddings=lambda: x))
    assert out.probabilities
    in_a = split.test % 2 == 0
    assert choose(out.utilities, data.costs).tolist() == [0 if a else 2 for a in in_a]
    # All k neighbours come from the query's own cluster, plus one pseudo-neighbour at
    # the training prior: (hits + prior) / (k + 1).
    k = out.details["k"]
    prior = data.correct[split.train].mean(axis=0)
    np.testing.assert_allclose(out.utilities[in_a, 0], (k + prior[0]) / (k + 1))
    np.testing.assert_allclose(out.utilities[in_a, 2], prior[2] / (k + 1))
    np.testing.assert_allclose(out.utilities[~in_a, 2], (k + prior[2]) / (k + 1))


def test_strong_wins_router_needs_a_pair(tmp_path: Path) -> None:
    assert "pair" in ROUTERS["strong-wins-tfidf"].needs
    pytest.importorskip("sklearn")
    data = load_eval_data(write(cluster_frame(), tmp_path / "c.parquet"))
    (split,) = splits(data, [0], use_split_column=None)
    out = run("strong-wins-tfidf", context(data, split, pair=(2, 0)))
    assert out.pair_score is not None and not out.probabilities
    assert ((out.pair_score >= 0) & (out.pair_score <= 1)).all()
    np.testing.assert_allclose(out.utilities[:, 2], out.pair_score)
    np.testing.assert_allclose(out.utilities[:, 0], 1.0 - out.pair_score)
    assert (out.utilities[:, 1] == 0).all()  # not in the pair: never chosen


def test_default_routers_leave_out_the_fine_tuning_ones() -> None:
    assert list(ROUTERS)[:3] == ["oracle", "random", "best-single"]
    slow = {name for name, spec in ROUTERS.items() if "slow" in spec.needs}
    assert slow == {"finetune", "strong-wins-finetune"}
    assert set(default_routers()) == set(ROUTERS) - slow
    assert default_routers(include_slow=True) == list(ROUTERS)


# ---------------------------------------------------------------- score_output


# A hand-made verdict on the five test rows: the chosen model gets 0.9, the others 0.1.
HAND_CHOICE = [0, 3, 2, 1, 4, 1, 0, 1, 2, 4]
# Right? alpha on 0: yes; d.e on 1: yes; c on 2: yes; Beta_2 on 3: yes; F on 4: no;
# Beta_2 on 5: yes; alpha on 6: no; Beta_2 on 7: yes; c on 8: yes; F on 9: no -> 0.7.


def hand_output(pair_score: npt.NDArray[np.float64] | None = None) -> RouterOutput:
    u = np.full((10, 5), 0.1)
    u[np.arange(10), HAND_CHOICE] = 0.9
    return RouterOutput(u, probabilities=True, pair_score=pair_score)


def test_score_output_figures_by_hand(five: EvalData) -> None:
    split = column_split(five)
    figures = score_output(five, split, hand_output(), split_baselines(five, split))
    assert figures["accuracy"] == pytest.approx(0.7)
    # (7 + 2 + 1 + 4 + 0.5 + 4 + 7 + 4 + 1 + 0.5) / 10
    assert figures["cost"] == pytest.approx(3.1)
    assert figures["shares"] == pytest.approx(
        {"alpha": 0.2, "Beta_2": 0.3, "c": 0.2, "d.e": 0.1, "vendor/F-9b": 0.2}
    )
    # (0.7 - best single 0.5) / (oracle 0.9 - 0.5)
    assert figures["oracle_gap_closed"] == pytest.approx(0.5)
    # stem rows 0-4: 1, 1, 1, 1, 0; humanities rows 5-9: 1, 0, 1, 1, 0
    assert figures["by_label"] == pytest.approx({"humanities": 0.6, "stem": 0.8})
    # ECE, ten bins: the 10 chosen cells (p 0.9) are right 7 times: |0.7 - 0.9| = 0.2;
    # the 40 others (p 0.1) are right 18 - 7 = 11 times: |0.275 - 0.1| = 0.175.
    # 10/50 * 0.2 + 40/50 * 0.175 = 0.18
    assert figures["ece"] == pytest.approx(0.18)
    assert "aiq" in figures
    assert not {"apgr", "cpt50", "cpt80", "pgr_curve"} & set(figures)


def test_frontier_runs_from_argmax_to_the_cheapest_model(five: EvalData) -> None:
    split = column_split(five)
    figures = score_output(five, split, hand_output(), split_baselines(five, split))
    frontier = figures["frontier"]
    assert [p["cost_weight"] for p in frontier] == list(COST_WEIGHTS)
    assert frontier[0] == pytest.approx({"cost_weight": 0.0, "cost": 3.1, "accuracy": 0.7})
    # Largest weight (1e4): the cheapest two differ by 0.5 / 7 of the dearest cost, far
    # more than any utility gap: every row goes to vendor/F-9b (cost 0.5, right on test row 0 only).
    assert frontier[-1] == pytest.approx({"cost_weight": 1e4, "cost": 0.5, "accuracy": 0.1})


def test_pair_figures_only_with_a_pair(five: EvalData) -> None:
    split = column_split(five)
    base = split_baselines(five, split)
    figures = score_output(five, split, hand_output(), base, pair=(1, 0))
    # Strong Beta_2, weak alpha. Default score: u[Beta_2] - u[alpha]: 0.8 on rows 3, 5, 7,
    # -0.8 on rows 0, 6, else 0. Order: 3, 5, 7, 1, 2, 4, 8, 9, 0, 6 with strong - weak gains
    # 0, 1, 1, -1, -1, 1, 1, 0, -1, 1; the gap is 2 questions, so PGR at k = 0..10 is
    # 0, 0, .5, 1, .5, 0, .5, 1, 1, .5, 1: CPT(50%) = 2/10, CPT(80%) = 3/10.
    assert figures["cpt50"] == pytest.approx(0.2)
    assert figures["cpt80"] == pytest.approx(0.3)
    y = five.correct[split.test]
    u = hand_output().utilities
    assert figures["apgr"] == pytest.approx(apgr(u[:, 1] - u[:, 0], y[:, 1], y[:, 0]))
    assert len(figures["pgr_curve"]["share"]) == len(figures["pgr_curve"]["pgr"]) == 101
    # An explicit pair score replaces the utility difference: the oracle's order.
    oracle_score = y[:, 1] - y[:, 0]
    figures = score_output(five, split, hand_output(oracle_score), base, pair=(1, 0))
    assert figures["apgr"] == pytest.approx(apgr(oracle_score, y[:, 1], y[:, 0]))
    assert figures["cpt50"] == pytest.approx(0.1)


def test_score_output_rejects_utilities_of_the_wrong_shape(five: EvalData) -> None:
    split = column_split(five)
    with pytest.raises(ValueError, match=r"shape \(10, 4\), expected \(10, 5\)"):
        score_output(five, split, RouterOutput(np.zeros((10, 4)), False), {})


# ---------------------------------------------------------------- majority vote


def test_majority_vote_by_hand(five: EvalData) -> None:
    vote = majority_vote(five, column_split(five))
    assert vote is not None
    # Rows 0, 1, 2, 4, 6, 8 right (see FIVE_TEST_VOTES); the cost is the whole herd's.
    assert vote["accuracy"] == pytest.approx(0.6)
    assert vote["cost"] == pytest.approx(7 + 4 + 1 + 2 + 0.5)


def test_majority_vote_needs_predictions(tmp_path: Path) -> None:
    data = load_eval_data(write(five_model_frame(), tmp_path / "five.parquet"))
    assert majority_vote(data, column_split(data)) is None


def test_predictions_that_miss_a_question_raise(tmp_path: Path) -> None:
    table = write(five_model_frame(), tmp_path / "five.parquet")
    short = write(five_model_predictions().iloc[:-1], tmp_path / "p.parquet")
    with pytest.raises(TableError, match=r"no predictions for 1 question id\(s\).*te9"):
        load_eval_data(table, predictions_path=short)


# ---------------------------------------------------------------- evaluate


def small_frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """Three groups; `m one` is strong on g1, `org/Model-2` on g2, `x3` so-so everywhere."""
    rng = np.random.default_rng(seed)
    group = np.array(["g1", "g2", "g3"])[np.arange(n) % 3]
    rates = {
        "m one": {"g1": 0.9, "g2": 0.2, "g3": 0.5},
        "org/Model-2": {"g1": 0.2, "g2": 0.9, "g3": 0.5},
        "x3": {"g1": 0.5, "g2": 0.5, "g3": 0.5},
    }
    frame = pd.DataFrame(
        {"id": [f"q{i}" for i in range(n)], "prompt": [f"q {i}" for i in range(n)], "group": group}
    )
    for model, by_group in rates.items():
        p = np.array([by_group[g] for g in group])
        frame[model] = (rng.random(n) < p).astype(int)
    return frame


ROUTER_SET = ["oracle", "random", "best-single", "group-best"]


def test_evaluate_summarises_three_seeds(tmp_path: Path) -> None:
    data = load_eval_data(write(small_frame(), tmp_path / "s.parquet"))
    report = evaluate(data, EvalOptions(seeds=[0, 1, 2], routers=ROUTER_SET))
    assert list(report["routers"]) == ROUTER_SET
    assert report["skipped"] == {}
    assert report["split"]["method"] == "seeded" and report["split"]["n_test"] == [12] * 3
    assert len(report["baselines"]["per_seed"]) == 3
    for name, router in report["routers"].items():
        assert len(router["per_seed"]) == 3, name
        accuracy = router["summary"]["accuracy"]
        assert set(accuracy) == {"mean", "std", "min", "max", "n"}
        per_seed = [run["accuracy"] for run in router["per_seed"]]
        assert accuracy["n"] == 3
        assert accuracy["mean"] == pytest.approx(np.mean(per_seed))
        assert accuracy["std"] == pytest.approx(np.std(per_seed, ddof=1))
        assert (accuracy["min"], accuracy["max"]) == (min(per_seed), max(per_seed))
    gap = {name: r["summary"]["oracle_gap_closed"] for name, r in report["routers"].items()}
    assert gap["oracle"] == pytest.approx({"mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0, "n": 3})
    assert gap["best-single"] == pytest.approx(
        {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0, "n": 3}
    )
    oracle_runs = report["routers"]["oracle"]["per_seed"]
    assert [r["accuracy"] for r in oracle_runs] == pytest.approx(
        [b["oracle_accuracy"] for b in report["baselines"]["per_seed"]]
    )
    assert report["majority_vote"] is None and report["pair"] is None


def test_evaluate_is_reproducible(tmp_path: Path) -> None:
    data = load_eval_data(write(small_frame(), tmp_path / "s.parquet"))
    options = EvalOptions(seeds=[0, 1], routers=ROUTER_SET)
    first, second = evaluate(data, options), evaluate(data, options)

    def figures(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
        # Everything but the wall-clock seconds.
        return [
            {k: v for k, v in run.items() if k != "seconds"}
            for run in report["routers"][name]["per_seed"]
        ]

    for name in ROUTER_SET:
        assert figures(first, name) == figures(second, name), name


def test_unknown_router_raises(five: EvalData) -> None:
    with pytest.raises(ConfigError, match=r"unknown router\(s\) \['oracel'\]"):
        evaluate(five, EvalOptions(seeds=[0], routers=["oracle", "oracel"]))


def test_a_router_named_twice_is_counted_once_per_seed(tmp_path: Path) -> None:
    data = load_eval_data(write(small_frame(), tmp_path / "s.parquet"))
    report = evaluate(data, EvalOptions(seeds=[0, 1], routers=["oracle", "random", "oracle"]))
    assert len(report["routers"]["oracle"]["per_seed"]) == 2
    assert report["routers"]["oracle"]["summary"]["accuracy"]["n"] == 2


def test_pair_outside_the_herd_raises(five: EvalData) -> None:
    with pytest.raises(ConfigError, match="two different herd models"):
        evaluate(five, EvalOptions(seeds=[0], routers=["oracle"], pair=("Beta_2", "gpt")))
    with pytest.raises(ConfigError, match="two different herd models"):
        evaluate(five, EvalOptions(seeds=[0], routers=["oracle"], pair=("c", "c")))


def test_routers_missing_a_column_are_skipped_with_a_reason(tmp_path: Path) -> None:
    data = load_eval_data(write(three_model_frame(), tmp_path / "t.parquet"))
    report = evaluate(
        data, EvalOptions(seeds=[0], routers=["oracle", "group-best", "strong-wins-tfidf"])
    )
    assert list(report["routers"]) == ["oracle"]
    assert report["skipped"] == {
        "group-best": "the table has no 'group' column",
        "strong-wins-tfidf": "needs a strong/weak pair (--pair STRONG WEAK)",
    }


# ---------------------------------------------------------------- APGR through the harness


STRONG, WEAK = "Strong 70B", "weak/1b"


def strong_weak_frame(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Strong right ~80% of the time, weak ~50%, independently."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "prompt": [f"question {i}" for i in range(n)],
            STRONG: (rng.random(n) < 0.8).astype(int),
            WEAK: (rng.random(n) < 0.5).astype(int),
        }
    )


def apgr_report(path: Path) -> dict[str, Any]:
    data = load_eval_data(path)
    options = EvalOptions(
        seeds=range(5), routers=["oracle", "random", "best-single"], pair=(STRONG, WEAK)
    )
    return evaluate(data, options)


def apgr_mean(report: dict[str, Any], name: str) -> float:
    return float(report["routers"][name]["summary"]["apgr"]["mean"])


def test_apgr_of_random_oracle_and_best_single(tmp_path: Path) -> None:
    path = write(strong_weak_frame(), tmp_path / "sw.parquet")
    report = apgr_report(path)
    assert report["pair"] == {"strong": STRONG, "weak": WEAK}
    assert apgr_mean(report, "random") == pytest.approx(0.5, abs=0.05)
    # The oracle's APGR per split against the closed form on that split's held-out rows.
    data = load_eval_data(path)
    expected = []
    for split in splits(data, range(5), use_split_column=None):
        y = data.correct[split.test]
        expected.append(_oracle_apgr_closed_form(y[:, 0], y[:, 1]))
    oracle_runs = report["routers"]["oracle"]["per_seed"]
    assert [run["apgr"] for run in oracle_runs] == pytest.approx(expected, abs=0.01)
    # Constant scores carry no information: no better than random.
    assert apgr_mean(report, "best-single") <= apgr_mean(report, "random") + 0.05
    for name in ("oracle", "random", "best-single"):
        assert {"apgr", "cpt50", "cpt80", "pgr_curve"} <= set(report["routers"][name]["summary"])


def test_best_single_apgr_does_not_depend_on_row_order(tmp_path: Path) -> None:
    frame = strong_weak_frame()
    gain = frame[STRONG] - frame[WEAK]
    ordered = frame.iloc[np.argsort(-gain.to_numpy(), kind="stable")]
    report = apgr_report(write(ordered, tmp_path / "sorted.parquet"))
    # Same rows, same ids, same splits: only the order of the file differs.
    assert apgr_mean(report, "best-single") == pytest.approx(0.5, abs=0.05)


# ---------------------------------------------------------------- report


def test_markdown_report_lists_routers_vote_and_skipped(five: EvalData) -> None:
    routers = ["oracle", "random", "best-single", "group-best", "strong-wins-tfidf"]
    report = evaluate(five, EvalOptions(seeds=[0, 1], routers=routers))
    assert report["majority_vote"]["accuracy"]["mean"] == pytest.approx(0.6)
    text = markdown_report(report)
    assert text.startswith("# herd eval: five.parquet\n")
    assert "| router | family | accuracy | cost/query | oracle gap closed | AIQ | ECE |" in text
    assert "APGR" not in text  # no pair
    for name in routers[:4]:
        assert f"\n| {name} | " in text
    assert "| majority vote | ensemble | 0.600 ± 0.000 | 14.50 |" in text
    assert "## Not run" in text
    assert "- `strong-wins-tfidf`: needs a strong/weak pair (--pair STRONG WEAK)" in text
    assert "the table's own `split` column" in text
    assert "Best single model (chosen on train): c, accuracy 0.500 ± 0.000" in text
    assert markdown_report(report, title="My run").startswith("# My run\n")


def stats(mean: float) -> dict[str, float]:
    return {"mean": mean, "std": 0.0, "min": mean, "max": mean, "n": 1}


def test_headline_picks_the_best_router_that_is_not_a_bound() -> None:
    def router(family: str, accuracy: float, cost: float) -> dict[str, Any]:
        summary = {"accuracy": stats(accuracy), "cost": stats(cost)}
        return {"family": family, "summary": summary}

    report = {
        "routers": {
            "oracle": router("bound", 0.95, 1.0),
            "best-single": router("baseline", 0.6, 7.0),
            "mine": router("project", 0.7, 3.0),
            "theirs": router("published", 0.65, 2.0),
        },
        "baselines": {
            "summary": {"best_single_accuracy": stats(0.6), "oracle_accuracy": stats(0.95)}
        },
    }
    assert headline(report) == {
        "router": "mine",
        "accuracy": 0.7,
        "cost": 3.0,
        "oracle_gap_closed": None,
        "best_single_accuracy": 0.6,
        "oracle_accuracy": 0.95,
    }
    report["routers"] = {"oracle": router("bound", 0.95, 1.0)}
    assert headline(report) == {}


def test_merge_reports_adds_routers_of_a_run_on_the_same_splits(five: EvalData) -> None:
    base = evaluate(five, EvalOptions(seeds=[0, 1], routers=["oracle", "best-single"]))
    extra = evaluate(five, EvalOptions(seeds=[0, 1], routers=["random"]))
    extra["command"] = "herd eval other"
    merged = merge_reports(base, extra, note="on a GPU")
    assert list(merged["routers"]) == ["oracle", "best-single", "random"]
    assert merged["routers"]["random"]["note"] == "on a GPU"
    assert "oracle" in merged["routers"] and "random" not in base["routers"]
    assert "Merged from another run (on a GPU): `herd eval other`" in markdown_report(merged)


def test_merge_reports_refuses_runs_on_other_questions(five: EvalData, tmp_path: Path) -> None:
    base = evaluate(five, EvalOptions(seeds=[0], routers=["oracle"]))
    other = evaluate(five, EvalOptions(seeds=[0, 1], routers=["random"]))
    with pytest.raises(ValueError, match="differ in seeds"):
        merge_reports(base, other, note="x")
    moved = json.loads(json.dumps(base))
    moved["split"]["test_sha256"] = ["0" * 16]
    with pytest.raises(ValueError, match="held-out questions"):
        merge_reports(base, moved, note="x")
