"""Typed configs: overrides, YAML round trips, and one clear error per bad key or type."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cwm_rl.config import ConfigError, apply_overrides, from_dict, load_yaml, save_yaml, to_dict


@dataclass
class Inner:
    width: int = 8
    kind: str = "hard"
    extra_kwargs: dict | None = None


@dataclass
class Outer:
    lr: float = 1e-3
    steps: int = 10
    name: str = ""
    flag: bool = False
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)
    kwargs: dict = field(default_factory=dict)


def test_overrides_and_round_trip(tmp_path):
    cfg = apply_overrides(Outer(), {"lr": 1, "inner.width": 32, "limit": None, "inner.extra_kwargs": {"a": 1}})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.inner.width == 32
    assert Outer().inner.width == 8  # the default is untouched
    save_yaml(cfg, tmp_path / "config.yaml")
    again = load_yaml(Outer, tmp_path / "config.yaml")
    assert again == cfg and to_dict(again)["inner"] == {"width": 32, "kind": "hard", "extra_kwargs": {"a": 1}}
    assert from_dict(Outer, {"inner": {"kind": "soft"}}).inner.kind == "soft"


def test_dotted_keys_reach_into_free_form_mappings():
    base = Outer(kwargs={"n_steps": 8, "policy_kwargs": {"net_arch": [4]}})
    cfg = apply_overrides(base, {"kwargs.n_steps": 32, "kwargs.policy_kwargs.net_arch": [8, 8], "kwargs.new.a": 1})
    assert cfg.kwargs == {"n_steps": 32, "policy_kwargs": {"net_arch": [8, 8]}, "new": {"a": 1}}
    assert base.kwargs["n_steps"] == 8  # the original is untouched
    with pytest.raises(ConfigError, match="'n_steps' holds 8, not a mapping"):
        apply_overrides(base, {"kwargs.n_steps.x": 1})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lrr": 0.1}, "unknown config key 'lrr'; did you mean 'lr'?"),
        ({"inner.widht": 3}, "did you mean 'inner.width'?"),
        ({"steps": 2.5}, "steps=2.5 must be an integer"),
        ({"steps": True}, "must be an integer"),
        ({"flag": "yes"}, "must be true or false"),
        ({"lr": "fast"}, "must be a number"),
        ({"lr.x": 1}, "is not a section"),
        ({"limit": "none"}, "must be an integer"),
    ],
)
def test_bad_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        apply_overrides(Outer(), overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(Outer, tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("lr: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(Outer, tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(Outer, tmp_path / "list.yaml")
    (tmp_path / "unknown.yaml").write_text("inner:\n  depth: 3\n")
    with pytest.raises(ConfigError, match="unknown.yaml: unknown config key 'inner.depth'"):
        load_yaml(Outer, tmp_path / "unknown.yaml")
