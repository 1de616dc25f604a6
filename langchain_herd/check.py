"""``herd check CONFIG``: does each expert's endpoint serve what the config says?

Every endpoint is asked once (:mod:`langchain_herd.probes`: ``/health``, ``/info``,
``/v1/models``) and each expert gets one finding per check:

- ``reachable``: the endpoint answers at all, and what it is (TGI, or an OpenAI-compatible
  server such as vLLM or SGLang).
- ``health``: ``/health`` answers 200.
- ``protocol``: a ``tgi`` expert needs TGI's generate API (a server that answers ``/info``).
- ``model_id``: the config's ``model_id`` is the model the server reports (TGI's ``/info``
  ``model_id``; a ``/v1/models`` entry's ``id`` or ``root``).
- ``served_name``: on a vLLM or SGLang server, the ``model`` the expert's requests send is
  one the server lists.
- ``adapter``: the config's ``adapter_id`` is among the LoRA adapters the server lists
  (``/v1/models`` entries with a ``parent``). TGI lists none (its ``/info`` has no adapter
  list), so there it is "not verifiable", not guessed.
- ``context_limit``: the config's ``max_input_tokens`` is not above what the server accepts
  for the configured answer length; without one, the limit the router will learn.
- ``tokenizer``: whether the router counts a query's tokens with a local tokenizer or
  estimates them (:mod:`langchain_herd.context_limits`).

Statuses: ``ok``, ``problem`` (the exit status is 1 when there is any), ``warning`` and
``unverifiable`` (reported, not failures).

Example:
    .. code-block:: python

        from langchain_herd.check import check_config
        from langchain_herd.config import load_config

        report = check_config(load_config("my-herd.yaml"))
        print(report.table())
        raise SystemExit(0 if report.ok else 1)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from langchain_herd.config import ExpertConfig, HerdConfig
from langchain_herd.context_limits import ContextSpec, token_counter
from langchain_herd.probes import ALL_ROUTES, HEALTH, EndpointProbe, probe_endpoint

Status = Literal["ok", "problem", "warning", "unverifiable"]

CHECK_TIMEOUT_S = 5.0
"""Default timeout of each probe request."""


@dataclass(frozen=True)
class Finding:
    """The outcome of one check of one expert."""

    expert: str
    """The expert checked."""
    check: str
    """Which check (``reachable``, ``model_id``, ``adapter``, ``context_limit``, ...)."""
    status: Status
    """``ok``, ``problem``, ``warning`` or ``unverifiable``."""
    detail: str
    """What was found, and what to do about a problem."""


@dataclass
class CheckReport:
    """Every finding of ``check_config``, in config order."""

    findings: list[Finding] = field(default_factory=list)
    """One per expert and check."""

    @property
    def problems(self) -> list[Finding]:
        """The findings that fail the check."""
        return [finding for finding in self.findings if finding.status == "problem"]

    @property
    def ok(self) -> bool:
        """No problem found (warnings and unverifiable checks allowed)."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly form: ``ok`` and the findings."""
        return {"ok": self.ok, "findings": [asdict(finding) for finding in self.findings]}

    def table(self) -> str:
        """The findings as an aligned text table, with a summary line."""
        header = ("EXPERT", "CHECK", "STATUS", "DETAIL")
        rows = [(f.expert, f.check, f.status.upper(), f.detail) for f in self.findings]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
            + "  "
            + row[3]
            for row in [header, *rows]
        ]
        experts = len({finding.expert for finding in self.findings})
        if self.ok:
            lines.append(f"\nno problems found in {experts} expert(s)")
        else:
            failing = len({finding.expert for finding in self.problems})
            lines.append(f"\n{len(self.problems)} problem(s) in {failing} of {experts} expert(s)")
        return "\n".join(lines)


def check_config(config: HerdConfig, *, timeout_s: float = CHECK_TIMEOUT_S) -> CheckReport:
    """Probe every expert's endpoint and compare what it serves with the config.

    Args:
        config: the herd (its auth tokens resolved, so endpoints that need one answer).
        timeout_s: per probe request.

    Returns:
        The findings; ``report.ok`` is False when any check found a problem.
    """
    by_url: dict[str, str] = {}
    for expert in config.experts:
        by_url.setdefault(
            expert.url, expert.name
        )  # one probe per URL, with its first expert's token

    def probe(url: str) -> EndpointProbe:
        token = config.token_for(by_url[url])
        return probe_endpoint(url, ALL_ROUTES, timeout_s=timeout_s, token=token)

    with ThreadPoolExecutor(max_workers=min(8, len(by_url))) as pool:
        probes = dict(zip(by_url, pool.map(probe, by_url), strict=True))
    report = CheckReport()
    for expert in config.experts:
        report.findings.extend(check_expert(expert, probes[expert.url]))
    return report


def check_expert(expert: ExpertConfig, probe: EndpointProbe) -> list[Finding]:
    """The findings for one expert, from its endpoint's probe."""
    name = expert.name
    if not probe.reachable:
        return [
            Finding(
                name,
                "reachable",
                "problem",
                f"{expert.url} is unreachable ({probe.transport_error()}); start the server or "
                f"fix the url",
            )
        ]
    findings = [Finding(name, "reachable", "ok", f"{expert.url} ({_server_kind(probe)})")]
    health = probe.replies[HEALTH]
    findings.append(
        Finding(name, "health", "ok", "/health 200")
        if health.ok
        else Finding(name, "health", "problem", f"/health answered {health.why_not()}")
    )
    if expert.protocol == "tgi" and probe.info is None:
        findings.append(
            Finding(
                name,
                "protocol",
                "problem",
                "protocol tgi needs TGI's generate API, but the server does not answer /info as "
                "TGI does; vLLM and SGLang serve only the OpenAI route: set protocol: openai",
            )
        )
    findings.append(_model_id(expert, probe))
    served_name = _served_name(expert, probe)
    if served_name is not None:
        findings.append(served_name)
    if expert.adapter_id is not None:
        findings.append(_adapter(expert, probe))
    findings.append(_context_limit(expert, probe))
    findings.append(_tokenizer(expert))
    return findings


def _server_kind(probe: EndpointProbe) -> str:
    info = probe.info
    if info is not None:
        return f"TGI {info.get('version', '')}".strip()
    if probe.models is not None:
        return "OpenAI-compatible server, e.g. vLLM or SGLang"
    return "answers, but neither /info nor /v1/models"


def _reported_models(probe: EndpointProbe) -> set[str]:
    reported = set()
    if probe.info is not None:
        reported.add(str(probe.info["model_id"]))
    for model in probe.base_models():
        reported.add(model.id)
        if model.root:
            reported.add(model.root)
    return reported


def _model_id(expert: ExpertConfig, probe: EndpointProbe) -> Finding:
    reported = _reported_models(probe)
    if not reported:
        return Finding(expert.name, "model_id", "unverifiable", "the server reports no model id")
    served = ", ".join(sorted(reported))
    if expert.model_id == "tgi":  # the config's default: nothing was claimed
        return Finding(
            expert.name,
            "model_id",
            "warning",
            f"not set in the config; the server serves {served} (set model_id for reports and "
            f"per-call model selection)",
        )
    if expert.model_id in reported:
        return Finding(expert.name, "model_id", "ok", expert.model_id)
    return Finding(
        expert.name,
        "model_id",
        "problem",
        f"the config says {expert.model_id!r}, the server serves {served}; fix model_id or the url",
    )


def _served_name(expert: ExpertConfig, probe: EndpointProbe) -> Finding | None:
    """vLLM and SGLang answer 404 for a ``model`` they do not list (TGI ignores it)."""
    if expert.protocol != "openai" or probe.info is not None or probe.models is None:
        return None
    listed = [model.id for model in probe.models or []]
    sent = expert.chat_model_name
    if sent in listed:
        return Finding(expert.name, "served_name", "ok", f"requests name {sent!r}")
    base, _, adapter = sent.rpartition(":")
    if base in listed and adapter:
        # SGLang's way to pick a LoRA adapter: `model` written `<served model>:<adapter>`.
        return Finding(
            expert.name, "served_name", "ok", f"requests {base!r} with adapter {adapter!r}"
        )
    return Finding(
        expert.name,
        "served_name",
        "problem",
        f"requests name model {sent!r}, which the server does not list ({', '.join(listed)}); "
        f"set openai_model (or adapter_id) to one of them",
    )


def _adapter(expert: ExpertConfig, probe: EndpointProbe) -> Finding:
    adapter = expert.adapter_id
    listed = [model.id for model in probe.adapters()]
    if listed:
        if adapter in listed:
            return Finding(expert.name, "adapter", "ok", f"{adapter} is listed")
        return Finding(
            expert.name,
            "adapter",
            "problem",
            f"adapter {adapter!r} is not among the server's adapters ({', '.join(listed)}); "
            f"load it on the server or fix adapter_id",
        )
    if probe.info is not None:
        return Finding(
            expert.name,
            "adapter",
            "unverifiable",
            f"not verifiable: TGI's /info does not list LoRA adapters; make sure {adapter!r} is "
            f"in the server's --lora-adapters (LORA_ADAPTERS)",
        )
    if probe.models is not None:
        return Finding(
            expert.name,
            "adapter",
            "problem",
            f"adapter {adapter!r}: the server lists no LoRA adapters (vLLM: --enable-lora "
            f"--lora-modules {adapter}=PATH)",
        )
    return Finding(expert.name, "adapter", "unverifiable", "the server lists no models")


def _context_limit(expert: ExpertConfig, probe: EndpointProbe) -> Finding:
    spec = ContextSpec.from_config(expert)
    limits = probe.limits(spec.served_model)
    budget, why = (None, "") if limits is None else limits.input_budget(spec.max_new_tokens)
    configured = expert.max_input_tokens
    if configured is None:
        if budget is None:
            return Finding(
                expert.name,
                "context_limit",
                "warning",
                "the server reports no token limit and the config sets no max_input_tokens: "
                "long inputs are sent unchecked",
            )
        return Finding(
            expert.name, "context_limit", "ok", f"{budget} input tokens ({why}), learned by probe"
        )
    if budget is None:
        return Finding(
            expert.name,
            "context_limit",
            "unverifiable",
            f"config max_input_tokens {configured}; the server reports no token limit",
        )
    if configured > budget:
        return Finding(
            expert.name,
            "context_limit",
            "problem",
            f"config max_input_tokens {configured} is above the server's {budget} ({why}): the "
            f"router would send inputs the server rejects; lower it to {budget} or remove it",
        )
    return Finding(
        expert.name,
        "context_limit",
        "ok",
        f"config max_input_tokens {configured} <= the server's {budget} ({why})",
    )


def _tokenizer(expert: ExpertConfig) -> Finding:
    counter = token_counter(ContextSpec.from_config(expert))
    if counter.exact:
        return Finding(expert.name, "tokenizer", "ok", f"input tokens {counter.described}")
    if expert.tokenizer is not None:
        return Finding(
            expert.name,
            "tokenizer",
            "problem",
            f"tokenizer {expert.tokenizer!r} is not on this machine, so input tokens are "
            f"estimated; give a local folder or a hub id in the local cache",
        )
    return Finding(
        expert.name,
        "tokenizer",
        "warning",
        f"input tokens {counter.described} (set tokenizer: to a local folder to count them)",
    )
