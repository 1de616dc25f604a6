"""``herd finetune-expert`` on the tiny model: training helps, early stopping stops, and the
folder it writes is served by a real server on loopback.

The questions use the tiny model's own words, so nothing is an unknown token: "which of these
is a number?" with one number word among three others. Held-back questions are new word
combinations, so a lower loss on them is learning, not memory.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import InferenceClient

from langchain_herd.choice_questions import ChoiceQuestion
from langchain_herd.choice_scoring import score_questions
from langchain_herd.cli import main
from langchain_herd.errors import ConfigError
from langchain_herd.expert_training import (
    RUN_FILE,
    FinetuneResult,
    FinetuneSettings,
    finetune_expert,
)
from langchain_herd.expert_training.trainer import LLAMA_TARGET_MODULES
from langchain_herd.server import ServerThread, create_app, load_backend
from langchain_herd.server.adapters import AdapterSpec, attach_adapters, parse_adapter_specs

NUMBERS = ("one", "two", "three", "four", "five", "six", "ten", "hundred", "thousand")
OTHERS = ("dog", "tree", "car", "house", "river", "book", "fish", "horse", "moon", "ship")
# The tiny model's output layer is random and 32-wide: adapting it too (``lm_head``) is what
# lets a rank-4 adapter put the number words on top within a few steps.
FAST = FinetuneSettings(
    rank=4,
    alpha=8,
    learning_rate=1e-2,
    batch_size=8,
    max_steps=20,
    eval_every=5,
    patience=3,
    target_modules=(*LLAMA_TARGET_MODULES, "lm_head"),
)


def number_questions(count: int, seed: int, prefix: str) -> list[ChoiceQuestion]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        choices = [rng.choice(NUMBERS), *rng.sample(OTHERS, 3)]
        rng.shuffle(choices)
        answer = next(j for j, c in enumerate(choices) if c in NUMBERS)
        out.append(
            ChoiceQuestion(
                id=f"{prefix}{i}",
                group="stem",
                question=f"which of these is a number : {', '.join(choices)} ?",
                choices=tuple(choices),
                answer=answer,
            )
        )
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[FinetuneResult, Path]:
    out = tmp_path_factory.mktemp("expert") / "stem"
    result = finetune_expert("tiny", number_questions(120, 0, "t"), out, FAST, progress=False)
    return result, out


def test_training_raises_the_gold_likelihood_of_unseen_questions(
    trained: tuple[FinetuneResult, Path],
) -> None:
    result, out = trained
    assert result.base_val_loss is not None and result.best_val_loss is not None
    assert result.best_val_loss < 0.5 * result.base_val_loss
    assert result.val_history[0] == (0, result.base_val_loss)
    assert min(loss for _, loss in result.val_history) == result.best_val_loss
    # Questions never seen in training or validation, scored the way the herd scores.
    unseen = number_questions(40, 99, "u")
    backend = load_backend("tiny")
    base = score_questions(backend.model, backend.tokenizer, unseen)
    model = attach_adapters(load_backend("tiny").model, [AdapterSpec("stem", str(out))])
    tuned = score_questions(model, backend.tokenizer, unseen)
    assert tuned.mean_gold_loglik > base.mean_gold_loglik + 1.0
    assert tuned.accuracy >= base.accuracy


def test_the_folder_holds_the_adapter_and_the_run(trained: tuple[FinetuneResult, Path]) -> None:
    result, out = trained
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny"  # what herd serve --model takes
    assert set(config["target_modules"]) == {*LLAMA_TARGET_MODULES, "lm_head"}
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "adapter_model.bin").exists()
    run = json.loads((out / RUN_FILE).read_text())
    assert run["base"] == "tiny" and run["device"] == "cpu"
    assert run["questions"]["train"] + run["questions"]["validation"] == 120
    assert run["best_step"] == result.best_step
    assert [p["step"] for p in run["val_loss"]] == [s for s, _ in result.val_history]
    assert run["settings"]["learning_rate"] == FAST.learning_rate


def test_a_rising_validation_loss_stops_training_and_keeps_the_best_weights(
    tmp_path: Path,
) -> None:
    # A learning rate this large wrecks the model on the first step: validation can only
    # get worse, so with patience 1 training stops at the first validation after step 0.
    settings = FinetuneSettings(learning_rate=5.0, max_steps=30, eval_every=2, patience=1)
    result = finetune_expert(
        "tiny", number_questions(60, 1, "q"), tmp_path / "x", settings, progress=False
    )
    assert result.early_stopped and result.steps == 2
    assert [s for s, _ in result.val_history] == [0, 2]
    assert result.val_history[1][1] > result.val_history[0][1]
    assert result.best_step == 0 and result.best_val_loss == result.base_val_loss
    run = json.loads((tmp_path / "x" / RUN_FILE).read_text())
    assert run["early_stopped"] is True and run["planned_steps"] == 30
    # Left unset, the targets are the Llama attention and MLP projections the model has.
    assert run["settings"]["target_modules"] == list(LLAMA_TARGET_MODULES)
    # Step 0's weights (an adapter that changes nothing) are what was saved.
    unseen = number_questions(10, 5, "u")
    backend = load_backend("tiny")
    base = score_questions(backend.model, backend.tokenizer, unseen)
    model = attach_adapters(load_backend("tiny").model, [AdapterSpec("x", str(tmp_path / "x"))])
    saved = score_questions(model, backend.tokenizer, unseen)
    assert saved.mean_gold_loglik == pytest.approx(base.mean_gold_loglik, abs=1e-4)


def test_the_same_seed_trains_the_same_adapter(tmp_path: Path) -> None:
    settings = FinetuneSettings(max_steps=4, eval_every=2, batch_size=4)
    questions = number_questions(30, 2, "q")
    first = finetune_expert("tiny", questions, tmp_path / "a", settings, progress=False)
    second = finetune_expert("tiny", questions, tmp_path / "b", settings, progress=False)
    assert first.train_history == second.train_history
    assert first.val_history == second.val_history
    weights = "adapter_model.safetensors"
    assert (tmp_path / "a" / weights).read_bytes() == (tmp_path / "b" / weights).read_bytes()


@pytest.fixture(scope="module")
def served(trained: tuple[FinetuneResult, Path]) -> Iterator[str]:
    backend = load_backend("tiny")
    backend.load_adapters(parse_adapter_specs(f"x={trained[1]}"))
    server = ServerThread(create_app(backend)).start()
    yield server.url
    server.stop()


def test_a_server_answers_with_the_trained_adapter(served: str) -> None:
    client = InferenceClient(model=served)
    prompt = "Question: which of these is a number : dog, tree, five, car ?\nAnswer:"
    tuned = client.text_generation(prompt, max_new_tokens=1, do_sample=False, adapter_id="x")
    base = client.text_generation(prompt, max_new_tokens=1, do_sample=False)
    # The tiny server echoes the prompt (return_full_text); the new word is the last one.
    assert tuned.split()[-1] in NUMBERS, tuned
    assert tuned != base


def write_questions(path: Path, questions: list[ChoiceQuestion]) -> Path:
    rows = [
        {"id": q.id, "group": q.group, "question": q.question, "choices": list(q.choices),
         "answer": q.answer}
        for q in questions
    ]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_cli_trains_refuses_to_clobber_and_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_questions(tmp_path / "q.jsonl", number_questions(40, 3, "c"))
    out = tmp_path / "cli"
    args = ["finetune-expert", "tiny", str(data), "--out", str(out), "--max-steps", "4",
            "--eval-every", "2", "--rank", "2", "--batch-size", "4", "--quiet"]  # fmt: skip
    assert main(args) == 0
    summary = capsys.readouterr().out
    assert summary.startswith("herd finetune-expert: ") and "4 steps" in summary
    run = json.loads((out / RUN_FILE).read_text())
    assert run["data"] == str(data) and run["settings"]["rank"] == 2
    assert main(args) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    assert main([*args[:3], "--out", str(stranger), "--overwrite", "--quiet"]) == 2
    assert "not an earlier herd finetune-expert output" in capsys.readouterr().err
    assert (stranger / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("data", "extra", "message"),
    [
        ("skills:astrology", [], "unknown group"),
        ("nowhere.jsonl", [], "no such question file"),
        ("skills:stem", ["--validation-share", "1.5"], "validation_share must be in"),
        ("skills:stem", ["--device", "tpu"], "device must be"),
    ],
)
def test_cli_refuses_bad_input_with_a_clear_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    data: str,
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "never"
    assert main(["finetune-expert", "tiny", data, "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_settings_are_checked_when_made() -> None:
    with pytest.raises(ConfigError, match="patience must be at least 1"):
        FinetuneSettings(patience=0)
    with pytest.raises(ConfigError, match="target_modules is empty"):
        FinetuneSettings(target_modules=())
