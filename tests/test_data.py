"""Transition datasets: ``collect``, the on-disk format, ``TransitionWindows`` and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from cwm_rl.cli import main
from cwm_rl.data import (
    META_FILE,
    METRICS_FILE,
    TRANSITIONS_FILE,
    TransitionWindows,
    collect,
    load_dataset,
    load_dataset_meta,
)
from cwm_rl.errors import DataError, InvalidActionError, InvalidArgumentError, UnknownEnvError, UserError

PONG = "cwm/InterventionalPong-v0"
PUSHER = "cwm/Pusher2D-v0"
ARRAYS = ("obs", "action", "reward", "next_obs", "terminated", "truncated", "local_graph", "intervened", "episode")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """Small datasets with short horizons, so there are several complete episodes per sub-env."""
    root = tmp_path_factory.mktemp("data")
    collect(PONG, 400, root / "pong", num_envs=4, seed=3, max_episode_steps=30)
    collect(PUSHER, 300, root / "pusher", num_envs=3, seed=5, max_episode_steps=40)
    return {PONG: root / "pong", PUSHER: root / "pusher"}


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path / TRANSITIONS_FILE) as npz:
        return {k: npz[k] for k in npz.files}


def _rewrite(path: Path, **changes: np.ndarray | None) -> None:
    """Replace (or with ``None`` drop) arrays of a dataset's npz, leaving meta.json as it is."""
    arrays = _arrays(path)
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez_compressed(path / TRANSITIONS_FILE, **arrays)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in (META_FILE, METRICS_FILE, TRANSITIONS_FILE):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


# ---------------------------------------------------------------------------------------------------- collect
@pytest.mark.parametrize(
    "env_id, steps, num_envs, horizon",
    [(PONG, 400, 4, 30), (PUSHER, 300, 3, 40)],
)
def test_collect_counts_dtypes_shapes_and_meta(datasets, env_id, steps, num_envs, horizon):
    path = datasets[env_id]
    assert sorted(p.name for p in path.iterdir()) == [META_FILE, METRICS_FILE, TRANSITIONS_FILE]
    env = gym.make(env_id).unwrapped
    n, d = env.n_slots, env.observation_space.shape[0]
    meta = load_dataset_meta(path)
    assert meta["env_id"] == env_id and meta["format_version"] == 1
    assert meta["slot_names"] == list(env.slot_names)
    assert meta["slot_slices"] == {k: [s.start, s.stop] for k, s in env.slot_slices.items()}
    assert np.array_equal(np.asarray(meta["causal_graph"], dtype=bool), env.causal_graph)
    assert meta["obs_dim"] == d and meta["n_transitions"] == steps and meta["num_envs"] == num_envs
    assert meta["max_episode_steps"] == horizon and meta["policy"] == "random"

    a = load_dataset(path).arrays
    assert set(ARRAYS) <= set(a)
    assert all(len(v) == steps for v in a.values())
    assert a["obs"].dtype == a["next_obs"].dtype == a["reward"].dtype == np.float32
    assert a["obs"].shape == a["next_obs"].shape == (steps, d)
    assert a["local_graph"].dtype == a["intervened"].dtype == a["terminated"].dtype == a["truncated"].dtype == bool
    assert a["local_graph"].shape == (steps, n, n + 1) and a["intervened"].shape == (steps, n)
    if isinstance(env.action_space, gym.spaces.Discrete):
        assert meta["action_space"] == {"kind": "discrete", "n": int(env.action_space.n), "start": 0}
        assert a["action"].dtype == np.int64 and a["action"].shape == (steps,)
    else:
        assert meta["action_space"]["kind"] == "box" and meta["action_space"]["shape"] == [2]
        assert a["action"].dtype == np.float32 and a["action"].shape == (steps, 2)
        assert np.all(np.abs(a["action"]) <= 1)

    # Episode-contiguous: ids 0..E-1 in order, each sub-env's episodes together, timesteps count up from 0.
    ep = a["episode"]
    assert ep[0] == 0 and set(np.diff(ep).tolist()) <= {0, 1} and ep[-1] + 1 == meta["n_episodes"]
    assert np.all(np.diff(a["env_index"]) >= 0) and set(a["env_index"].tolist()) == set(range(num_envs))
    same = ep[1:] == ep[:-1]
    assert np.array_equal(a["next_obs"][:-1][same], a["obs"][1:][same])  # next_obs[t] == obs[t+1] in an episode
    assert np.all(a["timestep"][1:][same] == a["timestep"][:-1][same] + 1)
    assert np.all(a["timestep"][1:][~same] == 0) and a["timestep"][0] == 0
    ends = ~same  # last transition of every episode but the dataset's last
    # Every episode boundary inside one sub-env is a terminal or truncated step; horizons are respected.
    inside_env = ends & (a["env_index"][1:] == a["env_index"][:-1])
    assert np.all((a["terminated"] | a["truncated"])[:-1][inside_env])
    assert not np.any((a["terminated"] | a["truncated"])[:-1][same])
    assert a["timestep"].max() < horizon and np.all(a["truncated"] == (a["timestep"] == horizon - 1))
    # Local graphs lie inside the global graph; intervened slots have no parents.
    assert not np.any(a["local_graph"] & ~env.causal_graph)
    assert not np.any(a["intervened"] & a["local_graph"].any(axis=2))


def test_stored_transitions_match_single_envs(datasets):
    """Sub-env i is a single env reset with seed + i: replay its stored actions and compare everything."""
    for env_id, seed in ((PONG, 3), (PUSHER, 5)):
        a = load_dataset(datasets[env_id]).arrays
        meta = load_dataset_meta(datasets[env_id])
        for i in (0, 1):
            rows = np.flatnonzero(a["env_index"] == i)
            env = gym.make(env_id, max_episode_steps=meta["max_episode_steps"])
            obs, _ = env.reset(seed=seed + i)
            for r in rows:  # every episode of sub-env i, across autoresets
                assert np.array_equal(a["obs"][r], obs)
                action = a["action"][r]
                obs, reward, terminated, truncated, info = env.step(action)
                assert np.array_equal(a["next_obs"][r], obs)
                assert a["reward"][r] == np.float32(reward)
                assert (a["terminated"][r], a["truncated"][r]) == (terminated, truncated)
                assert np.array_equal(a["local_graph"][r], info["local_graph"])
                assert np.array_equal(a["intervened"][r], info["intervened"])
                if terminated or truncated:
                    obs, _ = env.reset()
            env.close()


def test_metrics_are_deterministic_per_seed(tmp_path, datasets):
    kw = {"num_envs": 4, "max_episode_steps": 30}
    r1 = collect(PONG, 400, tmp_path / "a", seed=3, **kw)
    assert (tmp_path / "a" / METRICS_FILE).read_bytes() == (datasets[PONG] / METRICS_FILE).read_bytes()
    collect(PONG, 400, tmp_path / "b", seed=4, **kw)
    assert (tmp_path / "a" / METRICS_FILE).read_bytes() != (tmp_path / "b" / METRICS_FILE).read_bytes()
    m = json.loads((tmp_path / "a" / METRICS_FILE).read_text())
    assert m == r1.metrics
    a = load_dataset(tmp_path / "a").arrays
    assert m["transitions"] == 400 and m["episodes"] == a["episode"][-1] + 1
    assert m["mean_reward"] == pytest.approx(float(a["reward"].mean()), abs=1e-6)
    assert m["intervention_rate"] == pytest.approx(float(a["intervened"].any(axis=1).mean()), abs=1e-6)
    assert np.allclose(m["edge_frequency"], a["local_graph"].mean(axis=0), atol=1e-6)
    assert 0 < m["intervention_rate"] < 0.5  # Pong intervenes with p = 0.15


def test_callable_policy_and_env_kwargs(tmp_path):
    def always_up(obs: np.ndarray) -> np.ndarray:
        return np.full(len(obs), 2, dtype=np.int64)

    r = collect(PONG, 50, tmp_path / "d", policy=always_up, num_envs=2, env_kwargs={"intervention_prob": 0.0})
    a = load_dataset(r.path).arrays
    assert np.all(a["action"] == 2) and not a["intervened"].any()
    assert r.meta["policy"] == "always_up" and r.meta["env_kwargs"] == {"intervention_prob": 0.0}

    def bad(obs: np.ndarray) -> np.ndarray:
        return np.full(len(obs), 7, dtype=np.int64)

    with pytest.raises(InvalidActionError, match="out of range"):
        collect(PONG, 50, tmp_path / "e", policy=bad, num_envs=2)
    assert not (tmp_path / "e").exists()


def test_refusing_to_overwrite_keeps_files_byte_identical(tmp_path, datasets):
    out = _copy(datasets[PONG], tmp_path / "ds")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DataError, match="already exists and is not empty.*overwrite"):
        collect(PONG, 20, out, num_envs=2)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["collect", "--env", PONG, "--steps", "20", "--out", str(out)]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    collect(PONG, 20, out, num_envs=2, overwrite=True)
    assert load_dataset_meta(out)["n_transitions"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary directories left behind

    # A non-empty directory that is not a dataset is never replaced, even with overwrite.
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not a cwm-rl dataset"):
        collect(PONG, 20, other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    # An empty directory is fine.
    (tmp_path / "empty").mkdir()
    collect(PONG, 20, tmp_path / "empty", num_envs=2)
    assert load_dataset_meta(tmp_path / "empty")["n_transitions"] == 20


# ---------------------------------------------------------------------------------------------------- windows
@pytest.mark.parametrize("env_id", [PONG, PUSHER])
@pytest.mark.parametrize("window, stride", [(16, 1), (5, 3), (1, 1)])
def test_windows_count_boundaries_and_tensors(datasets, env_id, window, stride):
    ds = TransitionWindows(datasets[env_id], window, stride=stride, env_id=env_id)
    a = load_dataset(datasets[env_id]).arrays
    _, lengths = np.unique(a["episode"], return_counts=True)
    expected = sum(len(range(0, ln - window + 1, stride)) for ln in lengths if ln >= window)
    assert len(ds) == expected > 0
    env = gym.make(env_id).unwrapped
    n, d = env.n_slots, env.observation_space.shape[0]
    assert ds.env_id == env_id and ds.obs_dim == d and ds.slot_names == env.slot_names
    assert ds.slot_slices == env.slot_slices and np.array_equal(ds.causal_graph, env.causal_graph)
    assert ds.n_transitions == len(a["obs"]) and ds.n_episodes == len(lengths)
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    for i in (0, len(ds) // 2, len(ds) - 1, -1):
        item = ds[i]
        assert item["obs"].shape == item["next_obs"].shape == (window, d) and item["obs"].dtype == torch.float32
        assert item["reward"].shape == (window,) and item["reward"].dtype == torch.float32
        assert item["terminated"].dtype == torch.bool and item["terminated"].shape == (window,)
        assert item["local_graph"].shape == (window, n, n + 1) and item["local_graph"].dtype == torch.bool
        assert item["intervened"].shape == (window, n) and item["intervened"].dtype == torch.bool
        if discrete:
            assert item["action"].shape == (window,) and item["action"].dtype == torch.int64
        else:
            assert item["action"].shape == (window, 2) and item["action"].dtype == torch.float32
        # Inside one episode: consecutive observations chain, and only the last step may end the episode.
        assert torch.equal(item["next_obs"][:-1], item["obs"][1:])
        assert not (item["terminated"][:-1] | item["truncated"][:-1]).any()
    # No window crosses an episode: its start and end carry the same episode id.
    starts = ds._starts
    assert np.array_equal(a["episode"][starts], a["episode"][starts + window - 1])
    with pytest.raises(IndexError):
        ds[len(ds)]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["obs"].shape == (min(4, len(ds)), window, d)


def test_window_matches_the_stored_arrays(datasets):
    ds = TransitionWindows(datasets[PONG], 8, stride=8)
    a = load_dataset(datasets[PONG]).arrays
    item = ds[3]
    start = int(ds._starts[3])
    for k in ("obs", "action", "reward", "next_obs", "local_graph", "intervened"):
        assert np.array_equal(item[k].numpy(), a[k][start : start + 8])


# ---------------------------------------------------------------------------------------------------- bad input
def test_data_from_another_env(datasets):
    with pytest.raises(DataError, match=f"from {PONG}, not {PUSHER}"):
        TransitionWindows(datasets[PONG], 4, env_id=PUSHER)
    with pytest.raises(DataError, match=f"from {PUSHER}, not {PONG}"):
        load_dataset_meta(datasets[PUSHER], env_id=PONG)
    TransitionWindows(datasets[PONG], 4, env_id="cwm_rl:" + PONG)  # the module-prefixed id is the same env


def test_window_longer_than_every_episode(datasets):
    with pytest.raises(DataError, match=r"window=31: the longest has 30 transitions; use window <= 30"):
        TransitionWindows(datasets[PONG], 31)
    with pytest.raises(InvalidArgumentError, match="window=0"):
        TransitionWindows(datasets[PONG], 0)
    with pytest.raises(InvalidArgumentError, match="stride=-1"):
        TransitionWindows(datasets[PONG], 4, stride=-1)


def _corrupt_cases(n: int, d: int) -> list[tuple[str, dict, str]]:
    """(name, npz changes, expected message) for a Pong dataset with ``n`` transitions."""
    return [
        ("nan_obs", {"obs": lambda a: _set(a, "obs", (5, 2), np.nan)}, "obs contains NaN or inf"),
        ("inf_next", {"next_obs": lambda a: _set(a, "next_obs", (7, 0), np.inf)}, "next_obs contains NaN or inf"),
        ("nan_reward", {"reward": lambda a: _set(a, "reward", (3,), np.nan)}, "reward contains NaN or inf"),
        ("obs_dim", {"obs": lambda a: a["obs"][:, :-1]}, f"obs has shape {(n, d - 1)}, expected {(n, d)}"),
        ("short", {"action": lambda a: a["action"][:-1]}, "arrays have different lengths"),
        ("graph", {"local_graph": lambda a: a["local_graph"][:, :, :-1]}, "local_graph has shape"),
        ("float_graph", {"local_graph": lambda a: a["local_graph"].astype(np.float32)}, "expected a bool array"),
        ("missing", {"intervened": lambda a: None}, "lack the arrays ['intervened']"),
        ("action", {"action": lambda a: a["action"] + 5}, "outside the action space"),
        ("episodes", {"episode": lambda a: a["episode"][::-1].copy() % 2}, "not contiguous"),
    ]


def _set(a: dict[str, np.ndarray], key: str, index: tuple, value: float) -> np.ndarray:
    arr = a[key].copy()
    arr[index] = value
    return arr


@pytest.mark.parametrize("case", range(10))
def test_corrupt_arrays_raise_one_clear_error(tmp_path, datasets, case):
    meta = load_dataset_meta(datasets[PONG])
    name, changes, message = _corrupt_cases(meta["n_transitions"], meta["obs_dim"])[case]
    path = _copy(datasets[PONG], tmp_path / name)
    arrays = _arrays(path)
    _rewrite(path, **{k: f(arrays) for k, f in changes.items()})
    with pytest.raises(DataError) as info:
        TransitionWindows(path, 4)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_meta_mismatches(tmp_path, datasets):
    def with_meta(name: str, **changes) -> Path:
        path = _copy(datasets[PONG], tmp_path / name)
        meta = json.loads((path / META_FILE).read_text())
        meta.update(changes)
        (path / META_FILE).write_text(json.dumps(meta))
        return path

    with pytest.raises(DataError, match="the slot slices cover 8 observation entries but obs_dim is 9"):
        load_dataset(with_meta("dim", obs_dim=9))
    with pytest.raises(DataError, match="meta.json says 401 transitions but the arrays hold 400"):
        load_dataset(with_meta("count", n_transitions=401))
    with pytest.raises(DataError, match="format version 99"):
        load_dataset(with_meta("version", format_version=99))
    with pytest.raises(DataError, match="causal_graph has shape"):
        load_dataset(with_meta("graph", causal_graph=[[1, 0]]))
    with pytest.raises(DataError, match="expected .400, 2. .* action space box"):
        load_dataset(with_meta("space", action_space={"kind": "box", "shape": [2], "low": [-1, -1], "high": [1, 1]}))


def test_empty_dataset(tmp_path, datasets):
    path = _copy(datasets[PONG], tmp_path / "empty")
    _rewrite(path, **{k: v[:0] for k, v in _arrays(path).items()})
    with pytest.raises(DataError, match=r"empty \(0 transitions\)"):
        TransitionWindows(path, 4)


def test_missing_and_corrupt_files(tmp_path, datasets):
    with pytest.raises(DataError, match="does not exist"):
        TransitionWindows(tmp_path / "nowhere")
    (tmp_path / "bare").mkdir()
    with pytest.raises(DataError, match="meta.json is missing"):
        TransitionWindows(tmp_path / "bare")

    path = _copy(datasets[PONG], tmp_path / "trunc")
    data = (path / TRANSITIONS_FILE).read_bytes()
    (path / TRANSITIONS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        TransitionWindows(path)
    (path / TRANSITIONS_FILE).write_bytes(b"")
    with pytest.raises(DataError, match="truncated or corrupt"):
        TransitionWindows(path)
    (path / TRANSITIONS_FILE).unlink()
    with pytest.raises(DataError, match="transitions.npz is missing"):
        TransitionWindows(path)

    path = _copy(datasets[PONG], tmp_path / "json")
    (path / META_FILE).write_text('{"format_version": 1, "env_id": ')
    with pytest.raises(DataError, match="not valid JSON"):
        load_dataset_meta(path)
    (path / META_FILE).write_text('{"format_version": 1}')
    with pytest.raises(DataError, match="lacks"):
        load_dataset_meta(path)

    # The meta file or the npz itself may be given instead of the directory.
    assert len(TransitionWindows(datasets[PONG] / META_FILE, 4)) == len(TransitionWindows(datasets[PONG], 4))


def test_bad_collect_arguments(tmp_path):
    out = tmp_path / "x"
    with pytest.raises(InvalidArgumentError, match="steps=0 must be a positive integer"):
        collect(PONG, 0, out)
    with pytest.raises(InvalidArgumentError, match="num_envs=-2 must be a positive integer"):
        collect(PONG, 10, out, num_envs=-2)
    with pytest.raises(InvalidArgumentError, match="seed=-1"):
        collect(PONG, 10, out, seed=-1)
    with pytest.raises(UnknownEnvError, match="unknown env id 'cwm/Nope-v0'"):
        collect("cwm/Nope-v0", 10, out)
    with pytest.raises(InvalidArgumentError, match=r"has no argument\(s\) \['speed'\]"):
        collect(PONG, 10, out, env_kwargs={"speed": 3})
    with pytest.raises(InvalidArgumentError, match="intervention_prob"):
        collect(PONG, 10, out, env_kwargs={"intervention_prob": 1.5})
    with pytest.raises(InvalidArgumentError, match="max_episode_steps=0"):
        collect(PONG, 10, out, max_episode_steps=0)
    with pytest.raises(InvalidArgumentError, match="unknown policy 'greedy'"):
        collect(PONG, 10, out, policy="greedy")
    with pytest.raises(InvalidArgumentError, match="not a cwm_rl causal env"):
        collect("CartPole-v1", 10, out)
    with pytest.raises(DataError, match="is a file"):
        (tmp_path / "f").write_text("x")
        collect(PONG, 10, tmp_path / "f")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_collect_json_and_summary(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["collect", "--env", PONG, "--steps", "64", "--num-envs", "4", "--out", str(out)]
    assert main([*argv, "--seed", "2", "--kwarg", "intervention_prob=0.5", "--max-episode-steps", "10", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics == json.loads((out / METRICS_FILE).read_text())
    assert metrics["transitions"] == 64 and metrics["seed"] == 2 and metrics["episodes"] >= 4
    meta = load_dataset_meta(out)
    assert meta["env_kwargs"] == {"intervention_prob": 0.5} and meta["max_episode_steps"] == 10
    assert main([*argv, "--overwrite"]) == 0
    text = capsys.readouterr().out
    assert "collected 64 transitions" in text and str(out) in text


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "0"], "steps=0"),
        (["--steps", "10", "--num-envs", "0"], "num_envs=0"),
        (["--steps", "10", "--kwarg", "speed=3"], "has no argument(s) ['speed']"),
        (["--steps", "10", "--kwarg", "intervention_prob=2"], "intervention_prob"),
        (["--steps", "10", "--kwarg", "novalue"], "key=value"),
        (["--steps", "10", "--policy", "expert"], "unknown policy 'expert'"),
    ],
)
def test_cli_collect_errors_are_one_line(tmp_path, capsys, extra, message):
    assert main(["collect", "--env", PONG, "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cwm-rl collect: error: ") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_unknown_env(tmp_path, capsys):
    assert main(["collect", "--env", "cwm/Nope-v0", "--steps", "5", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown env id 'cwm/Nope-v0'" in err and len(err.splitlines()) == 1


def test_errors_are_user_errors():
    assert issubclass(DataError, UserError) and issubclass(DataError, ValueError)
