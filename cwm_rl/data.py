"""Transition datasets: collecting them from a causal env, the on-disk format, and fixed-length windows.

:func:`collect` rolls a policy out in an env's natively batched vector env and writes a dataset directory
(``meta.json``, ``transitions.npz``, ``metrics.json``; the format is documented in ``docs/data_format.md``).
:class:`TransitionWindows` serves fixed-length windows of it, never crossing an episode boundary, as a
``torch.utils.data.Dataset``. Every problem a user can cause (a missing or corrupt file, data from another env,
NaN, an empty dataset, a window longer than every episode) raises :class:`~cwm_rl.errors.DataError` with one line
that says what is wrong.

Transitions are stored **episode-contiguous**: all transitions of sub-env 0 in time order, then sub-env 1, and so
on, so each sub-env's data is a prefix of what a single env reset with ``seed + i`` produces. Autoreset steps of
the vector env (``info["_local_graph"]`` False) are not transitions and are skipped.
"""

from __future__ import annotations

import json
import numbers
import os
import secrets
import shutil
import sys
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch.utils.data import Dataset

from cwm_rl.causal import edge_frequency
from cwm_rl.envs import CausalVectorEnv, check_env_kwargs, spec_of
from cwm_rl.errors import DataError, InvalidArgumentError

FORMAT_NAME = "cwm-rl-transitions"
FORMAT_VERSION = 1
META_FILE = "meta.json"
METRICS_FILE = "metrics.json"
TRANSITIONS_FILE = "transitions.npz"

# Per-transition arrays every dataset has; ``env_index`` and ``timestep`` are optional extras written by collect.
REQUIRED_ARRAYS = (
    "obs",
    "action",
    "reward",
    "next_obs",
    "terminated",
    "truncated",
    "local_graph",
    "intervened",
    "episode",
)
OPTIONAL_ARRAYS = ("env_index", "timestep")
_FINITE_ARRAYS = ("obs", "next_obs", "reward", "action")
_REQUIRED_META = (
    "format_version",
    "env_id",
    "slot_names",
    "slot_slices",
    "causal_graph",
    "obs_dim",
    "action_space",
    "n_transitions",
    "n_episodes",
)

Policy = Callable[[np.ndarray], Any]
"""A batched policy: ``(num_envs, obs_dim)`` float32 observations -> a batch of actions for the vector env."""


def _random_policy(venv: gym.vector.VectorEnv, seed: int) -> Policy:
    venv.action_space.seed(seed)
    return lambda obs: venv.action_space.sample()


# Named policies: name -> factory(vector_env, seed) -> batched policy. Add learned policies here.
POLICIES: dict[str, Callable[[gym.vector.VectorEnv, int], Policy]] = {"random": _random_policy}


class CollectResult(NamedTuple):
    """What :func:`collect` returns: where the dataset is, and the contents of its ``meta.json``/``metrics.json``."""

    path: Path
    meta: dict[str, Any]
    metrics: dict[str, Any]


class LoadedDataset(NamedTuple):
    """A validated dataset: its directory, ``meta.json`` contents, and the per-transition numpy arrays."""

    path: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


# ---------------------------------------------------------------------------------------------------- collection
def collect(
    env_id: str,
    steps: int,
    out_dir: str | os.PathLike[str],
    *,
    policy: str | Policy = "random",
    seed: int = 0,
    num_envs: int = 16,
    env_kwargs: Mapping[str, Any] | None = None,
    max_episode_steps: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> CollectResult:
    """Roll a policy out in the env's batched vector env and write a transition dataset to ``out_dir``.

    Args:
        env_id: a registered causal env id (``"module:Name-v0"`` imports ``module`` first).
        steps: total number of real transitions to store, summed over the sub-envs.
        out_dir: dataset directory; created (with its parents) if needed, written atomically.
        policy: ``"random"`` (uniform actions from the seeded action space) or a callable mapping a
            ``(num_envs, obs_dim)`` observation batch to an action batch.
        seed: sub-env ``i`` is reset with ``seed + i``; also seeds the random policy.
        num_envs: sub-environments stepped together.
        env_kwargs: env constructor arguments (overriding the registered ones).
        max_episode_steps: truncation horizon; default: the registered one.
        overwrite: replace an existing dataset at ``out_dir``. A non-empty directory that is not a dataset is never
            replaced.
        progress: show a tqdm progress bar on stderr (only when stderr is a terminal).

    Returns:
        A :class:`CollectResult` with the dataset path and the ``meta.json`` and ``metrics.json`` contents.

    Raises:
        InvalidArgumentError: bad ``steps``, ``num_envs``, ``seed``, policy or env keyword.
        UnknownEnvError: ``env_id`` is not registered.
        DataError: ``out_dir`` exists and is not empty (without ``overwrite``), or is not a dataset.
    """
    import time

    _check_positive_int("steps", steps, "the number of transitions to store")
    _check_positive_int("num_envs", num_envs, "the number of sub-environments")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise InvalidArgumentError(f"seed={seed!r} must be a non-negative integer")
    kwargs = dict(env_kwargs or {})
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"env_kwargs {kwargs!r} must be JSON-serialisable (numbers, strings, booleans, lists) "
            "to be recorded in meta.json"
        ) from None
    out = Path(out_dir)
    _check_destination(out, overwrite)

    start = time.perf_counter()
    venv, spec_id = make_vector_env(env_id, num_envs, kwargs, max_episode_steps)
    try:
        policy_fn, policy_name = _resolve_policy(policy, venv, int(seed))
        arrays = _rollout(venv, policy_fn, int(steps), int(seed), progress=progress, desc=spec_id)
        meta = _build_meta(venv, spec_id, kwargs, arrays, int(seed), int(num_envs), policy_name)
    finally:
        venv.close()
    # The env is trusted but not blindly: a dataset that could not be loaded back is never written.
    _validate(meta, arrays, where=f"data collected from {spec_id}")
    meta["wall_time_s"] = round(time.perf_counter() - start, 3)
    metrics = _metrics(meta, arrays)
    _write_dataset(out, meta, arrays, metrics, overwrite)
    return CollectResult(out, meta, metrics)


def save_transitions(
    out_dir: str | os.PathLike[str],
    env_id: str,
    arrays: Mapping[str, np.ndarray],
    *,
    policy: str,
    seed: int,
    num_envs: int,
    env_kwargs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> CollectResult:
    """Write transitions gathered elsewhere (an agent's replay buffer) as a dataset, in the format ``collect``
    writes, so ``wm-train --data`` and ``TransitionWindows`` read them like collected data.

    ``arrays`` holds the rows of docs/data_format.md (the required arrays, episode-contiguous). The env is made
    once to describe itself (slots, graph, spaces); ``policy`` says where the transitions came from.

    Raises:
        DataError: ``out_dir`` is taken (as for ``collect``), or the arrays do not form a valid dataset.
    """
    kwargs = dict(env_kwargs or {})
    out = Path(out_dir)
    _check_destination(out, overwrite)
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    venv, spec_id = make_vector_env(env_id, 1, kwargs)
    try:
        meta = _build_meta(venv, spec_id, kwargs, arrays, int(seed), int(num_envs), policy)
    finally:
        venv.close()
    _validate(meta, arrays, where=f"transitions of {policy} on {spec_id}")
    metrics = _metrics(meta, arrays)
    _write_dataset(out, meta, arrays, metrics, overwrite)
    return CollectResult(out, meta, metrics)


def _check_positive_int(name: str, value: Any, what: str) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise InvalidArgumentError(f"{name}={value!r} must be a positive integer ({what})")


def make_vector_env(
    env_id: str, num_envs: int, kwargs: dict[str, Any], max_episode_steps: int | None = None
) -> tuple[CausalVectorEnv, str]:
    """The natively batched vector env of a registered causal env (one-line errors for bad ids and kwargs).

    Returns the unwrapped :class:`CausalVectorEnv` (NEXT_STEP autoreset: the step after an episode's end is a
    reset step, flagged by ``info["_local_graph"]`` False) and the resolved env id.
    """
    spec = spec_of(env_id)
    if "max_episode_steps" in kwargs:
        raise InvalidArgumentError(
            "pass the horizon as max_episode_steps (--max-episode-steps), not as an env keyword argument"
        )
    check_env_kwargs(spec.id, kwargs)
    if spec.vector_entry_point is None:
        raise InvalidArgumentError(
            f"{spec.id} has no natively batched vector env (vector_entry_point); collect needs a cwm_rl CausalEnv "
            "registered with register_causal_env"
        )
    make_kwargs = dict(kwargs)
    if max_episode_steps is not None:
        make_kwargs["max_episode_steps"] = max_episode_steps
    try:
        venv = gym.make_vec(spec.id, num_envs=int(num_envs), vectorization_mode="vector_entry_point", **make_kwargs)
    except gym.error.Error as e:
        raise InvalidArgumentError(f"cannot make {spec.id}: {e}") from None
    causal = venv.unwrapped if hasattr(venv, "unwrapped") else venv
    if not isinstance(causal, CausalVectorEnv):
        venv.close()
        raise InvalidArgumentError(
            f"{spec.id} is registered but is not a cwm_rl causal env (it reports no slots or local graphs)"
        )
    return causal, spec.id


def _resolve_policy(policy: str | Policy, venv: gym.vector.VectorEnv, seed: int) -> tuple[Policy, str]:
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise InvalidArgumentError(f"unknown policy {policy!r}; available: {sorted(POLICIES)}")
        return POLICIES[policy](venv, seed), policy
    if callable(policy):
        return policy, getattr(policy, "__name__", type(policy).__name__)
    raise InvalidArgumentError(
        f"policy must be one of {sorted(POLICIES)} or a callable obs_batch -> action_batch, got {type(policy).__name__}"
    )


def _rollout(
    venv: CausalVectorEnv, policy: Policy, steps: int, seed: int, *, progress: bool, desc: str
) -> dict[str, np.ndarray]:
    """Step the vector env until ``steps`` real transitions are stored; return them episode-contiguous."""
    from tqdm import tqdm

    n = venv.num_envs
    discrete = isinstance(venv.single_action_space, spaces.Discrete)
    obs, _ = venv.reset(seed=seed)
    timestep = np.zeros(n, dtype=np.int64)
    episode = np.zeros(n, dtype=np.int64)  # episodes finished so far, per sub-env
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in (*REQUIRED_ARRAYS, *OPTIONAL_ARRAYS)}
    remaining = steps
    bar = tqdm(
        total=steps,
        desc=f"collect {desc}",
        unit="transition",
        file=sys.stderr,
        disable=not (progress and sys.stderr.isatty()),
        dynamic_ncols=True,
    )
    with bar:
        while remaining > 0:
            action = policy(obs)
            next_obs, reward, terminated, truncated, info = venv.step(action)
            action = np.asarray(action)
            valid = np.array(info["_local_graph"], dtype=bool)  # False on autoreset steps: not a transition
            if valid.sum() > remaining:  # the last step: keep the lowest sub-envs so each sub-env stays a prefix
                valid[np.flatnonzero(valid)[remaining:]] = False
            chunks["obs"].append(np.asarray(obs, dtype=np.float32)[valid])
            chunks["action"].append(action[valid].astype(np.int64 if discrete else np.float32))
            chunks["reward"].append(np.asarray(reward)[valid].astype(np.float32))
            chunks["next_obs"].append(np.asarray(next_obs, dtype=np.float32)[valid])
            chunks["terminated"].append(np.asarray(terminated, dtype=bool)[valid])
            chunks["truncated"].append(np.asarray(truncated, dtype=bool)[valid])
            chunks["local_graph"].append(np.asarray(info["local_graph"], dtype=bool)[valid])
            chunks["intervened"].append(np.asarray(info["intervened"], dtype=bool)[valid])
            chunks["episode"].append(episode[valid])
            chunks["env_index"].append(np.flatnonzero(valid))
            chunks["timestep"].append(timestep[valid])
            done = valid & (np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool))
            timestep = np.where(done, 0, timestep + valid)
            episode = episode + done
            obs = next_obs
            k = int(valid.sum())
            remaining -= k
            bar.update(k)

    arrays = {k: np.concatenate(v) for k, v in chunks.items()}
    # Stable sort by sub-env: each sub-env's transitions stay in time order, so episodes are contiguous.
    order = np.argsort(arrays["env_index"], kind="stable")
    arrays = {k: v[order] for k, v in arrays.items()}
    env_index, local_episode = arrays["env_index"], arrays["episode"]
    new_episode = np.ones(len(env_index), dtype=bool)
    new_episode[1:] = (env_index[1:] != env_index[:-1]) | (local_episode[1:] != local_episode[:-1])
    arrays["episode"] = (np.cumsum(new_episode) - 1).astype(np.int32)
    arrays["env_index"] = env_index.astype(np.int32)
    arrays["timestep"] = arrays["timestep"].astype(np.int32)
    return arrays


def _action_space_meta(space: spaces.Space[Any]) -> dict[str, Any]:
    if isinstance(space, spaces.Discrete):
        return {"kind": "discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Box):
        return {
            "kind": "box",
            "shape": list(space.shape),
            "low": np.asarray(space.low, dtype=np.float64).tolist(),
            "high": np.asarray(space.high, dtype=np.float64).tolist(),
            "dtype": str(space.dtype),
        }
    raise TypeError(f"unsupported action space {space!r}")  # internal: causal envs use Discrete or Box


def _build_meta(
    venv: CausalVectorEnv,
    env_id: str,
    env_kwargs: dict[str, Any],
    arrays: dict[str, np.ndarray],
    seed: int,
    num_envs: int,
    policy: str,
) -> dict[str, Any]:
    from cwm_rl import __version__

    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "env_id": env_id,
        "env_kwargs": json.loads(json.dumps(env_kwargs)),  # tuples -> lists, as they will read back
        "max_episode_steps": venv.max_episode_steps,
        "slot_names": list(venv.slot_names),
        "slot_slices": {name: [sl.start, sl.stop] for name, sl in venv.slot_slices.items()},
        "causal_graph": np.asarray(venv.causal_graph, dtype=int).tolist(),
        "obs_dim": int(venv.single_observation_space.shape[0]),
        "action_space": _action_space_meta(venv.single_action_space),
        "n_transitions": len(arrays["obs"]),
        "n_episodes": int(arrays["episode"][-1]) + 1 if len(arrays["episode"]) else 0,
        "num_envs": num_envs,
        "seed": seed,
        "policy": policy,
        "files": [TRANSITIONS_FILE],
        "arrays": {k: {"dtype": str(v.dtype), "shape": list(v.shape[1:])} for k, v in arrays.items()},
        "cwm_rl_version": __version__,
    }


def _metrics(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Summary numbers of a dataset; deterministic for a given seed (no timings)."""
    episode = arrays["episode"]
    last = np.r_[episode[1:] != episode[:-1], True]  # last transition of each episode
    ended = arrays["terminated"][last] | arrays["truncated"][last]
    lengths = np.diff(np.r_[0, np.flatnonzero(last) + 1])
    graphs = arrays["local_graph"]
    intervened = arrays["intervened"]

    def r(x: float) -> float:
        return round(float(x), 6)

    return {
        "env_id": meta["env_id"],
        "policy": meta["policy"],
        "seed": meta["seed"],
        "num_envs": meta["num_envs"],
        "transitions": int(len(episode)),
        "episodes": int(last.sum()),
        "complete_episodes": int(ended.sum()),
        "mean_episode_length": r(lengths.mean()),
        "mean_reward": r(arrays["reward"].astype(np.float64).mean()),
        "terminated_rate": r(arrays["terminated"].mean()),
        "intervention_rate": r(intervened.any(axis=1).mean()),
        "slot_intervention_rate": {
            name: r(v) for name, v in zip(meta["slot_names"], intervened.mean(axis=0), strict=True)
        },
        "mean_local_edges": r(graphs.sum(axis=(1, 2)).mean()),
        "edge_frequency": np.round(edge_frequency(graphs), 6).tolist(),
    }


# ---------------------------------------------------------------------------------------------------- writing
def _check_destination(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file, not a directory; choose another output directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataError(
                f"{out} already exists and is not empty; pass overwrite=True (--overwrite) to replace the dataset "
                "there, or choose another directory"
            )
        if not (out / META_FILE).is_file():
            raise DataError(
                f"{out} is not empty and holds no {META_FILE}, so it is not a cwm-rl dataset; refusing to replace it "
                "even with overwrite — choose another directory"
            )


def _write_dataset(
    out: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray], metrics: dict[str, Any], overwrite: bool
) -> None:
    """Write the files into a sibling temporary directory, then rename it into place: readers never see half."""
    _check_destination(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    os.mkdir(tmp)  # not mkdtemp: its 0o700 mode would stick to the dataset directory
    try:
        np.savez_compressed(tmp / TRANSITIONS_FILE, **arrays)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        old: Path | None = None
        if out.is_dir():
            if any(out.iterdir()):  # an existing dataset, and overwrite was checked above
                old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
                os.replace(out, old)
            else:
                out.rmdir()
        try:
            os.replace(tmp, out)
        except OSError:
            if old is not None:
                os.replace(old, out)
            raise
        tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- reading
def _dataset_dir(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.is_file() and (p.name == META_FILE or p.suffix == ".npz"):
        p = p.parent
    if not p.exists():
        raise DataError(
            f"no dataset at {p}: the directory does not exist; create one with "
            f"`cwm-rl collect --env ID --steps N --out {p}`"
        )
    if not p.is_dir():
        raise DataError(f"{p} is not a dataset directory (expected a directory holding {META_FILE})")
    return p


def _normalise_id(env_id: str) -> str:
    return env_id.split(":", 1)[1] if ":" in env_id else env_id


def load_dataset_meta(path: str | os.PathLike[str], *, env_id: str | None = None) -> dict[str, Any]:
    """Read and check a dataset's ``meta.json`` (no arrays are loaded).

    Args:
        path: the dataset directory (or its ``meta.json``).
        env_id: if given, the env the data must come from.

    Raises:
        DataError: missing or invalid ``meta.json``, unsupported format version, or data from another env.
    """
    root = _dataset_dir(path)
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise DataError(f"{root} is not a cwm-rl dataset: {META_FILE} is missing (re-run `cwm-rl collect`)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(
            f"{meta_path} is not valid JSON ({e}); the dataset is corrupt, re-run `cwm-rl collect`"
        ) from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path} does not hold a JSON object; the dataset is corrupt, re-run `cwm-rl collect`")
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise DataError(f"{meta_path} lacks {missing}; the dataset is corrupt or not a cwm-rl dataset")
    if meta["format_version"] != FORMAT_VERSION:
        raise DataError(
            f"{root} has data format version {meta['format_version']!r}; this cwm-rl reads version {FORMAT_VERSION} "
            "(re-collect it with `cwm-rl collect`)"
        )
    _check_meta(meta, str(meta_path))
    if env_id is not None and _normalise_id(env_id) != _normalise_id(str(meta["env_id"])):
        raise DataError(
            f"{root} holds data from {meta['env_id']}, not {_normalise_id(env_id)}; "
            f"collect data for {_normalise_id(env_id)} or pass the matching env id"
        )
    return meta


def _check_meta(meta: dict[str, Any], where: str) -> None:
    """Internal consistency of ``meta.json``: slots, slices, graph and action space."""
    names = meta["slot_names"]
    if not isinstance(names, list) or not names or not all(isinstance(s, str) for s in names):
        raise DataError(f"{where}: slot_names must be a non-empty list of strings")
    slices = meta["slot_slices"]
    obs_dim = meta["obs_dim"]
    if not isinstance(obs_dim, int) or obs_dim < 1:
        raise DataError(f"{where}: obs_dim={obs_dim!r} must be a positive integer")
    if not isinstance(slices, dict) or list(slices) != names:
        raise DataError(f"{where}: slot_slices must name the slots {names} in order")
    stop = 0
    for name in names:
        sl = slices[name]
        if not (isinstance(sl, list) and len(sl) == 2 and all(isinstance(v, int) for v in sl)) or sl[0] != stop:
            raise DataError(f"{where}: slot_slices[{name!r}]={sl!r} must be [start, stop] continuing from {stop}")
        if sl[1] <= sl[0]:
            raise DataError(f"{where}: slot_slices[{name!r}]={sl!r} is empty")
        stop = sl[1]
    if stop != obs_dim:
        raise DataError(f"{where}: the slot slices cover {stop} observation entries but obs_dim is {obs_dim}")
    try:
        graph = np.asarray(meta["causal_graph"])
    except ValueError:
        graph = np.zeros(0)
    n = len(names)
    if graph.shape != (n, n + 1):
        raise DataError(f"{where}: causal_graph has shape {graph.shape}, expected {(n, n + 1)} for {n} slots")
    space = meta["action_space"]
    kind = space.get("kind") if isinstance(space, dict) else None
    if kind == "discrete":
        if not isinstance(space.get("n"), int) or space["n"] < 1:
            raise DataError(f"{where}: action_space.n must be a positive integer, got {space.get('n')!r}")
    elif kind == "box":
        if not isinstance(space.get("shape"), list):
            raise DataError(f"{where}: action_space.shape must be a list, got {space.get('shape')!r}")
    else:
        raise DataError(f"{where}: action_space must have kind 'discrete' or 'box', got {space!r}")


def _safe_file_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise DataError(f"{where}: files must list plain file names in the dataset directory, got {name!r}")
    return name


def load_dataset(path: str | os.PathLike[str], *, env_id: str | None = None) -> LoadedDataset:
    """Load and validate a dataset directory written by :func:`collect`.

    Args:
        path: the dataset directory (or a file in it).
        env_id: if given, the env the data must come from.

    Returns:
        A :class:`LoadedDataset` (path, meta, arrays).

    Raises:
        DataError: any problem with the files: missing, corrupt, inconsistent shapes, NaN/inf, empty, another env.
    """
    meta = load_dataset_meta(path, env_id=env_id)
    root = _dataset_dir(path)
    names = meta.get("files", [TRANSITIONS_FILE])
    if not isinstance(names, list) or not names:
        raise DataError(f"{root / META_FILE}: files must be a non-empty list of .npz file names")
    parts: list[dict[str, np.ndarray]] = []
    for name in names:
        parts.append(_load_npz(root / _safe_file_name(name, str(root / META_FILE))))
    keys = set(parts[0])
    for name, part in zip(names[1:], parts[1:], strict=True):
        if set(part) != keys:
            raise DataError(f"{root / name} holds arrays {sorted(part)}, but {names[0]} holds {sorted(keys)}")
    arrays = {k: parts[0][k] if len(parts) == 1 else _concat(parts, k, root) for k in parts[0]}
    _validate(meta, arrays, where=str(root))
    return LoadedDataset(root, meta, arrays)


def _load_npz(file: Path) -> dict[str, np.ndarray]:
    if not file.is_file():
        raise DataError(f"{file} is missing; the dataset is incomplete, re-run `cwm-rl collect`")
    try:
        loaded = np.load(file, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as npz:
                return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(
            f"cannot read {file}: {type(e).__name__}: {e} — the file is truncated or corrupt; re-run `cwm-rl collect`"
        ) from None
    raise DataError(f"{file} holds a single .npy array, not an .npz archive of named arrays; re-run `cwm-rl collect`")


def _concat(parts: list[dict[str, np.ndarray]], key: str, root: Path) -> np.ndarray:
    try:
        return np.concatenate([p[key] for p in parts])
    except ValueError:
        raise DataError(f"{root}: the shards' {key!r} arrays have different shapes or dtypes") from None


def _validate(meta: dict[str, Any], arrays: dict[str, np.ndarray], *, where: str) -> None:
    """Check every array against the others and against ``meta``; raise :class:`DataError` on the first problem."""
    missing = [k for k in REQUIRED_ARRAYS if k not in arrays]
    if missing:
        raise DataError(f"{where}: the transitions lack the arrays {missing}")
    n_rows = {k: int(v.shape[0]) if v.ndim else -1 for k, v in arrays.items()}
    if len(set(n_rows.values())) != 1:
        raise DataError(f"{where}: the arrays have different lengths: {n_rows}")
    n_trans = n_rows["obs"]
    if n_trans == 0 or meta["n_transitions"] == 0:
        raise DataError(f"{where}: the dataset is empty (0 transitions); collect some with `cwm-rl collect`")
    if meta["n_transitions"] != n_trans:
        raise DataError(f"{where}: meta.json says {meta['n_transitions']} transitions but the arrays hold {n_trans}")
    n, d = len(meta["slot_names"]), meta["obs_dim"]
    space = meta["action_space"]
    discrete = space["kind"] == "discrete"
    expected: dict[str, tuple[tuple[int, ...], str]] = {
        "obs": ((n_trans, d), "f"),
        "next_obs": ((n_trans, d), "f"),
        "reward": ((n_trans,), "f"),
        "terminated": ((n_trans,), "b"),
        "truncated": ((n_trans,), "b"),
        "local_graph": ((n_trans, n, n + 1), "b"),
        "intervened": ((n_trans, n), "b"),
        "episode": ((n_trans,), "iu"),
        "action": ((n_trans,) if discrete else (n_trans, *space["shape"]), "iu" if discrete else "f"),
        "env_index": ((n_trans,), "iu"),
        "timestep": ((n_trans,), "iu"),
    }
    kind_names = {"f": "floating-point", "b": "bool", "iu": "integer"}
    for key, (shape, kinds) in expected.items():
        if key not in arrays:
            continue
        arr = arrays[key]
        if arr.shape != shape:
            raise DataError(
                f"{where}: {key} has shape {arr.shape}, expected {shape} "
                f"(obs_dim={d}, {n} slots, action space {space['kind']})"
            )
        if arr.dtype.kind not in kinds:
            raise DataError(f"{where}: {key} has dtype {arr.dtype}, expected a {kind_names[kinds]} array")
    for key in _FINITE_ARRAYS:
        arr = arrays[key]
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise DataError(
                f"{where}: {key} contains NaN or inf (first at transition {int(bad[0])}); the data is corrupt"
            )
    if discrete:
        action, start = arrays["action"], space.get("start", 0)
        if action.min() < start or action.max() >= start + space["n"]:
            raise DataError(
                f"{where}: action values span [{action.min()}, {action.max()}], outside the action space "
                f"[{start}, {start + space['n'] - 1}]"
            )
    episode = arrays["episode"]
    boundaries = np.flatnonzero(episode[1:] != episode[:-1])
    n_episodes = len(boundaries) + 1
    if len(np.unique(episode)) != n_episodes:
        raise DataError(f"{where}: episodes are not contiguous (an episode id occurs in more than one block)")
    if meta["n_episodes"] != n_episodes:
        raise DataError(f"{where}: meta.json says {meta['n_episodes']} episodes but the arrays hold {n_episodes}")


# ---------------------------------------------------------------------------------------------------- windows
class TransitionWindows(Dataset):
    """Fixed-length windows of a transition dataset, each inside one episode, as a ``torch`` dataset.

    Item ``i`` is a dict of tensors for ``T = window`` consecutive transitions of one episode:

    * ``obs`` ``(T, D)`` float32, ``next_obs`` ``(T, D)`` float32 (the observation after each step);
    * ``action`` ``(T,)`` int64 (discrete) or ``(T, A)`` float32 (box);
    * ``reward`` ``(T,)`` float32, ``terminated`` / ``truncated`` ``(T,)`` bool;
    * ``local_graph`` ``(T, n, n + 1)`` bool, ``intervened`` ``(T, n)`` bool.

    Windows start every ``stride`` transitions within an episode; episodes shorter than ``window`` give none.

    Args:
        path_or_dir: the dataset directory written by :func:`collect` (or a file in it).
        window: transitions per window.
        stride: distance between the starts of consecutive windows of one episode.
        env_id: if given, the env the data must come from (checked against ``meta.json``).

    Raises:
        DataError: the dataset is missing, corrupt, from another env, empty, or has no episode of ``window``
            transitions.
    """

    def __init__(
        self,
        path_or_dir: str | os.PathLike[str],
        window: int = 16,
        *,
        stride: int = 1,
        env_id: str | None = None,
    ) -> None:
        _check_positive_int("window", window, "transitions per window")
        _check_positive_int("stride", stride, "distance between window starts")
        data = load_dataset(path_or_dir, env_id=env_id)
        self.path = data.path
        self.meta = data.meta
        self.window = int(window)
        self.stride = int(stride)
        arrays = data.arrays
        episode = arrays["episode"]
        starts = np.r_[0, np.flatnonzero(episode[1:] != episode[:-1]) + 1]
        lengths = np.diff(np.r_[starts, len(episode)])
        self.episode_starts = starts
        self.episode_lengths = lengths
        longest = int(lengths.max())
        if longest < self.window:
            raise DataError(
                f"no episode in {self.path} is long enough for window={self.window}: the longest has {longest} "
                f"transitions; use window <= {longest}, or collect longer episodes"
            )
        self._starts = np.concatenate(
            [
                s + np.arange(0, ln - self.window + 1, self.stride)
                for s, ln in zip(starts, lengths, strict=True)
                if ln >= self.window
            ]
        ).astype(np.int64)
        discrete = self.meta["action_space"]["kind"] == "discrete"
        self._tensors = {
            "obs": torch.from_numpy(np.ascontiguousarray(arrays["obs"], dtype=np.float32)),
            "action": torch.from_numpy(
                np.ascontiguousarray(arrays["action"], dtype=np.int64 if discrete else np.float32)
            ),
            "reward": torch.from_numpy(np.ascontiguousarray(arrays["reward"], dtype=np.float32)),
            "next_obs": torch.from_numpy(np.ascontiguousarray(arrays["next_obs"], dtype=np.float32)),
            "terminated": torch.from_numpy(np.ascontiguousarray(arrays["terminated"], dtype=bool)),
            "truncated": torch.from_numpy(np.ascontiguousarray(arrays["truncated"], dtype=bool)),
            "local_graph": torch.from_numpy(np.ascontiguousarray(arrays["local_graph"], dtype=bool)),
            "intervened": torch.from_numpy(np.ascontiguousarray(arrays["intervened"], dtype=bool)),
        }

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"TransitionWindows indices must be integers, not {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"window index {index} is out of range for {len(self)} windows")
        start = int(self._starts[index])
        stop = start + self.window
        # Clones, not views: a view would share (and, in DataLoader workers, ship) the whole dataset's storage.
        return {k: v[start:stop].clone() for k, v in self._tensors.items()}

    @property
    def transitions(self) -> dict[str, torch.Tensor]:
        """Every stored transition as tensors (the arrays windows are cut from); treat as read-only."""
        return self._tensors

    @property
    def window_episodes(self) -> np.ndarray:
        """Episode index (0-based, in storage order) of each window, for splitting by episode."""
        return np.searchsorted(self.episode_starts, self._starts, side="right") - 1

    # ------------------------------------------------------------------ what the data is about
    @property
    def env_id(self) -> str:
        """Id of the env the data came from."""
        return str(self.meta["env_id"])

    @property
    def slot_names(self) -> tuple[str, ...]:
        """Slot names, in observation order."""
        return tuple(self.meta["slot_names"])

    @property
    def slot_slices(self) -> dict[str, slice]:
        """Slot name -> slice of the flat observation."""
        return {k: slice(int(a), int(b)) for k, (a, b) in self.meta["slot_slices"].items()}

    @property
    def causal_graph(self) -> np.ndarray:
        """The env's global causal graph, bool ``(n_slots, n_slots + 1)``."""
        return np.asarray(self.meta["causal_graph"], dtype=bool)

    @property
    def n_slots(self) -> int:
        """Number of slots."""
        return len(self.meta["slot_names"])

    @property
    def obs_dim(self) -> int:
        """Width of the flat observation."""
        return int(self.meta["obs_dim"])

    @property
    def action_space(self) -> dict[str, Any]:
        """The action space from ``meta.json``: ``kind`` and ``n``/``start`` or ``shape``/``low``/``high``."""
        return dict(self.meta["action_space"])

    @property
    def discrete_actions(self) -> bool:
        """Whether actions are integers (a ``Discrete`` space)."""
        return self.meta["action_space"]["kind"] == "discrete"

    @property
    def n_transitions(self) -> int:
        """Transitions in the dataset (windows overlap, so this is not ``len(self) * window``)."""
        return int(self.meta["n_transitions"])

    @property
    def n_episodes(self) -> int:
        """Episodes in the dataset, including those shorter than the window."""
        return len(self.episode_lengths)

    def __repr__(self) -> str:
        return (
            f"TransitionWindows({str(self.path)!r}, window={self.window}, stride={self.stride}: {len(self)} windows "
            f"from {self.n_transitions} transitions of {self.env_id})"
        )
