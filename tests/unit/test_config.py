"""Herd config loading: valid files, and errors that name the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from langchain_herd import ConfigError, load_config
from langchain_herd.config import parse_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "herd.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def minimal(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "experts": [
            {"name": "a", "url": "http://127.0.0.1:9001", "routes": ["stem"]},
            {"name": "b", "url": "http://127.0.0.1:9002", "protocol": "tgi", "routes": ["other"]},
        ]
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize("name", ["local.yaml", "production-tgi.yaml"])
def test_shipped_configs_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERD_ENDPOINT_TOKEN", "secret-value")
    config = load_config(ROOT / "tgi_configs" / name)
    assert config.experts
    assert config.default_expert in {e.name for e in config.experts}


def test_local_config_has_four_subject_experts() -> None:
    config = load_config(ROOT / "tgi_configs" / "local.yaml")
    assert sorted(config.route_labels()) == ["humanities", "other", "social_sciences", "stem"]
    assert {e.protocol for e in config.experts} == {"tgi", "openai"}
    assert config.local_servers[0].model == "smollm2"


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    data = minimal()
    data["experts"][0]["timout_s"] = 3  # type: ignore[index]
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "experts.0.timout_s" in message
    assert "unknown key" in message


def test_bad_protocol_says_what_is_allowed(tmp_path: Path) -> None:
    data = minimal()
    data["experts"][1]["protocol"] = "grpc"  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"experts.1.protocol: Input should be 'tgi' or 'openai'"):
        load_config(write(tmp_path, data))


def test_url_with_route_suffix_is_rejected() -> None:
    data = minimal()
    data["experts"][0]["url"] = "http://127.0.0.1:9001/generate"  # type: ignore[index]
    with pytest.raises(ConfigError, match="give the server root"):
        parse_config(data)


def test_duplicate_names_and_unknown_default() -> None:
    data = minimal()
    data["experts"][1]["name"] = "a"  # type: ignore[index]
    with pytest.raises(ConfigError, match="repeated"):
        parse_config(data)
    with pytest.raises(ConfigError, match="default_expert 'zzz' is not an expert"):
        parse_config(minimal(fallback={"default_expert": "zzz"}))


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("experts: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_auth_token_from_env_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_TOKEN", "hunter2-very-secret")
    config = parse_config(minimal(auth=[{"token_env": "MY_TOKEN", "experts": ["b"]}]))
    token = config.token_for("b")
    assert token is not None and token.get_secret_value() == "hunter2-very-secret"
    assert config.token_for("a") is None
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.auth)
    assert "hunter2" not in config.model_dump_json()


def test_missing_required_token_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="'MY_TOKEN' is not set"):
        parse_config(minimal(auth=[{"token_env": "MY_TOKEN", "experts": ["b"]}]))
    config = parse_config(
        minimal(auth=[{"token_env": "MY_TOKEN", "experts": ["b"], "required": False}])
    )
    assert config.token_for("b") is None


def test_auth_for_unknown_expert() -> None:
    with pytest.raises(ConfigError, match=r"unknown experts \['zz'\]"):
        parse_config(minimal(auth=[{"token_env": "T", "experts": ["zz"]}]), resolve_secrets=False)


def test_openai_model_defaults() -> None:
    config = parse_config(minimal())
    assert config.expert("a").chat_model_name == "tgi"
    data = minimal()
    data["experts"][0]["adapter_id"] = "org/lora"  # type: ignore[index]
    assert parse_config(data).expert("a").chat_model_name == "org/lora"


@pytest.mark.parametrize(
    ("ensemble", "message"),
    [
        ({"kind": "cascade"}, "cascade needs `scorer`"),
        ({"kind": "vote", "method": "learned"}, "method learned needs `scorer`"),
        (
            {"kind": "cascade", "scorer": "c.json", "threshold": 0.3, "budget": 10},
            "at most one of threshold, escalate_share, budget",
        ),
        ({"kind": "vote", "members": ["a", "zz"]}, r"unknown experts \['zz'\]"),
        ({"kind": "moa", "aggregator": "nobody"}, r"unknown experts \['nobody'\]"),
        ({"kind": "cascade", "scorer": "c.json", "agreement": "judge"}, "needs `judge_expert`"),
        ({"kind": "vote", "layers": 9}, "router.ensemble.layers"),
    ],
)
def test_bad_ensemble_section_says_what_to_fix(
    tmp_path: Path, ensemble: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, minimal(router={"ensemble": ensemble})))


def test_ensemble_section_loads() -> None:
    config = parse_config(
        minimal(
            router={
                "ensemble": {
                    "kind": "vote",
                    "members": ["a", "b"],
                    "method": "weighted",
                    "weights": {"a": 0.6},
                }
            }
        )
    )
    assert config.router.ensemble is not None
    assert config.router.ensemble.experts_named() == ["a", "b", "a"]
    assert parse_config(minimal()).router.ensemble is None
