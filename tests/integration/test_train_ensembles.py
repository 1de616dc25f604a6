"""`herd train --kind cascade|learned-vote` on a small table cut from the shared MMLU-Pro
tables (real models' correctness and letters); skipped where ../shared/data is absent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("pyarrow")

from langchain_herd.ensembles.scorers import CascadeModel, LearnedVote, load_ensemble_artifact
from langchain_herd.training.cli import train_main
from langchain_herd.training.train import train_router

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "correctness"
TRAIN = [sys.executable, "-m", "langchain_herd.training.cli"]

WEAK, STRONG = "Meta-Llama-3_1-8B-Instruct", "Meta-Llama-3_1-70B-Instruct"
CANDIDATES = ["Mistral-7B-Instruct-v0.2", "Qwen1.5-7B-Chat", "gemma-7b"]
MODELS = [WEAK, STRONG, *CANDIDATES]
N_ROWS = 400

pytestmark = pytest.mark.skipif(
    not (SHARED / "mmlu_pro_predictions.parquet").is_file(),
    reason="the shared MMLU-Pro tables (../shared/data) are not here",
)


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tables")
    correctness = pd.read_parquet(SHARED / "mmlu_pro.parquet")
    letters = pd.read_parquet(SHARED / "mmlu_pro_predictions.parquet")
    rows = correctness.sample(n=N_ROWS, random_state=0).index
    columns = ["id", "dataset", "category", "prompt", "answer", *MODELS]
    correctness.loc[rows, columns].to_parquet(folder / "correctness.parquet")
    letters.loc[rows, ["id", *MODELS]].to_parquet(folder / "answers.parquet")
    costs = json.loads((SHARED / "models.json").read_text())["mmlu_pro.parquet"]
    (folder / "models.json").write_text(json.dumps({m: costs[m] for m in MODELS}))
    return {
        "table": folder / "correctness.parquet",
        "answers": folder / "answers.parquet",
        "costs": folder / "models.json",
        "folder": folder,
    }


def cascade_args(tables: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        str(tables["table"]),
        "--kind",
        "cascade",
        "--answers",
        str(tables["answers"]),
        "--weak",
        WEAK,
        "--strong",
        STRONG,
        "--out",
        str(out),
        *extra,
    ]


def test_cascade_command_writes_a_loadable_artifact(
    tables: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "cascade.json"
    run = subprocess.run(
        [
            *TRAIN,
            *cascade_args(tables, out),
            *["--costs", str(tables["costs"])],
            *["--candidates", ",".join(CANDIDATES), "--max-helpers", "1"],
            *["--json", str(tmp_path / "result.json")],
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert f"trained a cascade on {N_ROWS} questions" in run.stdout
    assert "out-of-fold at the default threshold" in run.stdout
    assert "escalate share" in run.stdout and "escalating at most 50%" in run.stdout
    assert "router.ensemble.scorer" in run.stdout
    assert "fitting the cascade" in run.stderr  # progress goes to stderr

    model = load_ensemble_artifact(out)
    assert isinstance(model, CascadeModel)
    assert model.tiers[0][0] == WEAK and model.tiers[1] == [STRONG]
    assert len(model.tiers[0]) <= 2 and set(model.tiers[0][1:]) <= set(CANDIDATES)
    assert model.costs[WEAK] == 8.0 and model.costs[STRONG] == 70.6
    assert 0.0 <= model.default_threshold <= 1.0 and model.calibration
    data = model.metadata["data"]
    assert data["rows"] == N_ROWS and len(data["table"]["sha256"]) == 64
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["kind"] == "cascade" and result["out"] == str(out)
    assert result["summary"]["helpers"] == model.tiers[0][1:]
    # the report's figures are the artifact's own out-of-fold calibration
    point = result["summary"]
    assert any(
        p["accuracy"] == point["accuracy"] and p["threshold"] == model.default_threshold
        for p in model.calibration
    )


def test_learned_vote_and_fixed_cascade_in_process(
    tables: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = [STRONG, WEAK, "gemma-7b"]
    out = tmp_path / "vote.json"
    code = train_main(
        [
            str(tables["table"]),
            *["--kind", "learned-vote", "--answers", str(tables["answers"])],
            *["--members", ",".join(members), "--out", str(out), "--quiet"],
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "out-of-fold accuracy" in printed.out and "best member" in printed.out
    vote = load_ensemble_artifact(out)
    assert isinstance(vote, LearnedVote) and sorted(vote.members) == sorted(members)
    assert vote.pick(["A", "A", "B"], {}).winner in {"A", "B"}

    # a fixed two-model cascade on the training side of a seeded split, costs of one call
    out = tmp_path / "plain.json"
    code = train_main(
        [
            *cascade_args(tables, out, "--max-helpers", "0", "--keep", "first", "--rows", "train"),
            "--quiet",
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "every call costs 1" in printed.out
    model = load_ensemble_artifact(out)
    assert isinstance(model, CascadeModel)
    assert model.tiers == [[WEAK], [STRONG]] and model.keep == "first"
    assert model.metadata["data"]["rows"] == round(N_ROWS * 0.8)
    assert model.metadata["data"]["split"]["method"] == "seeded"

    # costs from a herd config whose experts carry the table's model names
    config = tmp_path / "herd.yaml"
    experts = [
        {"name": name, "url": "http://127.0.0.1:9", "cost": cost}
        for name, cost in ((WEAK, 1.0), (STRONG, 9.0))
    ]
    config.write_text(json.dumps({"experts": experts}))
    out = tmp_path / "from-config.json"
    argv = cascade_args(tables, out, "--max-helpers", "0", "--config", str(config))
    assert train_main([*argv, "--quiet"]) == 0
    assert f"experts' cost in {config}" in capsys.readouterr().out
    model = load_ensemble_artifact(out)
    assert isinstance(model, CascadeModel) and model.costs == {WEAK: 1.0, STRONG: 9.0}


def test_text_scores_from_a_router_trained_on_the_table(
    tables: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    router = tmp_path / "router"
    train_router(
        tables["table"],
        mode="correctness",
        backend="tfidf",
        out_dir=router,
        models=[WEAK, STRONG],
        params={"C_grid": [1.0], "max_features": 2000},
    )
    out = tmp_path / "cascade.json"
    args = cascade_args(tables, out, "--max-helpers", "0", "--text-router", str(router))
    assert train_main([*args, "--quiet"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    # trained on this very table: refit out-of-fold, not its over-confident scores
    assert "refit out-of-fold with its tfidf settings" in printed
    model = load_ensemble_artifact(out)
    assert isinstance(model, CascadeModel) and model.text_experts == [WEAK, STRONG]
    assert model.metadata["text"]["how"] == "refit"

    out = tmp_path / "as-is.json"
    args = cascade_args(tables, out, "--max-helpers", "0", "--text-router", str(router))
    assert train_main([*args, "--text-scores", "artifact", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "its predictions as they are" in printed and "over-confident" in printed


def test_bad_inputs_give_clear_errors(
    tables: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "x.json")

    def fails(argv: list[str], message: str) -> None:
        assert train_main([*argv, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err, err

    # the tables the other way round
    swapped = cascade_args(tables, Path(out))
    swapped[0], swapped[4] = swapped[4], swapped[0]
    fails(swapped, "no prompt column")
    fails(
        [
            str(tables["table"]),
            "--kind",
            "learned-vote",
            "--answers",
            str(tables["table"]),
            "--out",
            out,
        ],
        "this looks like a correctness table",
    )
    # answers of other questions
    other = tmp_path / "other.parquet"
    pd.read_parquet(tables["answers"]).assign(id=lambda f: f["id"] + "x").to_parquet(other)
    argv = cascade_args(tables, Path(out))
    argv[argv.index("--answers") + 1] = str(other)
    fails(argv, "no id in common")
    # unknown models, missing costs, a text router that is not one
    argv = cascade_args(tables, Path(out))
    argv[argv.index("--weak") + 1] = "gpt-17"
    fails(argv, "--weak names ['gpt-17'], not model column(s) of the correctness table")
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({WEAK: 8.0}))
    fails(cascade_args(tables, Path(out), "--costs", str(costs)), f"no cost for ['{STRONG}']")
    fails(
        cascade_args(tables, Path(out), "--text-router", str(tmp_path)),
        "no config.json found",
    )
    fails(
        [
            str(tables["table"]),
            "--kind",
            "learned-vote",
            "--answers",
            str(tables["answers"]),
            "--members",
            WEAK,
            "--out",
            out,
        ],
        "at least two members",
    )
    assert not Path(out).exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--kind", "cascade", "--mode", "correctness"], "--mode apply to --kind router"),
        (["--kind", "cascade", "--weak", "m", "--strong", "n"], "needs --answers"),
        (["--kind", "learned-vote", "--answers", "a", "--weak", "m"], "--weak apply to --kind"),
        (["--kind", "cascade", "--answers", "a", "--weak", "m"], "needs --strong"),
        (["--answers", "a", "--mode", "correctness", "--backend", "tfidf"], "--answers apply"),
        (["--backend", "tfidf"], "the following arguments are required: --mode"),
    ],
)
def test_options_of_another_kind_are_refused(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        train_main(["table.parquet", "--out", "x", *extra])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
