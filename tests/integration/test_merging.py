"""``herd merge``: each method against a hand-computed small case.

Full checkpoints: two random tiny Llama models saved as model folders, merged by mergekit.
LoRA adapters: random PEFT adapters on the tiny model, merged by PEFT (SLERP by hand). The
expected tensors are computed here from the formulas, independently of either library.
"""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file

from langchain_herd.cli import main as herd
from langchain_herd.errors import ConfigError
from langchain_herd.merging import MergeRequest
from langchain_herd.server import ServerThread, create_app, load_backend
from langchain_herd.server.adapters import parse_adapter_specs
from tests.integration.test_lora_adapters import make_adapter

KEY = "model.layers.0.self_attn.q_proj.weight"


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from langchain_herd.server.tiny_model import build_tiny_parts

    root = tmp_path_factory.mktemp("models")
    folders = {}
    for name, seed in (("base", 0), ("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        model, tokenizer = build_tiny_parts()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_()
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        folders[name] = root / name
    return folders


def _slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    cos = float((v0 / v0.norm()).flatten() @ (v1 / v1.norm()).flatten())
    theta = math.acos(cos)
    return (math.sin((1 - t) * theta) * v0 + math.sin(t * theta) * v1) / math.sin(theta)


def _ties(base: torch.Tensor, experts: list[torch.Tensor], density: float) -> torch.Tensor:
    deltas = []
    for expert in experts:
        delta = expert - base
        k = int(density * delta.numel())
        keep = delta.abs().flatten().topk(k).indices
        trimmed = torch.zeros(delta.numel())
        trimmed[keep] = delta.flatten()[keep]
        deltas.append(trimmed.view_as(delta))
    stacked = torch.stack(deltas)
    sign = torch.sign(stacked.sum(0))
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    mean = (stacked * agree).sum(0) / agree.sum(0).clamp(min=1)
    return base + mean


@pytest.mark.parametrize(
    ("method", "args", "expected"),
    [
        ("linear", ["--weights", "0.25,0.75"], lambda w: 0.25 * w["a"] + 0.75 * w["b"]),
        (
            "task_arithmetic",
            ["--weights", "0.5,0.3"],
            lambda w: w["base"] + 0.5 * (w["a"] - w["base"]) + 0.3 * (w["b"] - w["base"]),
        ),
        ("slerp", ["--t", "0.3"], lambda w: _slerp(0.3, w["a"], w["b"])),
        ("ties", ["--density", "0.5"], lambda w: _ties(w["base"], [w["a"], w["b"]], 0.5)),
        # density 1 drops nothing: DARE is then task arithmetic.
        ("dare", ["--density", "1.0"], lambda w: w["a"] + w["b"] - w["base"]),
    ],
)
def test_checkpoint_merges_match_the_formulas(
    models: dict[str, Path], tmp_path: Path, method: str, args: list[str], expected: object
) -> None:
    out = tmp_path / method
    base = [] if method in ("linear", "slerp") else ["--base", str(models["base"])]
    assert (
        herd(["merge", method, str(models["a"]), str(models["b"]), "--out", str(out), *base, *args])
        == 0
    )
    merged = _weights(out)[KEY]
    weights = {name: _weights(folder)[KEY] for name, folder in models.items()}
    assert callable(expected)
    torch.testing.assert_close(merged, expected(weights), atol=1e-5, rtol=1e-4)
    assert (out / "herd-merge.yaml").is_file()
    load_backend(str(out)).generate_text("hello", max_new_tokens=2)  # herd serve loads it


def test_dare_drops_and_rescales(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "dare"
    args = ["merge", "dare", str(models["a"]), "--base", str(models["base"]), "--out", str(out)]
    assert herd([*args, "--density", "0.5", "--seed", "3"]) == 0
    base, expert = _weights(models["base"])[KEY], _weights(models["a"])[KEY]
    delta = _weights(out)[KEY] - base
    kept = delta.abs() > 1e-6
    # About half the task vector survives, every kept value scaled by one factor, which
    # mergekit chooses so that the task vector keeps its L1 norm (about 1 / density).
    task = expert - base
    assert 0.35 < kept.float().mean() < 0.65
    factor = float(delta[kept].abs().sum() / task[kept].abs().sum())
    torch.testing.assert_close(delta[kept], factor * task[kept], atol=1e-4, rtol=1e-4)
    assert math.isclose(float(delta.abs().sum()), float(task.abs().sum()), rel_tol=1e-3)
    assert 1.6 < factor < 2.5


def _delta(folder: Path) -> dict[str, torch.Tensor]:
    """Each module's ``B @ A x alpha / r`` from a saved adapter."""
    import json

    config = json.loads((folder / "adapter_config.json").read_text())
    tensors = load_file(folder / "adapter_model.safetensors")
    scale = config["lora_alpha"] / config["r"]
    deltas = {}
    for name, a in tensors.items():
        if "lora_A" in name:
            b = tensors[name.replace("lora_A", "lora_B")]
            deltas[name.replace(".lora_A.weight", "")] = b @ a * scale
    return deltas


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("merge-adapters")
    return {name: make_adapter(root / name, seed) for name, seed in (("a", 3), ("b", 4))}


def merge_adapters(adapters: dict[str, Path], method: str, out: Path, *args: str) -> None:
    """``herd merge METHOD a b --out OUT --base tiny ARGS``, which must succeed."""
    command = ["merge", method, str(adapters["a"]), str(adapters["b"]), "--out", str(out)]
    assert herd([*command, "--base", "tiny", *args]) == 0


def _low_rank(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]


@pytest.mark.parametrize(
    ("method", "args", "expected"),
    [
        ("linear", ["--weights", "0.25,0.75"], lambda a, b: 0.25 * a + 0.75 * b),
        ("task_arithmetic", ["--weights", "1,-0.5"], lambda a, b: a - 0.5 * b),
        ("slerp", ["--t", "0.3"], lambda a, b: _slerp(0.3, a, b)),
        # TIES on the deltas, then PEFT's SVD back to rank r_a + r_b = 8.
        (
            "ties",
            ["--density", "0.5"],
            lambda a, b: _low_rank(_ties(torch.zeros_like(a), [a, b], 0.5), 8),
        ),
        ("dare", ["--density", "1.0"], lambda a, b: _low_rank(a + b, 8)),
    ],
)
def test_adapter_merges_match_the_formulas(
    adapters: dict[str, Path], tmp_path: Path, method: str, args: list[str], expected: object
) -> None:
    out = tmp_path / method
    merge_adapters(adapters, method, out, *args)
    merged, a, b = _delta(out), _delta(adapters["a"]), _delta(adapters["b"])
    assert set(merged) == set(a)
    assert callable(expected)
    for module in a:
        torch.testing.assert_close(
            merged[module], expected(a[module], b[module]), atol=1e-4, rtol=1e-3
        )


def test_a_merged_adapter_is_served(adapters: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    merge_adapters(adapters, "linear", out)
    backend = load_backend("tiny")
    backend.load_adapters(parse_adapter_specs(f"merged={out},a={adapters['a']}"))
    server = ServerThread(create_app(backend)).start()
    try:
        reply = httpx.post(
            f"{server.url}/generate",
            json={"inputs": "hello", "parameters": {"adapter_id": "merged", "max_new_tokens": 3}},
        )
        assert reply.status_code == 200, reply.text
    finally:
        server.stop()


def test_bad_merge_requests_say_what_to_do(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="slerp merges exactly two experts"):
        MergeRequest("slerp", (models["a"],), tmp_path / "x")
    with pytest.raises(ConfigError, match="unknown merge method 'mean'"):
        MergeRequest("mean", (models["a"],), tmp_path / "x")
    with pytest.raises(ConfigError, match="--weights has 1 values for 2 experts"):
        MergeRequest("linear", (models["a"], models["b"]), tmp_path / "x", weights=(1.0,))
    args = ["merge", "ties", str(models["a"]), str(models["b"]), "--out", str(tmp_path / "t")]
    assert herd(args) == 2  # no --base: task vectors need one
