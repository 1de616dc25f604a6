"""``label_dataset`` end to end: real tiny-model servers on loopback, real files, faults
injected through the servers' own fault endpoint. Judges are fakes (the judge's model is
not what these tests are about; how its verdicts are used is)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableLambda

from langchain_herd.config import HerdConfig, parse_config
from langchain_herd.errors import ConfigError
from langchain_herd.labeling import (
    OutputDirError,
    ResumeMismatchError,
    build_table,
    build_tables,
    label_dataset,
)
from langchain_herd.labeling.cli import label_main
from langchain_herd.labeling.store import read_raw
from langchain_herd.mmlu import BUNDLED_MMLU_PATH
from langchain_herd.server import ServerThread, create_app, load_backend
from tests.integration.word_choices import write_word_choices

N_QUESTIONS = 6


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    backend = load_backend("tiny")
    alpha = ServerThread(create_app(backend, model_id="tiny-alpha")).start()
    beta = ServerThread(create_app(backend, model_id="tiny-beta")).start()
    yield {"alpha": alpha.url, "beta": beta.url}
    alpha.stop()
    beta.stop()


@pytest.fixture(autouse=True)
def clear_faults(servers: dict[str, str]) -> Iterator[None]:
    yield
    for url in servers.values():
        httpx.delete(f"{url}/_herd/faults")


@pytest.fixture(scope="module")
def mmlu_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "mmlu.parquet"
    pd.read_parquet(BUNDLED_MMLU_PATH).head(N_QUESTIONS).to_parquet(path)
    return path


def herd(servers: dict[str, str], *, beta_tokens: int = 6) -> HerdConfig:
    return parse_config(
        {
            "name": "label-herd",
            "experts": [
                {
                    "name": "alpha",
                    "url": servers["alpha"],
                    "protocol": "tgi",
                    "generation": {"max_new_tokens": 3},
                    "system_prompt": "You answer with a letter.",
                },
                {
                    "name": "beta",
                    "url": servers["beta"],
                    "protocol": "openai",
                    "generation": {"max_new_tokens": beta_tokens},
                    "timeout_s": 30,
                },
            ],
        }
    )


def raw(out: Path) -> list[dict[str, Any]]:
    return read_raw(out / "raw.jsonl")


async def test_mmlu_run_writes_the_correctness_table(
    servers: dict[str, str], mmlu_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = await label_dataset(herd(servers), mmlu_file, out, progress=False)
    table = pd.read_parquet(out / "correctness.parquet")
    assert list(table.columns) == [
        "id", "dataset", "split", "subject", "group", "prompt", "answer", "alpha", "beta",
    ]  # fmt: skip
    assert {str(table[c].dtype) for c in ("alpha", "beta")} == {"Int8"}
    assert table[["alpha", "beta"]].notna().all().all()
    assert set(table["alpha"].dropna().unique()) <= {0, 1}
    source = pd.read_parquet(mmlu_file)
    assert table["id"].tolist() == source["id"].tolist()
    assert table["answer"].tolist() == source["answer"].tolist()
    assert table["dataset"].unique().tolist() == ["mmlu"]
    assert table["prompt"][0].endswith("Answer with the letter only (A, B, C or D).")
    pd.testing.assert_frame_equal(result.table, table)
    assert result.calls == 2 * N_QUESTIONS and result.failed == 0 and result.reused == 0

    answers = [r for r in raw(out) if r["type"] == "answer"]
    assert len(answers) == 2 * N_QUESTIONS
    by_key = {(r["id"], r["expert"]): r for r in answers}
    for row in table.itertuples():
        for expert in ("alpha", "beta"):
            record = by_key[(row.id, expert)]
            assert record["prompt"] == row.prompt and record["answer"]
            assert record["error"] is None and record["latency_ms"] > 0
            assert record["correct"] == getattr(row, expert)  # the cell is the raw line's
    for expert in ("alpha", "beta"):  # both protocols report usage (TGI: its `details`)
        usage = by_key[(table["id"][0], expert)]["usage"]
        assert usage["output_tokens"] > 0 and usage["input_tokens"] > 0

    info = json.loads((out / "run.json").read_text())
    assert [e["name"] for e in info["experts"]] == ["alpha", "beta"]
    assert info["experts"][0]["url"] == servers["alpha"]
    assert info["dataset"]["queries"] == N_QUESTIONS and info["judge"] is None
    assert not (out / "judge_report.json").exists()

    # the answers table: the same rows, the letter each expert chose (null: none readable)
    answers_table = pd.read_parquet(out / "answers.parquet")
    assert list(answers_table.columns) == list(table.columns)
    row_columns = ["id", "dataset", "split", "subject", "group", "prompt", "answer"]
    pd.testing.assert_frame_equal(answers_table[row_columns], table[row_columns])
    assert result.answers is not None and result.answers_path == out / "answers.parquet"
    pd.testing.assert_frame_equal(result.answers, answers_table)
    for row in answers_table.itertuples():
        for expert in ("alpha", "beta"):
            extracted = by_key[(row.id, expert)]["extracted"]
            cell = getattr(row, expert)
            assert (None if pd.isna(cell) else cell) == extracted
            # consistent with the correctness table: right exactly when it chose the gold
            correct = int(table.set_index("id").loc[row.id, expert])
            assert correct == int(extracted == row.answer)
    assert {str(answers_table[c].dtype) for c in ("alpha", "beta")} <= {"object", "str"}

    # the tables rebuilt from the folder alone are the same
    pd.testing.assert_frame_equal(build_table(out), table)
    rebuilt = build_tables(out)
    pd.testing.assert_frame_equal(rebuilt.answers, answers_table)
    pd.testing.assert_frame_equal(rebuilt.correctness, table)


async def test_answers_table_holds_the_letters_chosen(
    servers: dict[str, str], tmp_path: Path
) -> None:
    data = write_word_choices(tmp_path / "words.parquet", 8)
    out = tmp_path / "run"
    result = await label_dataset(herd(servers), data, out, progress=False)
    answers = pd.read_parquet(out / "answers.parquet")
    assert list(answers.columns) == [
        "id",
        "dataset",
        "subject",
        "prompt",
        "answer",
        "alpha",
        "beta",
    ]
    records = {(r["id"], r["expert"]): r for r in raw(out) if r["type"] == "answer"}
    letters = answers.melt(id_vars=["id", "answer"], value_vars=["alpha", "beta"])
    assert letters["value"].notna().any() and letters["value"].isna().any()
    assert set(letters["value"].dropna()) <= set("ABCD")
    for row in letters.itertuples():
        record = records[(row.id, row.variable)]
        assert (None if pd.isna(row.value) else row.value) == record["extracted"]
        correct = result.table.set_index("id").loc[row.id, row.variable]
        assert correct == int(row.value == row.answer)  # null letters count as wrong
    assert result.table[["alpha", "beta"]].to_numpy().sum() > 0


async def test_a_failing_expert_gives_null_cells_and_resume_fills_them(
    servers: dict[str, str], mmlu_file: Path, tmp_path: Path
) -> None:
    httpx.post(
        f"{servers['beta']}/_herd/faults", json={"fail_next": 2, "fail_status": 503}
    ).raise_for_status()
    out = tmp_path / "run"
    result = await label_dataset(herd(servers), mmlu_file, out, progress=False)
    assert result.failed == 2
    assert result.table["alpha"].notna().all()
    assert result.table["beta"].isna().sum() == 2
    failed = [r for r in raw(out) if r["type"] == "answer" and r["error"]]
    assert len(failed) == 2
    assert {r["expert"] for r in failed} == {"beta"}
    assert all(r["error_kind"] == "server_error" and "503" in r["error"] for r in failed)
    assert all(r["answer"] is None and r["correct"] is None for r in failed)
    null_ids = set(result.table.loc[result.table["beta"].isna(), "id"])
    assert null_ids == {r["id"] for r in failed}
    assert result.answers is not None
    assert result.answers.set_index("id").loc[sorted(null_ids), "beta"].isna().all()

    # without --resume the folder is refused; with it, only the failed pairs are asked again
    with pytest.raises(OutputDirError, match="--resume"):
        await label_dataset(herd(servers), mmlu_file, out, progress=False)
    again = await label_dataset(herd(servers), mmlu_file, out, resume=True, progress=False)
    assert again.resumed and again.calls == 2 and again.failed == 0
    assert again.reused == 2 * N_QUESTIONS - 2
    assert again.table[["alpha", "beta"]].notna().all().all()
    assert len([r for r in raw(out) if r["type"] == "answer"]) == 2 * N_QUESTIONS + 2


async def test_resume_refuses_a_changed_herd(
    servers: dict[str, str], mmlu_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    await label_dataset(herd(servers), mmlu_file, out, progress=False, limit=2)
    with pytest.raises(ResumeMismatchError, match="expert 'beta': generation was"):
        await label_dataset(herd(servers, beta_tokens=9), mmlu_file, out, resume=True)
    # raising the limit on resume labels more of the same dataset
    more = await label_dataset(herd(servers), mmlu_file, out, resume=True, limit=4, progress=False)
    assert len(more.table) == 4 and more.reused == 4 and more.calls == 4


async def test_unreachable_expert_is_recorded_per_cell(
    servers: dict[str, str], mmlu_file: Path, tmp_path: Path
) -> None:
    config = parse_config(
        {
            "experts": [
                {"name": "alpha", "url": servers["alpha"], "generation": {"max_new_tokens": 2}},
                {"name": "gone", "url": "http://127.0.0.1:9", "generation": {"max_new_tokens": 2}},
            ]
        }
    )
    result = await label_dataset(config, mmlu_file, tmp_path / "run", limit=3, progress=False)
    assert result.table["gone"].isna().all() and result.table["alpha"].notna().all()
    kinds = {r["error_kind"] for r in raw(tmp_path / "run") if r["expert"] == "gone"}
    assert kinds == {"connection"}


async def test_judge_report_on_multiple_choice(
    servers: dict[str, str], mmlu_file: Path, tmp_path: Path
) -> None:
    # The tiny model never answers with the right letter, so exact match says 0 throughout;
    # this judge says "correct" to every other answer and is unreadable once.
    judge = FakeListChatModel(
        responses=[
            '{"correct": true, "score": 1, "rationale": "fine"}',
            '```json\n{"correct": false, "score": 0, "rationale": "wrong option"}\n```',
        ]
    )
    out = tmp_path / "run"
    result = await label_dataset(
        herd(servers),
        mmlu_file,
        out,
        judge=judge,
        judge_id="fake-judge",
        progress=False,
        concurrency_per_expert=1,
    )
    report = json.loads((out / "judge_report.json").read_text())
    assert report == result.judge_report
    assert report["judge"] == "fake-judge"
    overall = report["overall"]
    exact = [r["correct"] for r in raw(out) if r["type"] == "answer"]
    judged = [r for r in raw(out) if r["type"] == "judge"]
    assert len(judged) == 2 * N_QUESTIONS and {r["purpose"] for r in judged} == {"mc_agreement"}
    said_correct = sum(r["verdict"]["correct"] for r in judged)
    assert overall["n"] == 2 * N_QUESTIONS
    assert overall["judge_only"] + overall["both_correct"] == said_correct
    assert overall["both_correct"] + overall["exact_only"] == sum(exact)
    assert set(report["per_expert"]) == {"alpha", "beta"}
    # the table still holds exact match, not the judge
    exact_by_id = {
        r["id"]: r["correct"] for r in raw(out) if r["type"] == "answer" if r["expert"] == "alpha"
    }
    assert result.table["alpha"].tolist() == [exact_by_id[i] for i in result.table["id"]]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


async def test_open_ended_with_reference_judged_and_unparseable_left_null(
    servers: dict[str, str], tmp_path: Path
) -> None:
    data = write_jsonl(
        tmp_path / "open.jsonl",
        [
            {"id": "q1", "prompt": "Explain tides.", "reference": "The moon's gravity."},
            {"id": "q2", "prompt": "Name a warm color.", "reference": "Red."},
        ],
    )

    def judge_fn(messages: list[BaseMessage]) -> AIMessage:
        text = messages[-1].text
        if "Name a warm color." in text and "Candidate answer" in text:
            return AIMessage(content="I cannot decide, sorry.")  # never a verdict
        if "could not read a verdict" in text:
            return AIMessage(content="Still cannot decide.")
        return AIMessage(content='Verdict: {"correct": true, "score": 0.8, "rationale": "ok"}')

    out = tmp_path / "run"
    result = await label_dataset(
        herd(servers), data, out, judge=RunnableLambda(judge_fn), judge_retries=1, progress=False
    )
    table = result.table
    assert table["answer"].tolist() == ["The moon's gravity.", "Red."]
    assert table.set_index("id").loc["q1", ["alpha", "beta"]].tolist() == [1, 1]
    assert table.set_index("id").loc["q2", ["alpha", "beta"]].isna().all()
    verdicts = [r for r in raw(out) if r["type"] == "judge"]
    unreadable = [r for r in verdicts if r["id"] == "q2"]
    assert len(unreadable) == 2 and all(r["status"] == "unparseable" for r in unreadable)
    assert all(r["error"].startswith("judge_unparseable") for r in unreadable)
    assert all(len(r["replies"]) == 2 for r in unreadable)  # asked, then retried once
    assert result.judge_unparseable == 2 and result.judge_questions == 4
    assert result.judge_report is None  # no gold letters: nothing to check the judge on
    # open-ended: the answers table holds each expert's reply text
    replies = {(r["id"], r["expert"]): r["answer"] for r in raw(out) if r["type"] == "answer"}
    assert result.answers is not None
    for row in result.answers.itertuples():
        assert (row.alpha, row.beta) == (replies[(row.id, "alpha")], replies[(row.id, "beta")])
        assert row.answer == table.set_index("id").loc[row.id, "answer"]


def _answers_in(messages: list[BaseMessage]) -> tuple[str, str]:
    text = messages[-1].text
    first = re.search(r"\[Answer 1\]\n(.*?)\n\[End of answer 1\]", text, re.DOTALL)
    second = re.search(r"\[Answer 2\]\n(.*?)\n\[End of answer 2\]", text, re.DOTALL)
    assert first and second
    return first.group(1), second.group(1)


async def test_pairwise_without_reference(servers: dict[str, str], tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "open.jsonl",
        [{"id": "h1", "prompt": "Write a haiku."}, {"id": "h2", "prompt": "Tell a story."}],
    )

    # beta writes 6 tokens, alpha 3: a judge preferring the longer answer, whatever its
    # position, makes beta win both orders.
    def prefers_longer(messages: list[BaseMessage]) -> AIMessage:
        first, second = _answers_in(messages)
        winner = "1" if len(first) > len(second) else "2"
        return AIMessage(content=f'{{"winner": "{winner}", "rationale": "more detail"}}')

    out = tmp_path / "consistent"
    result = await label_dataset(
        herd(servers), data, out, judge=RunnableLambda(prefers_longer), progress=False
    )
    assert result.table["alpha"].tolist() == [0, 0]
    assert result.table["beta"].tolist() == [1, 1]
    pairs = [r for r in raw(out) if r["type"] == "pairwise"]
    assert len(pairs) == 2 and all(r["outcome"] == "beta" for r in pairs)
    assert all(
        r["a_first"]["verdict"]["winner"] == "second"
        and r["b_first"]["verdict"]["winner"] == "first"
        for r in pairs
    )
    assert result.judge_questions == 4

    # a judge that always says "position 1" decides nothing: ties, so both count as correct
    biased = FakeListChatModel(responses=['{"winner": "1", "rationale": "first"}'])
    out = tmp_path / "biased"
    result = await label_dataset(herd(servers), data, out, judge=biased, progress=False)
    assert result.table[["alpha", "beta"]].to_numpy().tolist() == [[1, 1], [1, 1]]
    assert {r["outcome"] for r in raw(out) if r["type"] == "pairwise"} == {"tie"}

    # without a judge open-ended cells stay null, but the answers are recorded
    out = tmp_path / "nojudge"
    result = await label_dataset(herd(servers), data, out, progress=False)
    assert result.table[["alpha", "beta"]].isna().all().all()
    assert len([r for r in raw(out) if r["type"] == "answer" and r["answer"]]) == 4


async def test_correctness_table_input(servers: dict[str, str], tmp_path: Path) -> None:
    rows = pd.read_parquet(BUNDLED_MMLU_PATH).head(3)
    table_in = pd.DataFrame(
        {
            "id": [f"t{i}" for i in range(3)],
            "dataset": "mmlu",
            "subject": rows["subject"].tolist(),
            "prompt": [
                f"{r.question}\nA. {r.A}\nB. {r.B}\nC. {r.C}\nD. {r.D}" for r in rows.itertuples()
            ],
            "answer": rows["answer"].tolist(),
            "some-model": pd.array([1, 0, None], dtype="Int8"),
        }
    )
    table_in.to_parquet(tmp_path / "table.parquet")
    result = await label_dataset(
        herd(servers), tmp_path / "table.parquet", tmp_path / "run", progress=False
    )
    assert list(result.table.columns) == [
        "id", "dataset", "subject", "prompt", "answer", "alpha", "beta",
    ]  # fmt: skip
    assert result.table["answer"].tolist() == rows["answer"].tolist()


async def test_expert_named_like_a_table_column_is_refused(
    servers: dict[str, str], mmlu_file: Path, tmp_path: Path
) -> None:
    config = parse_config({"experts": [{"name": "answer", "url": servers["alpha"]}]})
    with pytest.raises(ConfigError, match="clash with the correctness table"):
        await label_dataset(config, mmlu_file, tmp_path / "run")


def test_cli_refuses_a_used_folder_and_unknown_judge(
    servers: dict[str, str], mmlu_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "herd.yaml"
    config.write_text(
        json.dumps(
            {
                "experts": [
                    {"name": "alpha", "url": servers["alpha"], "generation": {"max_new_tokens": 2}}
                ]
            }
        )
    )
    out = tmp_path / "run"
    assert (
        label_main([str(config), str(mmlu_file), "--out", str(out), "--limit", "2", "--quiet"]) == 0
    )
    printed = capsys.readouterr().out
    assert "labeled 2 questions x 1 experts" in printed and "alpha" in printed
    assert label_main([str(config), str(mmlu_file), "--out", str(out), "--quiet"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    code = label_main(
        [str(config), str(mmlu_file), "--out", str(tmp_path / "b"), "--judge", "nobody"]
    )
    assert code == 2
    assert "no expert named 'nobody'" in capsys.readouterr().err
