"""Typed configs: dataclasses, YAML files and ``--set key=value`` overrides; unknown keys and bad types are errors.

Every command that trains or evaluates resolves one dataclass config, writes it to ``RUN_DIR/config.yaml`` and
can be re-run from that file. Nested dataclasses are addressed with dotted keys (``--set slot.d_model=32``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from cwm_rl.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A config file or override has an unknown key or a value of the wrong type."""


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict (nested dataclasses become dicts, tuples become lists) ready for YAML or JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build ``cls`` from ``data``, checking every key and type; missing keys keep their defaults."""
    return apply_overrides(cls(), flatten(data or {}, where), where=where)


def apply_overrides(cfg: T, overrides: dict[str, Any], where: str = "--set") -> T:
    """Return a copy of ``cfg`` with dotted-key ``overrides`` applied (``{"slot.d_model": 32}``)."""
    cfg = _deepcopy(cfg)
    for key, value in overrides.items():
        target, name = cfg, key
        parts = key.split(".")
        for i, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(target)]
            if part not in names:
                prefix = ".".join(parts[:i])
                known = [f"{prefix}.{n}" if prefix else n for n in names]
                hint = difflib.get_close_matches(key, known, n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(known)}"
                raise ConfigError(f"{where}: unknown config key {key!r}{suggestion}")
            if i < len(parts) - 1:
                child = getattr(target, part)
                if isinstance(child, dict):  # a free-form mapping (e.g. sb3_kwargs): the rest of the key is its key
                    _set_nested(child, parts[i + 1 :], value, f"{where}: {key}")
                    break
                target = child
                if not dataclasses.is_dataclass(target):
                    raise ConfigError(f"{where}: {'.'.join(parts[: i + 1])!r} is not a section; cannot set {key!r}")
            name = part
        else:
            hints = typing.get_type_hints(type(target))
            setattr(target, name, _coerce(value, hints[name], f"{where}: {key}"))
    return cfg


def _set_nested(mapping: dict[str, Any], keys: list[str], value: Any, what: str) -> None:
    """``mapping[k0][k1]... = value``, creating inner mappings (the owner of the mapping validates its values)."""
    for key in keys[:-1]:
        inner = mapping.get(key)
        mapping = mapping.setdefault(key, {}) if inner is None else inner
        if not isinstance(mapping, dict):
            raise ConfigError(f"{what}: {key!r} holds {mapping!r}, not a mapping; set {key!r} as a whole")
    mapping[keys[-1]] = value


def _read_yaml(path: Path, what: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML config file's mapping as written (an empty file is ``{}``), before any key is checked."""
    path = Path(path)
    data = _read_yaml(path, "config file")
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys to values")
    return data or {}


def load_yaml(cls: type[T], path: str | os.PathLike[str]) -> T:
    """Read a YAML config file into ``cls`` (errors name the file and the key)."""
    return from_dict(cls, read_yaml_mapping(path), where=str(path))


def load_env_table(path: str | os.PathLike[str], what: str = "hyperparameter file") -> dict[str, dict[str, Any]]:
    """Read an rl-zoo style per-env YAML table: a ``default`` entry plus one mapping per env id."""
    path = Path(path)
    table = _read_yaml(path, what)
    if not isinstance(table, dict) or "default" not in table:
        raise ConfigError(f"{what} {str(path)!r} must be a mapping of env ids with a 'default' entry")
    for key, entry in table.items():
        if not isinstance(entry, dict) and entry is not None:
            raise ConfigError(f"{path} [{key}]: must be a mapping of hyperparameters, got {entry!r}")
    return {key: dict(entry or {}) for key, entry in table.items()}


def env_table_key(table: dict[str, Any], env_id: str) -> str | None:
    """The key of ``env_id``'s entry in a per-env table: the id itself, else its in-distribution twin (``-OOD``
    removed), so an OOD env trains like its base env; None if neither is listed."""
    env_id = env_id.split(":", 1)[-1]  # "module:ns/Name-v0" names the same env
    base_id = re.sub(r"-OOD(?=-v\d+$)", "", env_id)
    for key in (env_id, base_id):
        if key in table and key != "default":
            return key
    return None


def save_yaml(cfg: Any, path: str | os.PathLike[str]) -> None:
    """Write ``cfg`` as YAML atomically (temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    os.replace(tmp, path)


def flatten(data: dict[str, Any], where: str = "config", prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as dotted keys (``{"slot.d_model": 32}``); ``*kwargs`` mappings stay whole."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if not isinstance(k, str):
            raise ConfigError(f"{where}: config keys must be strings, got {k!r}")
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not k.endswith("kwargs"):
            out.update(flatten(v, where, key + "."))
        else:
            out[key] = v
    return out


def _deepcopy(cfg: T) -> T:
    import copy

    return copy.deepcopy(cfg)


def _coerce(value: Any, annotation: Any, what: str) -> Any:
    """Check ``value`` against a field annotation; ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, what)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{what}: {value!r} is not allowed")
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{what}={value!r} must be true or false")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{what}={value!r} must be an integer")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{what}={value!r} must be a number")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{what}={value!r} must be a string")
    if origin in (dict,) or annotation is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{what}={value!r} must be a mapping")
    if origin in (tuple, list) or annotation in (tuple, list):
        if isinstance(value, (list, tuple)):
            return tuple(value) if (origin is tuple or annotation is tuple) else list(value)
        raise ConfigError(f"{what}={value!r} must be a list")
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, dict):
            return from_dict(annotation, value, where=what)
        raise ConfigError(f"{what} must be a section (a mapping)")
    raise TypeError(f"unsupported config annotation {annotation!r}")  # internal: extend _coerce
