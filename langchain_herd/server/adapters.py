"""LoRA adapters on the served model, chosen per request as TGI and vLLM do (multi-LoRA).

Adapters are PEFT LoRA folders (``adapter_config.json`` and ``adapter_model.safetensors``),
loaded onto the base model at start with PEFT (``PeftModel.from_pretrained``, then
``load_adapter`` for each further one): the maintained implementation that TGI's and vLLM's
adapter folders come from, so a folder ``herd finetune-expert`` writes loads in TGI too. A
request names one by ``adapter_id`` (generate routes) or ``model`` (chat route); a request
that names none is answered by the base model with every adapter disabled.

Spec syntax, as TGI's ``--lora-adapters``: ``name=path`` for a local folder, or a bare hub id
(``org/adapter``), which PEFT downloads (not possible on a machine without the hub).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_herd.errors import ConfigError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class AdapterSpec:
    """One adapter to load: the name requests use, and where PEFT finds it."""

    name: str
    source: str


def parse_adapter_specs(value: str) -> list[AdapterSpec]:
    """``name=path,org/adapter,...`` (TGI's ``--lora-adapters``) as specs.

    Raises:
        ConfigError: an empty name or source, or a name given twice.

    Example:
        >>> [(s.name, s.source) for s in parse_adapter_specs("stem=/a/stem, org/law")]
        [('stem', '/a/stem'), ('org/law', 'org/law')]
    """
    specs: list[AdapterSpec] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, _, source = item.partition("=")
        name, source = name.strip(), (source.strip() if source else name.strip())
        if not name or not source:
            raise ConfigError(
                f"LoRA adapter {item!r}: expected name=path or a hub id (org/adapter)"
            )
        specs.append(AdapterSpec(name, source))
    names = [spec.name for spec in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"LoRA adapter names must be distinct; repeated: {repeated}")
    return specs


def check_adapter_folder(spec: AdapterSpec) -> None:
    """Refuse a local adapter folder PEFT would fail on later, or would unpickle.

    Raises:
        ConfigError: the folder lacks its config or its safetensors weights.
    """
    folder = Path(spec.source).expanduser()
    if not folder.exists() and "/" in spec.source and not spec.source.startswith((".", "/")):
        return  # a hub id: PEFT resolves it
    if not (folder / ADAPTER_CONFIG).is_file():
        raise ConfigError(
            f"LoRA adapter {spec.name!r}: {folder} has no {ADAPTER_CONFIG}; point it at a "
            "folder written by PEFT's save_pretrained (or herd finetune-expert)"
        )
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise ConfigError(
            f"LoRA adapter {spec.name!r}: {folder} has no {ADAPTER_WEIGHTS}; only safetensors "
            "weights are loaded (a pickled adapter_model.bin is refused: save with "
            "safe_serialization=True)"
        )


def attach_adapters(model: Any, specs: list[AdapterSpec]) -> Any:
    """The model with every adapter loaded (a ``PeftModel``), or the model as it was.

    Raises:
        ConfigError: peft is missing, or an adapter does not fit the model.
    """
    if not specs:
        return model
    for spec in specs:
        check_adapter_folder(spec)
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ConfigError("LoRA adapters need peft: pip install 'langchain-herd[lora]'") from exc
    first, *rest = specs
    try:
        peft_model = PeftModel.from_pretrained(
            model, first.source, adapter_name=first.name, is_trainable=False
        )
        for spec in rest:
            peft_model.load_adapter(spec.source, adapter_name=spec.name, is_trainable=False)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise ConfigError(
            f"LoRA adapters {[s.name for s in specs]} do not load onto this model: {exc}; "
            "each must be trained on the served base model"
        ) from exc
    peft_model.eval()
    return peft_model


def loaded_adapters(model: Any) -> tuple[str, ...]:
    """Names of the adapters loaded on ``model`` (none for a plain model)."""
    config: Mapping[str, Any] | None = getattr(model, "peft_config", None)
    return tuple(config) if config else ()


@contextlib.contextmanager
def adapter_in_use(model: Any, name: str | None) -> Iterator[None]:
    """Run with adapter ``name`` active, or with every adapter off for None.

    The caller holds the model lock: the active adapter is model state.
    """
    if not loaded_adapters(model):
        yield
        return
    if name is None:
        with model.disable_adapter():
            yield
        return
    model.set_adapter(name)
    yield
