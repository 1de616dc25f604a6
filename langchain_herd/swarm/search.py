"""Model Swarms (arXiv 2410.11163): a particle swarm search over a herd's LoRA adapters.

Each particle is one set of LoRA weights. The swarm starts from the herd's adapters; when
``swarm_size`` is larger, the rest are seeded random convex combinations ``t a + (1 - t) b`` of
two distinct experts (each LoRA matrix interpolated, as the paper does for adapters). A
particle's starting velocity is ``x_j - x_i`` for a random other particle ``j`` (the paper's
choice: it spreads the first step over the swarm instead of stalling at zero). Each step
moves every particle by :func:`~langchain_herd.swarm.update.step_particle`, decays the step
size, scores every particle on the utility questions, and updates the personal bests, the
global best and the global worst (the worst position scored so far). The search stops after
``patience`` steps without a better global best, or after ``max_steps``.

The base model is loaded once and wrapped with PEFT once, with one adapter slot; a particle is
scored by copying its tensors into that slot, so a step costs the forward passes and nothing
else. The state is saved after every step (:mod:`~langchain_herd.swarm.state`); a rerun with
the same ``out`` resumes, and gives the same result as a run never stopped.

Example:
    >>> from langchain_herd.choice_questions import load_questions  # doctest: +SKIP
    >>> questions = load_questions("skills", "dev", per_group=60)  # doctest: +SKIP
    >>> settings = SwarmSettings(swarm_size=8)
    >>> result = run_swarm("herd.yaml", questions, "out", settings)  # doctest: +SKIP
    >>> result.best_folder, result.best_accuracy  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from langchain_herd.atomic_files import write_atomically
from langchain_herd.choice_questions import ChoiceQuestion
from langchain_herd.config import BUNDLED_PREFIX, parse_config
from langchain_herd.errors import ConfigError
from langchain_herd.lora_herd import HerdAdapters, read_herd
from langchain_herd.server.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from langchain_herd.swarm.state import SwarmState, load_state, save_state
from langchain_herd.swarm.update import SwarmWeights, step_particle

if TYPE_CHECKING:
    import torch

__all__ = ["MIN_QUESTIONS", "SwarmResult", "SwarmSettings", "run_swarm"]

#: Fewer development questions than this make the utility too noisy to rank particles by.
MIN_QUESTIONS = 200
#: The PEFT adapter slot every particle is copied into for scoring.
SLOT = "swarm_particle"
#: Adapter settings that change what the same tensors mean: particles must agree on them.
_LORA_SETTINGS = (
    "peft_type",
    "r",
    "lora_alpha",
    "use_rslora",
    "use_dora",
    "fan_in_fan_out",
    "rank_pattern",
    "alpha_pattern",
    "modules_to_save",
)
# Settings that change the run's numbers: a resume must use the same ones.
_RUN_FIELDS = (
    "metric",
    "max_steps",
    "patience",
    "step_size",
    "step_decay",
    "seed",
    "swarm_size",
    "inertia",
    "personal",
    "social",
    "repel",
)

Metric = Literal["loglik", "accuracy"]
Tensors = dict[str, "torch.Tensor"]


class SwarmSettings(BaseModel):
    """How the swarm searches. Defaults sit inside the paper's search ranges.

    Example:
        >>> SwarmSettings(swarm_size=8, max_steps=10).metric
        'loglik'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    swarm_size: int | None = Field(default=None, ge=2)
    """Particles; beyond the adapters, random mixes of two. Default: twice the adapters."""
    max_steps: int = Field(default=20, ge=0)
    """Stop after this many steps at the latest."""
    patience: int = Field(default=5, ge=1)
    """Stop after this many steps without a better global best."""
    metric: Metric = "loglik"
    """The utility: mean gold log-likelihood (smooth, the default) or accuracy."""
    step_size: float = Field(default=0.5, gt=0)
    """lambda, the starting step size."""
    step_decay: float = Field(default=0.95, gt=0, le=1)
    """phi_lambda: the step size is multiplied by it after every step."""
    inertia: float = Field(default=0.4, ge=0)
    """phi_v: weight of the particle's own velocity."""
    personal: float = Field(default=0.3, ge=0)
    """phi_p: weight of the pull towards the personal best."""
    social: float = Field(default=0.5, ge=0)
    """phi_g: weight of the pull towards the global best."""
    repel: float = Field(default=0.1, ge=0)
    """phi_w: weight of the push away from the global worst."""
    seed: int = 0
    """Seeds every random draw (starting mixes and velocities, the update's factors)."""
    batch_size: int = Field(default=32, ge=1)
    """Sequences per forward pass when scoring."""
    device: str | None = None
    """``cuda``, ``cpu``, ...; default cuda when available."""
    allow_small: bool = False
    """Accept fewer than 200 utility questions (quick tests only)."""

    @property
    def weights(self) -> SwarmWeights:
        """The update's four weights."""
        return SwarmWeights(self.inertia, self.personal, self.social, self.repel)


@dataclass(frozen=True)
class SwarmResult:
    """What :func:`run_swarm` found.

    Attributes:
        best_folder: the best particle as a PEFT adapter folder.
        config_file: a herd config that serves it next to the herd's adapters.
        report_file: ``swarm.json``: settings, every step, start and best utilities.
        best_accuracy: the best particle's accuracy on the utility questions.
        best_loglik: its mean gold log-likelihood.
        start: each expert's ``{"accuracy", "loglik"}`` before the search.
        steps: steps run.
        stopped: ``patience`` or ``max_steps``.
        resumed: whether this call continued a saved state.
    """

    best_folder: Path
    config_file: Path
    report_file: Path
    best_accuracy: float
    best_loglik: float
    start: dict[str, dict[str, float]]
    steps: int
    stopped: str
    resumed: bool


def run_swarm(
    config_or_herd: str | Path | HerdAdapters,
    questions: Sequence[ChoiceQuestion],
    out: str | Path,
    settings: SwarmSettings | None = None,
    *,
    server: str | None = None,
    progress: bool | Callable[[str], None] = True,
) -> SwarmResult:
    """Search the herd's adapters for a better one; resume from ``out`` when it holds a run.

    Args:
        config_or_herd: a herd config (its local server with ``lora_adapters``) or its adapters.
        questions: the utility's questions (development split; never the test split).
        out: the output folder (``best/``, ``swarm.json``, ``herd-swarm.yaml``, ``state/``).
        settings: the search's settings.
        server: the local server whose adapters to search, if the config has several.
        progress: print a line per step to stderr (True), call this with each line, or not.

    Raises:
        ConfigError: fewer than two adapters, adapters of different shapes or LoRA settings,
            too few questions, or an ``out`` that holds a run of other settings.
    """
    settings = settings or SwarmSettings()
    say = _reporter(progress)
    if isinstance(config_or_herd, HerdAdapters):
        herd = config_or_herd
    else:
        herd = read_herd(config_or_herd, server)
    folder = Path(out)
    _check_questions(questions, settings)
    names = list(herd.adapters)
    experts = _read_adapters(herd.adapters)
    size = settings.swarm_size or 2 * len(names)
    if size < len(names):
        raise ConfigError(
            f"--swarm-size {size} is smaller than the herd's {len(names)} adapters; give at "
            f"least {len(names)} (every adapter starts as a particle)"
        )
    identity = _identity(herd, questions, settings, size)
    state = load_state(folder)
    resumed = state is not None
    evaluator: _Evaluator | None = None
    if state is not None:
        _check_same_run(folder, state.scalars["identity"], identity)
        if state.finished:
            say(f"herd swarm: {folder} holds a finished run (step {state.step}); reporting it")
        else:
            say(f"herd swarm: resuming {folder} after step {state.step}")
    else:
        evaluator = _Evaluator(herd.base, herd.adapters[names[0]], questions, settings, experts)
        state = _start(experts, names, size, settings, identity, evaluator, say)
        save_state(folder, state)
        _write_report(folder, herd, settings, state)
    rng = _generator(state.rng)
    while not state.finished:
        if evaluator is None:
            evaluator = _Evaluator(herd.base, herd.adapters[names[0]], questions, settings, experts)
        _step(state, rng, settings, evaluator, say)
        save_state(folder, state)
        _write_report(folder, herd, settings, state)
    return _finish(folder, herd, settings, state, questions, resumed)


# --- setting up -----------------------------------------------------------------------------


def _reporter(progress: bool | Callable[[str], None]) -> Callable[[str], None]:
    if callable(progress):
        return progress
    if progress:
        return lambda line: print(line, file=sys.stderr, flush=True)
    return lambda line: None


def _check_questions(questions: Sequence[ChoiceQuestion], settings: SwarmSettings) -> None:
    if not questions:
        raise ConfigError("the utility has no questions; check --utility and --per-group")
    if len(questions) < MIN_QUESTIONS and not settings.allow_small:
        raise ConfigError(
            f"the utility has {len(questions)} questions; the swarm needs at least "
            f"{MIN_QUESTIONS} development questions to rank particles reliably (raise "
            "--per-group, or pass --allow-small for a quick test)"
        )


def _read_adapters(folders: dict[str, Path]) -> dict[str, Tensors]:
    """Each adapter's tensors (float32, CPU), after checking they can share one slot."""
    import torch
    from safetensors.torch import load_file

    if len(folders) < 2:
        raise ConfigError(
            f"the swarm needs at least two adapters to search between; the herd has "
            f"{len(folders)} ({', '.join(folders) or 'none'})"
        )
    configs: dict[str, dict[str, Any]] = {}
    tensors: dict[str, Tensors] = {}
    for name, folder in folders.items():
        if not (folder / ADAPTER_CONFIG).is_file() or not (folder / ADAPTER_WEIGHTS).is_file():
            raise ConfigError(
                f"adapter {name!r} ({folder}) needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} "
                "(a PEFT LoRA folder saved with safetensors)"
            )
        configs[name] = json.loads((folder / ADAPTER_CONFIG).read_text("utf-8"))
        tensors[name] = {
            k: v.to(torch.float32) for k, v in load_file(folder / ADAPTER_WEIGHTS).items()
        }
    first = next(iter(folders))
    for name in folders:
        differing = [
            key for key in _LORA_SETTINGS if configs[name].get(key) != configs[first].get(key)
        ]
        targets = sorted(configs[name].get("target_modules") or [])
        if targets != sorted(configs[first].get("target_modules") or []):
            differing.append("target_modules")
        if differing:
            detail = ", ".join(
                f"{key} {configs[first].get(key)!r} vs {configs[name].get(key)!r}"
                for key in differing
            )
            raise ConfigError(
                f"adapters {first!r} and {name!r} differ in {detail}; particles must share "
                "one LoRA layout (same rank, alpha and target modules): retrain them alike"
            )
        shapes = {key: tuple(value.shape) for key, value in tensors[name].items()}
        wanted = {key: tuple(value.shape) for key, value in tensors[first].items()}
        if shapes != wanted:
            odd = sorted(k for k in set(shapes) | set(wanted) if shapes.get(k) != wanted.get(k))
            raise ConfigError(
                f"adapters {first!r} and {name!r} have different tensors ({len(odd)} differ, "
                f"e.g. {odd[0]}: {wanted.get(odd[0])} vs {shapes.get(odd[0])}); particles must "
                "share one LoRA layout (same rank and target modules): retrain them alike"
            )
    return tensors


def _identity(
    herd: HerdAdapters, questions: Sequence[ChoiceQuestion], settings: SwarmSettings, size: int
) -> dict[str, Any]:
    """What makes two runs the same run: a resume must match it."""
    ids = hashlib.sha256("\n".join(q.id for q in questions).encode()).hexdigest()
    chosen = settings.model_dump(include=set(_RUN_FIELDS))
    chosen["swarm_size"] = size
    return {
        "base": herd.base,
        "adapters": {name: str(path) for name, path in herd.adapters.items()},
        "questions": {"count": len(questions), "ids_sha256": ids},
        "settings": chosen,
    }


def _check_same_run(folder: Path, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    if saved == wanted:
        return
    differing = sorted(key for key in wanted if saved.get(key) != wanted[key])
    if "settings" in differing:
        differing.remove("settings")
        differing += sorted(
            f"--{key.replace('_', '-')}"
            for key in wanted["settings"]
            if saved["settings"].get(key) != wanted["settings"][key]
        )
    raise ConfigError(
        f"{folder} holds a swarm run with other {', '.join(differing)}; rerun with the "
        "settings it was started with to resume it, or give another --out"
    )


def _generator(saved: dict[str, Any]) -> Any:
    import numpy as np

    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = saved
    return rng


class _Evaluator:
    """The base model with one PEFT slot; scores a particle by copying it into the slot."""

    def __init__(
        self,
        base: str,
        first_adapter: Path,
        questions: Sequence[ChoiceQuestion],
        settings: SwarmSettings,
        experts: dict[str, Tensors],
    ) -> None:
        import torch

        try:
            from peft import PeftModel
        except ImportError as exc:
            raise ConfigError("herd swarm needs peft: pip install 'langchain-herd[lora]'") from exc
        from langchain_herd.server.loading import load_backend

        device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
        backend = load_backend(base)
        self.tokenizer = backend.tokenizer
        model = PeftModel.from_pretrained(
            backend.model, str(first_adapter), adapter_name=SLOT, is_trainable=False
        )
        self.model = model.to(device).eval()
        self.device = device
        self.questions = list(questions)
        self.batch_size = settings.batch_size
        marker = f".{SLOT}"
        self.slot = {
            name.replace(marker, ""): parameter
            for name, parameter in self.model.named_parameters()
            if marker in name
        }
        keys = set(next(iter(experts.values())))
        if keys != set(self.slot):
            missing = sorted(keys ^ set(self.slot))
            raise ConfigError(
                f"the adapters' tensors do not map onto PEFT's LoRA slot on {base!r} "
                f"({len(missing)} unmatched, e.g. {missing[0]}); only plain LoRA adapters "
                "(no DoRA, no modules_to_save) can be swarmed"
            )

    def __call__(self, particle: Tensors) -> dict[str, float]:
        import torch

        from langchain_herd.choice_scoring import score_questions

        with torch.no_grad():
            for key, value in particle.items():
                self.slot[key].data.copy_(value)
        scores = score_questions(
            self.model, self.tokenizer, self.questions, batch_size=self.batch_size
        )
        return {"accuracy": scores.accuracy, "loglik": scores.mean_gold_loglik}


# --- the search -----------------------------------------------------------------------------


def _start(
    experts: dict[str, Tensors],
    names: list[str],
    size: int,
    settings: SwarmSettings,
    identity: dict[str, Any],
    evaluate: _Evaluator,
    say: Callable[[str], None],
) -> SwarmState:
    """The starting swarm (step 0): experts, seeded mixes of two, velocities, their scores."""
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(settings.seed))
    x: list[Tensors] = [experts[name] for name in names]
    origins = [f"expert {name}" for name in names]
    while len(x) < size:
        a, b = (int(i) for i in rng.choice(len(names), size=2, replace=False))
        t = float(rng.uniform())
        x.append({k: t * experts[names[a]][k] + (1 - t) * experts[names[b]][k] for k in x[0]})
        origins.append(f"{t:.4f} x {names[a]} + {1 - t:.4f} x {names[b]}")
    v: list[Tensors] = []
    for i in range(size):
        j = int(rng.integers(size - 1))
        j += j >= i  # a random particle other than i
        v.append({k: x[j][k] - x[i][k] for k in x[i]})
    say(f"herd swarm: scoring the {size} starting particles on {len(evaluate.questions)} questions")
    started = time.perf_counter()
    metrics = [evaluate(particle) for particle in x]
    utilities = [m[settings.metric] for m in metrics]
    best = int(np.argmax(utilities))
    worst = int(np.argmin(utilities))
    seconds = time.perf_counter() - started
    scalars: dict[str, Any] = {
        "identity": identity,
        "origins": origins,
        "start": {name: metrics[i] for i, name in enumerate(names)},
        "personal": [{"utility": u, **m} for u, m in zip(utilities, metrics, strict=True)],
        "best": {"utility": utilities[best], **metrics[best], "particle": best, "step": 0},
        "worst": {"utility": utilities[worst], "particle": worst, "step": 0},
        "history": [
            {
                "step": 0,
                "step_size": None,
                "particles": metrics,
                "best_utility": utilities[best],
                "best_accuracy": metrics[best]["accuracy"],
                "best_loglik": metrics[best]["loglik"],
                "improved": True,
            }
        ],
        "seconds": [seconds],
        "stopped": None,
    }
    state = SwarmState(
        step=0,
        step_size=settings.step_size,
        since_improved=0,
        rng=dict(rng.bit_generator.state),
        scalars=scalars,
        x=x,
        v=v,
        p=list(x),
        g=x[best],
        g_worst=x[worst],
    )
    _report_step(state, settings, seconds, say)
    _maybe_stop(state, settings)
    return state


def _step(
    state: SwarmState,
    rng: Any,
    settings: SwarmSettings,
    evaluate: _Evaluator,
    say: Callable[[str], None],
) -> None:
    """Move every particle once, score them, update the bests; ``state`` changes in place."""
    started = time.perf_counter()
    step_size = state.step_size
    for i in range(len(state.x)):
        factors = tuple(float(r) for r in rng.uniform(size=4))
        state.x[i], state.v[i] = step_particle(
            x=state.x[i],
            v=state.v[i],
            personal=state.p[i],
            best=state.g,
            worst=state.g_worst,
            factors=factors,  # type: ignore[arg-type]
            weights=settings.weights,
            step_size=step_size,
        )
    metrics = [evaluate(particle) for particle in state.x]
    scalars = state.scalars
    improved = False
    for i, m in enumerate(metrics):
        utility = m[settings.metric]
        if utility > scalars["personal"][i]["utility"]:
            state.p[i] = state.x[i]
            scalars["personal"][i] = {"utility": utility, **m}
        if utility > scalars["best"]["utility"]:
            state.g = state.x[i]
            scalars["best"] = {"utility": utility, **m, "particle": i, "step": state.step + 1}
            improved = True
        if utility < scalars["worst"]["utility"]:
            state.g_worst = state.x[i]
            scalars["worst"] = {"utility": utility, "particle": i, "step": state.step + 1}
    state.step += 1
    state.step_size = step_size * settings.step_decay
    state.since_improved = 0 if improved else state.since_improved + 1
    state.rng = dict(rng.bit_generator.state)
    seconds = time.perf_counter() - started
    scalars["history"].append(
        {
            "step": state.step,
            "step_size": step_size,
            "particles": metrics,
            "best_utility": scalars["best"]["utility"],
            "best_accuracy": scalars["best"]["accuracy"],
            "best_loglik": scalars["best"]["loglik"],
            "improved": improved,
        }
    )
    scalars["seconds"].append(seconds)
    _report_step(state, settings, seconds, say)
    _maybe_stop(state, settings)


def _maybe_stop(state: SwarmState, settings: SwarmSettings) -> None:
    if state.step > 0 and state.since_improved >= settings.patience:
        state.scalars["stopped"] = "patience"
    elif state.step >= settings.max_steps:
        state.scalars["stopped"] = "max_steps"
    state.finished = state.scalars["stopped"] is not None


def _report_step(
    state: SwarmState, settings: SwarmSettings, seconds: float, say: Callable[[str], None]
) -> None:
    record = state.scalars["history"][-1]
    best = state.scalars["best"]
    size = record["step_size"]
    say(
        f"herd swarm: step {state.step}/{settings.max_steps}"
        f"  lambda {'-' if size is None else f'{size:.4f}'}"
        f"  best {settings.metric} {best['utility']:.4f}"
        f" (accuracy {best['accuracy']:.4f}, loglik {best['loglik']:.4f})"
        f"  {'improved' if record['improved'] else 'no better'}"
        f"  {seconds:.1f} s"
    )


# --- outputs --------------------------------------------------------------------------------


def _write_report(
    folder: Path, herd: HerdAdapters, settings: SwarmSettings, state: SwarmState
) -> Path:
    scalars = state.scalars
    report = {
        "settings": settings.model_dump(),
        "base": herd.base,
        "adapters": scalars["identity"]["adapters"],
        "questions": scalars["identity"]["questions"],
        "particles": scalars["origins"],
        "start": scalars["start"],
        "history": scalars["history"],
        "best": scalars["best"],
        "steps": state.step,
        "finished": state.finished,
        "stopped": scalars["stopped"],
        "seconds_per_step": scalars["seconds"],
        "best_folder": str((folder / "best").resolve()),
    }
    path = folder / "swarm.json"
    write_atomically(path, json.dumps(report, indent=1).encode())
    return path


def _finish(
    folder: Path,
    herd: HerdAdapters,
    settings: SwarmSettings,
    state: SwarmState,
    questions: Sequence[ChoiceQuestion],
    resumed: bool,
) -> SwarmResult:
    from safetensors.torch import save

    best_folder = folder / "best"
    first = next(iter(herd.adapters.values()))
    dtypes = _dtypes(first / ADAPTER_WEIGHTS)
    tensors = {k: v.to(dtypes[k]).contiguous() for k, v in state.g.items()}
    write_atomically(best_folder / ADAPTER_WEIGHTS, save(tensors, metadata={"format": "pt"}))
    # The same LoRA layout as every input adapter, so their config describes the best one too.
    write_atomically(best_folder / ADAPTER_CONFIG, (first / ADAPTER_CONFIG).read_bytes())
    report = _write_report(folder, herd, settings, state)
    config_file = _write_config(folder, herd, best_folder, state, questions)
    best = state.scalars["best"]
    return SwarmResult(
        best_folder=best_folder,
        config_file=config_file,
        report_file=report,
        best_accuracy=best["accuracy"],
        best_loglik=best["loglik"],
        start=state.scalars["start"],
        steps=state.step,
        stopped=state.scalars["stopped"],
        resumed=resumed,
    )


def _dtypes(file: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return {key: value.dtype for key, value in load_file(file).items()}


def _write_config(
    folder: Path,
    herd: HerdAdapters,
    best_folder: Path,
    state: SwarmState,
    questions: Sequence[ChoiceQuestion],
) -> Path:
    """A herd config: the input one, plus the best particle as adapter and expert ``swarm``."""
    config = herd.config
    base_dir = config.base_dir
    data = config.model_dump(mode="json", exclude_unset=True)
    name = _unused("swarm", {e.name for e in config.experts} | set(herd.adapters))
    url = ""
    for server in data.get("local_servers", []):
        adapters = server.get("lora_adapters") or {}
        for key, source in adapters.items():
            path = base_dir / Path(source).expanduser()
            if path.exists():
                adapters[key] = str(path.resolve())
        model = server.get("model")
        if model and (base_dir / model).exists():
            server["model"] = str((base_dir / model).resolve())
        if adapters and {Path(p) for p in adapters.values()} >= set(herd.adapters.values()):
            adapters[name] = str(best_folder.resolve())
            url = f"http://{server.get('host', '127.0.0.1')}:{server['port']}"
    classifier = (data.get("router") or {}).get("classifier") or {}
    artifact = classifier.get("path")
    if artifact and not str(artifact).startswith(BUNDLED_PREFIX) and (base_dir / artifact).exists():
        classifier["path"] = str((base_dir / artifact).resolve())
    groups = {q.group for q in questions}
    routes = sorted(
        {
            label
            for expert in config.experts
            if expert.name in herd.expert_adapter
            for label in expert.routes
            if label in groups
        }
    )
    best_start = max(
        state.scalars["start"], key=lambda n: state.scalars["start"][n][_metric(state)]
    )
    template = next(
        (e for e in data.get("experts", []) if herd.expert_adapter.get(e["name"]) == best_start),
        next((e for e in data.get("experts", []) if e["name"] in herd.expert_adapter), None),
    )
    expert: dict[str, Any] = dict(template) if template else {"url": url, "protocol": "tgi"}
    expert.pop("server", None)
    expert.update(
        name=name,
        adapter_id=name,
        routes=routes,
        description=(
            f"Model Swarms: the best of {len(state.x)} particles over "
            f"{', '.join(herd.adapters)} on {len(questions)} dev questions"
        ),
    )
    if "openai_model" in expert:
        expert["openai_model"] = name
    data.setdefault("experts", []).append(expert)
    parse_config(data, source="herd-swarm.yaml", base_dir=folder, resolve_secrets=False)
    out = folder / "herd-swarm.yaml"
    header = (
        f"# {config.name} plus the Model Swarms expert {name!r} (herd swarm; {folder}/swarm.json)\n"
    )
    write_atomically(out, (header + yaml.safe_dump(data, sort_keys=False)).encode())
    return out


def _metric(state: SwarmState) -> str:
    return str(state.scalars["identity"]["settings"]["metric"])


def _unused(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate
