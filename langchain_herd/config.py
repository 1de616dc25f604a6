"""Herd configuration: the experts, the router, fallback and auth, loaded from YAML.

Every model forbids unknown keys so a typo fails loudly at load time instead of being
silently ignored in production. ``load_config`` turns pydantic's errors into one
``ConfigError`` that names the file, the key and what is allowed. A config is a YAML file or
``bundled:<name>``, one shipped inside the package (``bundled:local``, the embedded default),
so it loads from any folder.

Example:
    .. code-block:: python

        from langchain_herd.config import load_config

        herd = load_config("bundled:local")  # or a path: load_config("my-herd.yaml")
        print([expert.name for expert in herd.experts])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from langchain_herd.deploy.spec import DeploySpec, check_expert_servers
from langchain_herd.errors import ConfigError

Protocol = Literal["tgi", "openai"]
FailureKind = Literal[
    "connection",
    "timeout",
    "server_error",
    "rate_limited",
    "generation_error",
    "invalid_input",
    "empty_answer",
    "stream_broken",
    "client_error",
]
#: Failures that move on to the next expert unless the config says otherwise. A plain 4xx
#: (bad auth, wrong URL) is a configuration fault that another expert will not mend.
DEFAULT_FALLBACK_ON: tuple[FailureKind, ...] = (
    "connection",
    "timeout",
    "server_error",
    "rate_limited",
    "generation_error",
    "invalid_input",
    "empty_answer",
    "stream_broken",
)
PromptFormat = Literal["chatml", "llama3", "mistral", "plain"]
#: Prefix of a reference to something shipped in the package: ``bundled:local`` (a herd
#: config) or ``bundled:mmlu-group-tfidf`` (a classifier).
BUNDLED_PREFIX = "bundled:"
#: Herd configs shipped in the package (``bundled:<file stem>``); package data in pyproject.
BUNDLED_CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerationParams(_Strict):
    """Decoding parameters sent with every request to one expert.

    The defaults decode greedily, so the same question gets the same answer (TGI samples
    whenever a temperature is sent, so greedy means sending none).
    """

    max_new_tokens: int = Field(default=256, ge=1)
    """Upper bound on generated tokens."""
    temperature: float | None = Field(default=None, gt=0)
    """Sampling temperature; None decodes greedily."""
    top_p: float | None = Field(default=None, gt=0, le=1)
    """Nucleus sampling mass; None disables it."""
    top_k: int | None = Field(default=None, ge=1)
    """Top-k sampling; None disables it (TGI generate route only)."""
    repetition_penalty: float | None = Field(default=None, gt=0)
    """Repetition penalty (TGI generate route only)."""
    seed: int | None = None
    """Sampling seed, for repeatable sampled output."""
    stop: list[str] = Field(default_factory=list)
    """Stop sequences."""


class CapabilitiesConfig(_Strict):
    """What an endpoint can do; unset keys keep the protocol's default."""

    tools: bool | None = None
    """Tool calling (the server was started with tool support, e.g. vLLM's
    ``--enable-auto-tool-choice``)."""
    structured_output: list[Literal["json_schema", "json_mode", "function_calling"]] | None = None
    """Structured output methods the endpoint honours."""


class ExpertConfig(_Strict):
    """One expert endpoint of the herd."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:/-]+$")
    """Unique name; used in decisions, traces (tag ``expert:<name>``) and route maps. A
    correctness router's labels are expert names, so hub-style ids (``org/model``) work."""
    url: str
    """Server root, e.g. ``http://tgi-stem:8080`` (not ``/generate`` nor ``/v1``)."""
    protocol: Protocol = "openai"
    """``tgi``: TGI's native generate API; ``openai``: ``/v1/chat/completions``."""
    model_id: str = "tgi"
    """The model the endpoint serves (informational, and sent as ``model`` where needed)."""
    adapter_id: str | None = None
    """LoRA adapter to use on this endpoint (several experts on one base model): sent as
    TGI's ``adapter_id``; on vLLM and SGLang the adapter's name, chosen by ``openai_model``."""
    openai_model: str | None = None
    """``model`` value for the OpenAI route. Default: ``adapter_id`` if set, else ``tgi``
    (TGI reads it as an adapter id). vLLM and SGLang need their served model name here."""
    prompt_format: PromptFormat = "chatml"
    """How messages become one prompt on the ``tgi`` route (the server applies the chat
    template itself on the ``openai`` route)."""
    system_prompt: str | None = None
    """Prepended as a system message to every request this expert gets."""
    generation: GenerationParams = Field(default_factory=GenerationParams)
    """Decoding parameters."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Per-request deadline in seconds (async calls enforce it for the whole request)."""
    max_input_tokens: int | None = Field(default=None, ge=1)
    """The endpoint's input limit (TGI's ``--max-input-tokens``, vLLM's ``--max-model-len``
    less the answer). The router skips this expert for a query that would overflow it;
    unset, the router asks the endpoint (``/info``, ``/v1/models``)."""
    tokenizer: str | None = None
    """Where the router finds this expert's tokenizer to count a query's tokens: a local
    folder or a hub id already in the local cache. Default: ``model_id`` if it is cached
    locally, else a stated conservative estimate (see ``langchain_herd.context_limits``)."""
    cost: float = Field(default=1.0, ge=0)
    """Relative cost of a call (e.g. active parameters in billions)."""
    description: str = ""
    """What this expert is good at, for humans and reports."""
    routes: list[str] = Field(default_factory=list)
    """Route labels this expert serves (e.g. ``stem``); the classifier scores these labels."""
    capabilities: CapabilitiesConfig | None = None
    """What the endpoint honours beyond chat; default by protocol (``openai``: tools and
    every structured output method; ``tgi``: JSON grammars, no tools)."""
    server: str | None = None
    """The ``deploy.servers`` entry this expert runs on (``herd compose``); the config then
    checks that url, model, protocol, adapter and served model name agree with it."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        stripped = value.rstrip("/")
        for suffix in ("/generate", "/generate_stream", "/v1/chat/completions", "/v1"):
            if stripped.endswith(suffix):
                raise ValueError(
                    f"give the server root, without {suffix!r} (the client adds the route)"
                )
        return stripped

    @property
    def chat_model_name(self) -> str:
        """The ``model`` field sent on the OpenAI route."""
        return self.openai_model or self.adapter_id or "tgi"


class ClassifierRef(_Strict):
    """Which classifier artifact the router loads."""

    path: str = "bundled:mmlu-group-tfidf"
    """A directory made by ``save_pretrained``, or ``bundled:<name>`` for one shipped with
    the package. Relative paths resolve against the config file's folder."""


class PolicyConfig(_Strict):
    """Which decision policy turns classifier scores into a ranking of experts.

    A value left unset (``margin``, ``threshold``) is taken from the classifier artifact's
    calibration (``herd calibrate``) when it has one for this policy, else a default.
    """

    name: Literal["argmax", "margin", "cost", "threshold"] = "argmax"
    """``argmax``: best score first. ``margin``: keep the default expert unless another beats
    it by ``margin``. ``cost``: best score minus ``cost_weight`` x the expert's ``cost``.
    ``threshold``: call ``strong_expert`` only when its score exceeds ``threshold``."""
    margin: float | None = Field(default=None, ge=0, le=1)
    """For ``margin``: how much another expert's score must exceed the default's (0.1)."""
    cost_weight: float = Field(default=0.0, ge=0)
    """For ``cost``: the price of one unit of expert ``cost`` in score."""
    strong_expert: str | None = None
    """For ``threshold``: the expensive expert that is called only when worth it."""
    threshold: float | None = Field(default=None, ge=0, le=1)
    """For ``threshold``: the strong expert's score above which it is called (0.5)."""

    @model_validator(mode="after")
    def _check_threshold(self) -> PolicyConfig:
        if self.name == "threshold" and not self.strong_expert:
            raise ValueError("policy threshold needs strong_expert: the expert it guards")
        return self


class StickyConfig(_Strict):
    """Sticky routes across the turns of a conversation thread (``configurable.thread_id``)."""

    enabled: bool = True
    """Keep a thread with its previous expert unless clearly beaten."""
    margin: float = Field(default=0.1, ge=0, le=1)
    """How much the best expert's score must beat the previous expert's to move the thread."""
    ttl_s: float = Field(default=3600.0, gt=0)
    """How long a thread's expert is remembered after its last turn."""
    max_threads: int = Field(default=10_000, ge=1)
    """Most threads remembered; the least recently used are forgotten first."""


class RouterConfig(_Strict):
    """The classifier and the policy."""

    classifier: ClassifierRef = Field(default_factory=ClassifierRef)
    """The classifier artifact."""
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    """The decision policy."""
    query: Literal["last_user", "all_user"] = "all_user"
    """Which messages are classified: only the last user turn, or every user turn (so a
    terse follow-up stays with the expert of the conversation's topic)."""
    sticky: StickyConfig = Field(default_factory=StickyConfig)
    """Sticky routes for conversation threads."""
    ensemble: EnsembleConfig | None = None
    """Answer with several experts (cascade, vote, mixture-of-agents); unset: one expert."""


class EnsembleConfig(_Strict):
    """Use several experts' answers for one query: an escalation cascade, a vote or a
    mixture-of-agents (see ``langchain_herd.ensembles``). Unset: route to one expert.

    Requests that bind tools or structured output, pin an expert or continue a tool loop
    are routed to one expert as usual (the decision notes why)."""

    kind: Literal["cascade", "vote", "moa"]
    """``cascade``: call a tier concurrently, keep its answer when the scorer trusts it,
    else escalate to the next tier. ``vote``: several experts answer, one answer wins.
    ``moa``: proposers answer, an aggregator writes the final answer from theirs."""
    tiers: list[list[str]] = Field(default_factory=list)
    """For ``cascade``: experts per tier, cheapest tier first; a tier's first expert is its
    main one (the weak model), the rest its helpers. Unset: taken from the ``scorer``."""
    keep: Literal["first", "vote"] = "first"
    """For ``cascade``: the answer a tier keeps, its first expert's or the tier's vote."""
    scorer: str | None = None
    """For ``cascade`` (required) and ``vote`` with ``method: learned``: the artifact
    ``herd train --kind cascade|learned-vote`` wrote. Relative paths resolve against the
    config file's folder."""
    threshold: float | None = Field(default=None, ge=0, le=1)
    """For ``cascade``: escalate when the scorer's escalation score exceeds this."""
    escalate_share: float | None = Field(default=None, ge=0, le=1)
    """For ``cascade``: instead of ``threshold``, the share of queries to escalate (read from
    the scorer's calibration on its training rows)."""
    budget: float | None = Field(default=None, gt=0)
    """For ``cascade``: instead of ``threshold``, an average cost per query (expert
    ``cost`` units, every call counted) to stay within, from the scorer's calibration."""
    agreement: Literal["letters", "exact", "embedding", "judge"] = "letters"
    """How two answers are compared: the option letters of multiple-choice answers,
    normalised exact match, cosine similarity of MiniLM embeddings, or an LLM judge."""
    agreement_encoder: str | None = None
    """For ``embedding``: a sentence-transformers folder (default: the local MiniLM)."""
    judge_expert: str | None = None
    """For ``judge``: the expert asked whether two answers agree."""
    members: list[str] = Field(default_factory=list)
    """For ``vote``: the voters; unset, the top ``k`` experts of the router's ranking."""
    k: int = Field(default=3, ge=1)
    """For ``vote`` (voters) and ``moa`` (proposers) when not listed."""
    method: Literal["majority", "weighted", "learned"] = "majority"
    """For ``vote``: one vote each; weighted by ``weights``; or the learned vote (``scorer``)."""
    weights: dict[str, float] = Field(default_factory=dict)
    """For ``weighted``: each voter's weight (e.g. its accuracy); unset experts weigh 1."""
    proposers: list[str] = Field(default_factory=list)
    """For ``moa``: the experts that propose answers; unset, the top ``k`` of the ranking."""
    aggregator: str | None = None
    """For ``moa``: the expert that writes the final answer; unset, the top-ranked one."""
    layers: int = Field(default=1, ge=1, le=4)
    """For ``moa``: proposal rounds; each later round sees the previous round's answers."""

    @model_validator(mode="after")
    def _check_kind(self) -> EnsembleConfig:
        if self.kind == "cascade" and not self.scorer:
            raise ValueError(
                "ensemble kind cascade needs `scorer`: the artifact of "
                "`herd train --kind cascade` (it holds the tiers and the escalation score)"
            )
        if self.kind == "vote" and self.method == "learned" and not self.scorer:
            raise ValueError(
                "ensemble vote with method learned needs `scorer`: the artifact of "
                "`herd train --kind learned-vote`"
            )
        chosen = [
            name
            for name, value in (
                ("threshold", self.threshold),
                ("escalate_share", self.escalate_share),
                ("budget", self.budget),
            )
            if value is not None
        ]
        if len(chosen) > 1:
            raise ValueError(f"give at most one of threshold, escalate_share, budget; got {chosen}")
        if self.agreement == "judge" and not self.judge_expert:
            raise ValueError("agreement judge needs `judge_expert`: the expert that judges")
        return self

    def experts_named(self) -> list[str]:
        """Every expert name this section mentions (checked against the herd)."""
        names = [n for tier in self.tiers for n in tier] + self.members + self.proposers
        names += list(self.weights)
        names += [n for n in (self.aggregator, self.judge_expert) if n]
        return names


class BreakerConfig(_Strict):
    """Per-expert circuit breaker."""

    failure_threshold: int = Field(default=3, ge=1)
    """Consecutive failures that open the breaker."""
    cooldown_s: float = Field(default=30.0, ge=0)
    """How long an open breaker skips its expert before one probe request is let through."""


class BackpressureConfig(_Strict):
    """What a 429 (overloaded) does: the expert is skipped for a while, never counted by its
    breaker, and the request moves on (``langchain_herd.backpressure``)."""

    backoff_s: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    """Seconds an expert that answered 429 without ``Retry-After`` is skipped."""
    max_backoff_s: float = Field(default=30.0, ge=0, allow_inf_nan=False)
    """The longest back-off, whatever the server's ``Retry-After`` says."""

    @model_validator(mode="after")
    def _ordered(self) -> BackpressureConfig:
        if self.backoff_s > self.max_backoff_s:
            raise ValueError(
                f"backoff_s ({self.backoff_s}) exceeds max_backoff_s ({self.max_backoff_s}); "
                f"raise max_backoff_s or lower backoff_s"
            )
        return self


class FallbackConfig(_Strict):
    """What happens when an expert fails."""

    default_expert: str | None = None
    """Expert used when no route label matches, and the anchor of the ``margin`` policy.
    Defaults to the first expert."""
    max_attempts: int = Field(default=3, ge=1)
    """Most experts tried for one request."""
    on_failures: list[FailureKind] = Field(default_factory=lambda: list(DEFAULT_FALLBACK_ON))
    """Failure kinds that move on to the next expert; others raise at once. (Not ``on``:
    YAML reads a bare ``on`` key as the boolean true.)"""
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    """Circuit breaker settings."""
    backpressure: BackpressureConfig = Field(default_factory=BackpressureConfig)
    """Back-off of an overloaded (429) expert."""


class AuthConfig(_Strict):
    """A bearer token for some experts, read from the environment.

    The token is sent only to the experts named in ``experts``; every other endpoint gets
    no ``Authorization`` header at all (not even an ``HF_TOKEN`` from the environment).
    """

    token_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Name of the environment variable that holds the token."""
    experts: list[str] = Field(min_length=1)
    """Experts the token is sent to."""
    required: bool = True
    """Fail at load time when the variable is unset (else send no token)."""
    _token: SecretStr | None = PrivateAttr(default=None)

    @property
    def token(self) -> SecretStr | None:
        """The token as read at load time; never printed."""
        return self._token

    def resolve(self) -> None:
        """Read the token from the environment."""
        value = os.environ.get(self.token_env)
        if value is None and self.required:
            raise ConfigError(
                f"auth.token_env: environment variable {self.token_env!r} is not set; export "
                f"it, or set auth.required: false to call {self.experts} without a token"
            )
        self._token = SecretStr(value) if value else None


class LocalServerConfig(_Strict):
    """A local TGI-protocol server that ``herd up`` starts (tests and the embedded default)."""

    name: str
    """Name used in logs."""
    model: str = "smollm2"
    """``smollm2``, ``tiny``, a HF model folder, a ``.gguf`` file, or ``replay[:M1,M2]``:
    recorded answers of real models, no model loaded (``herd serve --replay``; give it
    ``max_input_tokens: 8192`` so every recorded prompt fits)."""
    model_id: str | None = None
    """The model id the server reports (``/info``, ``/v1/models``, replies); default the
    model's own (``HuggingFaceTB/SmolLM2-135M-Instruct`` for ``smollm2``)."""
    host: str = "127.0.0.1"
    """Interface to bind."""
    port: int = Field(ge=1, le=65535)
    """Port to bind; experts reach it at ``http://host:port``."""
    max_input_tokens: int = Field(default=1024, ge=1)
    """Longest accepted input, as TGI's ``--max-input-tokens``."""
    max_total_tokens: int = Field(default=2048, ge=2)
    """Longest input plus output, as TGI's ``--max-total-tokens``."""
    max_concurrent_requests: int = Field(default=8, ge=1)
    """In-flight requests beyond this get HTTP 429, as in TGI."""
    max_batch_size: int = Field(default=8, ge=1)
    """Concurrent requests that share one forward pass per token (``herd serve
    --max-batch-size``; 1: one at a time)."""
    lora_batching: Literal["mixed", "grouped"] = "mixed"
    """Whether requests for different LoRA adapters share a batch (``mixed``, the default: good
    in any arrival order) or wait for one of their own (``grouped``: x1.12 faster when the
    herd's ``batch`` sends queries grouped by adapter, slower for interleaved traffic)."""
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1)
    """Larger request bodies get HTTP 413 before they are read (``herd serve
    --max-body-bytes``; the default 2 MiB fits any prompt a context window takes)."""
    lora_adapters: dict[str, str] = Field(default_factory=dict)
    """PEFT LoRA adapters loaded at start (``herd serve --lora-adapters``): name -> a folder
    (relative to the config's folder) or a hub id. Experts pick one with ``adapter_id``."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class StateConfig(_Strict):
    """Where breakers and sticky sessions live: in this process, or in Redis so that several
    router replicas share them."""

    backend: Literal["memory", "redis"] = "memory"
    """``memory``: this process only (the default). ``redis``: shared through ``url``."""
    url: str | None = None
    """The Redis server for ``backend: redis``, e.g. ``redis://redis:6379/0``."""
    key_prefix: str = "herd:"
    """Prefix of every Redis key, so several herds can share one Redis."""
    reconnect_s: float = Field(default=5.0, gt=0)
    """While Redis is unreachable the router uses local state, and retries this often."""

    @model_validator(mode="after")
    def _check_url(self) -> StateConfig:
        if self.backend == "redis" and not self.url:
            raise ValueError("state.backend redis needs url, e.g. redis://localhost:6379/0")
        if self.url is not None and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("state.url must start with redis://, rediss:// or unix://")
        return self


class HerdConfig(_Strict):
    """A whole herd: experts, router, fallback, auth and optional local servers."""

    name: str = "herd"
    """Name of the herd, used as the router's run name."""
    experts: list[ExpertConfig] = Field(min_length=1)
    """The expert endpoints."""
    router: RouterConfig = Field(default_factory=RouterConfig)
    """Classifier and policy."""
    fallback: FallbackConfig = Field(default_factory=FallbackConfig)
    """Fallback and breaker rules."""
    auth: list[AuthConfig] = Field(default_factory=list)
    """Tokens and the experts they are sent to."""
    local_servers: list[LocalServerConfig] = Field(default_factory=list)
    """Local servers ``herd up`` starts before the herd is used."""
    state: StateConfig = Field(default_factory=StateConfig)
    """Where breakers and sticky sessions live (shared by replicas with Redis)."""
    deploy: DeploySpec | None = None
    """The TGI, vLLM or SGLang servers behind the experts and the router replicas, for
    ``herd compose`` (see ``langchain_herd.deploy.spec``)."""
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @model_validator(mode="after")
    def _check_references(self) -> HerdConfig:
        names = [expert.name for expert in self.experts]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"expert names must be unique; repeated: {duplicates}")
        known = set(names)
        default = self.fallback.default_expert
        if default is not None and default not in known:
            raise ValueError(
                f"fallback.default_expert {default!r} is not an expert; choose one of {names}"
            )
        for index, auth in enumerate(self.auth):
            unknown = [name for name in auth.experts if name not in known]
            if unknown:
                raise ValueError(
                    f"auth[{index}].experts names unknown experts {unknown}; known: {names}"
                )
        strong = self.router.policy.strong_expert
        if strong is not None and strong not in known:
            raise ValueError(
                f"router.policy.strong_expert {strong!r} is not an expert; choose one of {names}"
            )
        if self.router.ensemble is not None:
            unknown = [n for n in self.router.ensemble.experts_named() if n not in known]
            if unknown:
                raise ValueError(
                    f"router.ensemble names unknown experts {sorted(set(unknown))}; known: {names}"
                )
        claimed = [name for auth in self.auth for name in auth.experts]
        twice = sorted({name for name in claimed if claimed.count(name) > 1})
        if twice:
            raise ValueError(f"experts {twice} appear in more than one auth entry")
        check_expert_servers(self.experts, self.deploy)
        return self

    @property
    def base_dir(self) -> Path:
        """Folder relative paths in the config resolve against."""
        return self._base_dir

    @property
    def default_expert(self) -> str:
        """The fallback anchor: configured, else the first expert."""
        return self.fallback.default_expert or self.experts[0].name

    def expert(self, name: str) -> ExpertConfig:
        """Look an expert up by name."""
        for expert in self.experts:
            if expert.name == name:
                return expert
        raise ConfigError(f"no expert named {name!r}; known: {[e.name for e in self.experts]}")

    def token_for(self, expert_name: str) -> SecretStr | None:
        """The token configured for this expert, or None."""
        for auth in self.auth:
            if expert_name in auth.experts:
                return auth.token
        return None

    def route_labels(self) -> dict[str, list[str]]:
        """Map each route label to the experts serving it, in config order."""
        labels: dict[str, list[str]] = {}
        for expert in self.experts:
            for label in expert.routes:
                labels.setdefault(label, []).append(expert.name)
        return labels


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid herd config ({error.error_count()} problem(s))"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<top level>"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the README's config reference)"
        elif item["type"] == "literal_error":
            message = f"{message}, got {item.get('input')!r}"
        lines.append(f"  - {key}: {message}")
    return "\n".join(lines)


def parse_config(
    data: Any,
    *,
    source: str = "<config>",
    base_dir: Path | None = None,
    resolve_secrets: bool = True,
) -> HerdConfig:
    """Validate a mapping (e.g. parsed YAML) into a ``HerdConfig``."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        config = HerdConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None
    except RecursionError:
        raise ConfigError(f"{source}: config nested too deeply to validate") from None
    config._base_dir = base_dir or Path.cwd()
    if resolve_secrets:
        for auth in config.auth:
            try:
                auth.resolve()
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
    return config


def bundled_configs() -> list[str]:
    """Names of the herd configs shipped with the package, for ``bundled:<name>``."""
    if not BUNDLED_CONFIG_DIR.is_dir():
        return []
    return sorted(file.stem for file in BUNDLED_CONFIG_DIR.glob("*.yaml"))


def _bundled_list() -> str:
    return ", ".join(BUNDLED_PREFIX + name for name in bundled_configs()) or "none"


def _is_bundled(path: str | Path) -> bool:
    # Only a str can be a reference; a Path always names a file.
    return isinstance(path, str) and path.startswith(BUNDLED_PREFIX)


def resolve_config_path(path: str | Path) -> Path:
    """The YAML file a config reference names: ``bundled:<name>`` or a path.

    Raises:
        ConfigError: an unknown ``bundled:`` name (the message lists the known ones) or a
            path that is not a file.
    """
    if _is_bundled(path):
        name = str(path)[len(BUNDLED_PREFIX) :]
        if name not in bundled_configs():
            raise ConfigError(
                f"{path}: no bundled config {name!r}; bundled configs: {_bundled_list()} "
                "(or give the path of a herd config YAML file)"
            )
        return BUNDLED_CONFIG_DIR / f"{name}.yaml"
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"{file}: no such config file; give the path of a herd config YAML file, or a "
            f"config shipped with the package: {_bundled_list()}"
        )
    return file


def load_config(path: str | Path, *, resolve_secrets: bool = True) -> HerdConfig:
    """Load and validate a herd config from a YAML file or a bundled config.

    Args:
        path: the YAML file, or ``bundled:<name>`` for a config shipped with the package
            (``bundled:local``: the embedded default herd; see ``bundled_configs()``).
        resolve_secrets: read auth tokens from the environment now (turn off to inspect a
            config without its secrets).

    Raises:
        ConfigError: the file is missing, the bundled name unknown, the file not YAML, or
            not a valid herd config; the message names the file and each offending key.
    """
    file = resolve_config_path(path)
    # Errors in a bundled config name the reference the user typed and the file behind it.
    source = f"{path} ({file})" if _is_bundled(path) else str(file)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply to read; flatten it") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot be read ({exc})") from None
    return parse_config(
        data, source=source, base_dir=file.resolve().parent, resolve_secrets=resolve_secrets
    )
