"""Property-based tests (hypothesis) of every registered causal env, single and natively batched.

For random seeds, constructor kwargs drawn within their documented ranges and action sequences drawn from the
action space (bounds included), every step must give finite observations inside the observation space, a finite
reward, bool ``terminated``/``truncated``, a bool local graph of the global graph's shape that is a subset of the
global graph, intervened slots without parents, and no exception; ``get_state``/``set_state`` must replay a step.

The documented ranges live in one table, :data:`KWARG_STRATEGIES` (env class -> kwarg -> strategy), copied from
the ``## Arguments`` section of each env's docstring. :func:`test_kwarg_table_covers_the_constructor` fails when an
env's ``__init__`` gains (or loses) a keyword, so the table cannot go stale. The tests are parametrised over
:func:`cwm_rl.envs.causal_env_ids`, so a newly registered env (and every ``-OOD`` twin) is covered at once; an env
class missing from the table is still run with its registered kwargs, and the table test names it.

Examples are derandomized (a fixed seed, no example database), so CI runs the same cases every time. The
regression tests at the end pin the kwarg-range bugs the properties found.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cwm_rl.envs import CausalEnv, causal_env_ids, spec_of
from cwm_rl.envs.chemistry import ChemistryEnv
from cwm_rl.envs.pong import InterventionalPongEnv
from cwm_rl.envs.pusher2d import Pusher2DEnv
from cwm_rl.envs.weighted_blocks import WeightedBlocksEnv
from cwm_rl.errors import InvalidArgumentError

ENV_IDS = causal_env_ids()

MAX_STEPS = 64  # single env: actions per example
MAX_VECTOR_STEPS = 40  # vector env: steps per example, each with one action per sub-environment
MAX_NUM_ENVS = 3

# Derandomized (fixed seed, no example database): CI runs the same examples every time. Health checks on slow or
# large draws are off: this machine is shared, and an env with a wide Box action just gets shorter sequences.
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------------- documented kwarg ranges
# A table entry is either a strategy for the kwarg (independent of the others), or a function of the kwargs drawn so
# far (defaults and registered kwargs included) that returns one, for ranges that depend on another kwarg. A plain
# strategy is drawn as "the registered value, or a value from the strategy", so shrinking returns to the registered
# env; a function decides itself whether the registered value is still valid.
KwargEntry = st.SearchStrategy | Callable[[dict[str, Any]], st.SearchStrategy]

PROBABILITY = st.floats(0.0, 1.0)  # float in [0, 1]
OPTIONAL_PROBABILITY = st.none() | PROBABILITY  # float in [0, 1] or None
POSITIVE = st.floats(0.0, exclude_min=True, allow_infinity=False)  # float > 0 (unbounded above: huge values too)
NON_NEGATIVE = st.floats(0.0, allow_infinity=False)  # float >= 0
SEED = st.integers(min_value=0)  # int >= 0
FLOAT32_TINY = float(np.finfo(np.float32).smallest_subnormal)  # about 1.4e-45, the smallest positive float32
FLOAT32_MAX = float(np.finfo(np.float32).max)  # about 3.4e38


def _or_current(kw: dict[str, Any], name: str, strategy: st.SearchStrategy, *, valid: bool = True) -> st.SearchStrategy:
    """The kwarg's current (registered or default) value first, when it is still valid, else ``strategy`` only."""
    return st.just(kw[name]) | strategy if valid else strategy


def _blocks_n_objects(kw: dict[str, Any]) -> st.SearchStrategy:
    # int in [2, 8], and at most grid_size**2 / 2
    cap = kw["grid_size"] ** 2 // 2
    return _or_current(kw, "n_objects", st.integers(2, min(8, cap)), valid=kw["n_objects"] <= cap)


def _blocks_weights(kw: dict[str, Any]) -> st.SearchStrategy:
    # n_objects numbers in [1.4e-45, 3.4e38], distinct as float32, default None
    n = kw["n_objects"]
    weights = st.lists(st.floats(FLOAT32_TINY, FLOAT32_MAX), min_size=n, max_size=n, unique_by=np.float32)
    strategy = st.none() | weights.map(tuple)
    return _or_current(kw, "weights", strategy, valid=kw["weights"] is None or len(kw["weights"]) == n)


def _blocks_weight_seed(kw: dict[str, Any]) -> st.SearchStrategy:
    # int >= 0, default None; weights and weight_seed are exclusive
    if kw["weights"] is not None:
        return st.none()
    return _or_current(kw, "weight_seed", st.none() | SEED)


KWARG_STRATEGIES: dict[type[CausalEnv], dict[str, KwargEntry]] = {
    InterventionalPongEnv: {
        "intervention_prob": PROBABILITY,
        # names from the slots
        "intervention_targets": st.lists(
            st.sampled_from(("left_paddle", "right_paddle", "ball", "score")), min_size=1, unique=True
        ).map(tuple),
        "paddle_max_step": POSITIVE,  # float > 0
        "paddle_noise": NON_NEGATIVE,  # float >= 0
        "ball_speed": st.floats(FLOAT32_TINY, 4.0),  # float in [1.4e-45, 4]
        "winning_score": st.integers(1, 99),  # int in [1, 99]
    },
    ChemistryEnv: {
        "n_objects": st.integers(2, 12),  # int in [2, 12]
        "n_colours": st.integers(2, 10),  # int in [2, 10]
        "graph": st.sampled_from(("chain", "collider", "full", "random")),
        "graph_seed": SEED,  # int >= 0
        "local_rule": st.booleans(),
        "intervention_prob": PROBABILITY,
        "start_context_prob": OPTIONAL_PROBABILITY,
        "target_context_prob": OPTIONAL_PROBABILITY,
        "random_start": st.booleans(),
    },
    WeightedBlocksEnv: {
        "grid_size": st.integers(3, 12),  # int in [3, 12]
        "n_objects": _blocks_n_objects,
        "weights": _blocks_weights,
        "weight_seed": _blocks_weight_seed,
        "intervention_prob": PROBABILITY,
    },
    Pusher2DEnv: {
        "agent_gain": st.floats(0.0, 0.05, exclude_min=True),  # float in (0, 0.05]
        "agent_damping": st.floats(0.0, 1.0),  # float in [0, 1]
        "agent_max_speed": st.floats(0.0, 0.1, exclude_min=True),  # float in (0, 0.1]
        "box_mass": st.floats(0.1, 10.0),  # float in [0.1, 10]
        "box_friction": st.floats(0.0, 1.0),  # float in [0, 1]
        "distractor_speed": st.floats(0.0, 0.1),  # float in [0, 0.1]
        "distractor_noise": st.floats(0.0, 0.5),  # float in [0, 0.5]
        "n_distractors": st.integers(0, 4),  # int in [0, 4]
        "goal_radius": st.floats(0.01, 0.2),  # float in [0.01, 0.2]
        "success_bonus": st.floats(0.0, 100.0),  # float in [0, 100]
    },
}


def _env_class(env_id: str) -> type:
    entry = spec_of(env_id).entry_point
    return gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry


def _constructor_kwargs(cls: type) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {
        name: p
        for name, p in params.items()
        if name not in ("self", "render_mode") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


ENV_CLASSES = sorted({_env_class(env_id) for env_id in ENV_IDS}, key=lambda cls: cls.__name__)


def _strategy(kw: dict[str, Any], name: str, entry: KwargEntry) -> st.SearchStrategy:
    return _or_current(kw, name, entry) if isinstance(entry, st.SearchStrategy) else entry(kw)


@st.composite
def env_kwargs(draw: st.DrawFn, env_id: str) -> dict[str, Any]:
    """Constructor kwargs for ``env_id``: its registered kwargs, each table kwarg possibly redrawn in range."""
    cls = _env_class(env_id)
    kw = {name: p.default for name, p in _constructor_kwargs(cls).items() if p.default is not p.empty}
    kw.update(spec_of(env_id).kwargs)
    for name, entry in KWARG_STRATEGIES.get(cls, {}).items():
        kw[name] = draw(_strategy(kw, name, entry))
    return kw


def action_strategy(space: gym.Space) -> st.SearchStrategy:
    """One action of ``space``: every Discrete value; Box floats within the bounds, the exact bounds included."""
    if isinstance(space, gym.spaces.Discrete):
        return st.integers(int(space.start), int(space.start + space.n - 1)).map(np.int64)
    if isinstance(space, gym.spaces.Box):
        width = 32 if space.dtype == np.float32 else 64
        components = [
            st.floats(
                float(lo) if np.isfinite(lo) else None,
                float(hi) if np.isfinite(hi) else None,
                allow_nan=False,
                allow_infinity=False,
                width=width,
            )
            for lo, hi in zip(space.low.ravel(), space.high.ravel(), strict=True)
        ]
        return st.tuples(*components).map(lambda xs: np.array(xs, dtype=space.dtype).reshape(space.shape))
    raise TypeError(f"no action strategy for {space!r}")  # pragma: no cover (suite envs use Discrete or Box)


HORIZON = st.none() | st.integers(1, MAX_STEPS)  # max_episode_steps: registered, or short to exercise truncation


# ---------------------------------------------------------------------- per-step checks
def _check_observation(obs: np.ndarray, space: gym.spaces.Box, where: str) -> None:
    assert isinstance(obs, np.ndarray) and obs.dtype == space.dtype and obs.shape == space.shape, where
    assert np.all(np.isfinite(obs)), f"{where}: non-finite observation at {np.argwhere(~np.isfinite(obs)).tolist()}"
    if not space.contains(obs):
        bad = (obs < space.low) | (obs > space.high)
        raise AssertionError(
            f"{where}: observation outside the observation space at {np.argwhere(bad).tolist()}: "
            f"{obs[bad].tolist()} not in [{space.low[bad].tolist()}, {space.high[bad].tolist()}]"
        )


def _check_graphs(local_graph: np.ndarray, intervened: np.ndarray, causal_graph: np.ndarray, where: str) -> None:
    """``local_graph`` (..., n, n + 1) and ``intervened`` (..., n) for one or several transitions."""
    n = causal_graph.shape[0]
    assert local_graph.dtype == bool and local_graph.shape[-2:] == causal_graph.shape, where
    assert intervened.dtype == bool and intervened.shape == (*local_graph.shape[:-2], n), where
    outside = local_graph & ~causal_graph
    assert not outside.any(), f"{where}: local edges outside the global graph at {np.argwhere(outside).tolist()}"
    assert not local_graph[intervened].any(), f"{where}: an intervened slot has parents"


def _check_single_step(causal: CausalEnv, out: tuple, where: str) -> None:
    obs, reward, terminated, truncated, info = out
    _check_observation(obs, causal.observation_space, where)
    assert isinstance(reward, (float, int, np.floating, np.integer)), f"{where}: reward {reward!r}"
    assert math.isfinite(reward), f"{where}: reward {reward}"
    assert type(terminated) is bool and type(truncated) is bool, f"{where}: {terminated!r}, {truncated!r}"
    _check_graphs(info["local_graph"], info["intervened"], causal.causal_graph, where)


# ---------------------------------------------------------------------- the properties
def test_kwarg_table_covers_every_registered_env():
    missing = [cls.__name__ for cls in ENV_CLASSES if cls not in KWARG_STRATEGIES]
    assert not missing, f"add the documented kwarg ranges of {missing} to KWARG_STRATEGIES"


@pytest.mark.parametrize("cls", ENV_CLASSES, ids=lambda cls: cls.__name__)
def test_kwarg_table_covers_the_constructor(cls):
    """The table lists exactly the constructor's keywords (render_mode aside): a new keyword must get a range."""
    accepted = set(_constructor_kwargs(cls))
    table = set(KWARG_STRATEGIES.get(cls, {}))
    assert accepted == table, (
        f"{cls.__name__}.__init__ keywords without a documented range in KWARG_STRATEGIES: {sorted(accepted - table)}; "
        f"table keywords the constructor no longer takes: {sorted(table - accepted)}"
    )


@pytest.mark.parametrize("env_id", ENV_IDS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_single_env_properties(env_id, data):
    kwargs = data.draw(env_kwargs(env_id), label="kwargs")
    horizon = data.draw(HORIZON, label="max_episode_steps")
    env = gym.make(env_id, **kwargs, **({} if horizon is None else {"max_episode_steps": horizon}))
    causal = env.unwrapped
    assert isinstance(causal, CausalEnv)
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    n_steps = data.draw(st.integers(1, MAX_STEPS), label="n_steps")
    actions = data.draw(st.lists(action_strategy(env.action_space), min_size=n_steps, max_size=n_steps), "actions")
    replay_at = data.draw(st.integers(0, n_steps - 1), label="replay_at")

    obs, _ = env.reset(seed=seed)
    _check_observation(obs, causal.observation_space, "reset")
    for t, action in enumerate(actions):
        if t == replay_at:
            before = causal.get_state()
        out = env.step(action)
        _check_single_step(causal, out, f"step {t}")
        if t == replay_at:  # the same state and action give the same transition, graphs included
            after = causal.get_state()
            causal.set_state(before)
            again = causal.step(action)
            assert np.array_equal(again[0], out[0]) and again[1] == out[1] and again[2] == out[2], f"replay of {t}"
            assert np.array_equal(again[4]["local_graph"], out[4]["local_graph"]), f"replay of step {t}"
            assert np.array_equal(again[4]["intervened"], out[4]["intervened"]), f"replay of step {t}"
            causal.set_state(after)
        if out[2] or out[3]:
            obs, _ = env.reset()
            _check_observation(obs, causal.observation_space, f"reset after step {t}")
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_vector_env_properties(env_id, data):
    kwargs = data.draw(env_kwargs(env_id), label="kwargs")
    horizon = data.draw(HORIZON, label="max_episode_steps")
    num_envs = data.draw(st.integers(1, MAX_NUM_ENVS), label="num_envs")
    extra = {} if horizon is None else {"max_episode_steps": horizon}
    venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs, **extra)
    graph = venv.unwrapped.causal_graph
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    n_steps = data.draw(st.integers(1, MAX_VECTOR_STEPS), label="n_steps")
    batch = st.lists(action_strategy(venv.single_action_space), min_size=num_envs, max_size=num_envs).map(np.stack)
    actions = data.draw(st.lists(batch, min_size=n_steps, max_size=n_steps), label="actions")

    obs, _ = venv.reset(seed=seed)
    _check_observation(obs, venv.observation_space, "reset")
    for t, action in enumerate(actions):
        obs, reward, terminated, truncated, info = venv.step(action)
        where = f"step {t}"
        _check_observation(obs, venv.observation_space, where)
        assert reward.shape == (num_envs,) and np.all(np.isfinite(reward)), f"{where}: rewards {reward}"
        valid = info["_local_graph"]
        for name, flags in (("terminated", terminated), ("truncated", truncated), ("_local_graph", valid)):
            assert flags.dtype == bool and flags.shape == (num_envs,), f"{where}: {name} {flags!r}"
        assert info["local_graph"].shape == (num_envs, *graph.shape), where
        _check_graphs(info["local_graph"][valid], info["intervened"][valid], graph, where)
    venv.close()


# ---------------------------------------------------------------------- regressions found by the properties above
# Each was a kwarg inside the documented range that the float32 observation could not represent.
@pytest.mark.parametrize(
    "weights",
    [
        (1.0, 2.0, 3.4028235677973366e38),  # above the largest float32: observed (and bounded) as inf
        (1e-300, 2e-300),  # below the smallest positive float32: both observed as 0, Box low == high
        (1.0, 1.0000000001),  # distinct as float64, equal as float32: equal-looking weights, Box low == high
    ],
)
def test_weighted_blocks_weights_must_be_distinct_positive_float32(weights):
    with pytest.raises(InvalidArgumentError, match="weights"):
        WeightedBlocksEnv(n_objects=len(weights), weights=weights)


def test_weighted_blocks_weights_at_the_documented_bounds_work():
    env = WeightedBlocksEnv(weights=(FLOAT32_TINY, 2.0, FLOAT32_MAX))
    obs, _ = env.reset(seed=0)
    assert np.all(np.isfinite(env.observation_space.high)) and np.all(np.isfinite(obs))
    assert np.all(env.observation_space.low < env.observation_space.high) and obs in env.observation_space


def test_pong_kwarg_ranges_are_the_documented_ones():
    """winning_score was documented as int >= 1 but capped at 99; ball_speed < 1.4e-45 gave float32 bounds [0, 0]."""
    assert "``winning_score`` (int in [1, 99]" in InterventionalPongEnv.__doc__
    assert "``ball_speed`` (float in [1.4e-45, 4]" in InterventionalPongEnv.__doc__
    for ok in ({"winning_score": 1}, {"winning_score": 99}, {"ball_speed": FLOAT32_TINY}, {"ball_speed": 4.0}):
        env = InterventionalPongEnv(**ok)
        assert np.all(env.observation_space.low < env.observation_space.high)
    for bad in ({"winning_score": 0}, {"winning_score": 100}, {"ball_speed": 1e-46}, {"ball_speed": 4.5}):
        with pytest.raises(InvalidArgumentError, match=next(iter(bad))):
            InterventionalPongEnv(**bad)
