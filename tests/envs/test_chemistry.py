"""Chemistry-specific behaviour: mechanisms, propagation, the local rule's graphs, rewards, kwargs."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

import cwm_rl.envs  # noqa: F401  (registers the suite)
from cwm_rl.envs.chemistry import ChemistryEnv, _sensitivity
from cwm_rl.errors import InvalidArgumentError

ACTION = -1  # the action column of a local graph


def _env(**kwargs) -> ChemistryEnv:
    env = ChemistryEnv(**kwargs)
    env.reset(seed=0)
    return env


def _set(env: ChemistryEnv, colours, target=None) -> None:
    state = env.get_state()
    state["sim"]["colours"] = np.array([colours], dtype=np.int64)
    if target is not None:
        state["sim"]["target"] = np.array([target], dtype=np.int64)
    env.set_state(state)


def _mechanism(env: ChemistryEnv, j: int, colours) -> int:
    for obj, parents, tables, pidx in env._mechanisms:
        if obj == j:
            return int(env._mechanism(parents, tables, pidx, np.array([colours]))[0])
    raise AssertionError(f"object {j} has no mechanism")


def _parents(graph_row: np.ndarray, n: int) -> set:
    cols = set(np.flatnonzero(graph_row).tolist())
    return {ACTION if c == n + 1 else c for c in cols}


def test_dags_are_topological_and_global_graph_matches():
    for kind in ("chain", "collider", "full", "random"):
        env = ChemistryEnv(n_objects=6, graph=kind, graph_seed=4)
        assert not np.tril(env.dag).any()  # parents have lower indices
    chain = ChemistryEnv(n_objects=4, graph="chain", local_rule=False)
    assert chain.dag.tolist() == [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    collider = ChemistryEnv(n_objects=4, graph="collider")
    assert collider.dag[:3, 3].all() and collider.dag.sum() == 3
    # Global rows: self, action, DAG ancestors, obj0 under the rule; target only itself.
    g = chain.causal_graph
    assert g[3].tolist() == [True, True, True, True, False, True]
    assert g[4].tolist() == [False, False, False, False, True, False]
    g = collider.causal_graph
    assert g[1].tolist() == [False, True, False, False, False, True]  # a root: self and action only
    assert g[3].tolist() == [True, True, True, True, False, True]


def test_every_parent_moves_its_mechanism():
    env = ChemistryEnv(n_objects=4, n_colours=3, graph="full", graph_seed=2)
    for _, parents, tables, _ in env._mechanisms:
        configs = np.array(list(itertools.product(range(3), repeat=len(parents))))
        assert (_sensitivity(tables, configs) > 0).all()


def test_chain_propagates_to_all_descendants():
    env = _env(n_objects=4, n_colours=3, graph="chain", local_rule=False)
    _set(env, [0, 0, 0, 0])
    obs, _, _, _, info = env.step(1 * 3 + 2)  # obj1 <- colour 2
    c2 = _mechanism(env, 2, [0, 2, 0, 0])
    c3 = _mechanism(env, 3, [0, 2, c2, 0])
    assert env._state["colours"][0].tolist() == [0, 2, c2, c3]
    assert obs[:12].reshape(4, 3).argmax(axis=1).tolist() == [0, 2, c2, c3]
    g = info["local_graph"]
    assert _parents(g[0], 4) == {0}
    assert _parents(g[1], 4) == {ACTION}
    assert _parents(g[2], 4) == {ACTION}  # a re-computed child has no self-edge
    assert _parents(g[3], 4) == {ACTION}  # its parent's dependencies, recursively
    assert _parents(g[4], 4) == {4}


def test_full_graph_rows_mix_action_and_untouched_parents():
    env = _env(n_objects=4, n_colours=3, graph="full", local_rule=False)
    _set(env, [1, 2, 0, 1])
    _, _, _, _, info = env.step(2 * 3 + 1)  # obj2 <- colour 1
    assert env._state["colours"][0].tolist() == [1, 2, 1, _mechanism(env, 3, [1, 2, 1, 0])]
    g = info["local_graph"]
    assert _parents(g[2], 4) == {ACTION}
    assert _parents(g[3], 4) == {0, 1, ACTION}
    assert _parents(g[0], 4) == {0} and _parents(g[1], 4) == {1}


def test_rule_on_root_switches_other_parents_off():
    env = _env(n_objects=4, n_colours=3, graph="full")
    # Root is 0: setting obj1 re-computes nothing; obj1's DAG descendants read the root's colour (the switch).
    _set(env, [0, 1, 1, 1])
    _, _, _, _, info = env.step(1 * 3 + 2)
    assert env._state["colours"][0].tolist() == [0, 2, 1, 1]
    g = info["local_graph"]
    assert _parents(g[1], 4) == {ACTION}
    assert _parents(g[2], 4) == {2, 0} and _parents(g[3], 4) == {3, 0}
    # Setting the root to 0 re-computes every non-root object as its rule colour, from the action alone.
    _set(env, [1, 1, 1, 1])
    _, _, _, _, info = env.step(0 * 3 + 0)
    assert env._state["colours"][0].tolist() == [0, *env.rule_colours[1:].tolist()]
    for j in range(4):
        assert _parents(info["local_graph"][j], 4) == {ACTION}


def test_rule_off_root_declares_the_switch():
    env = _env(n_objects=4, n_colours=3, graph="collider")
    # Root set to a colour other than 0: objects 1 and 2 are roots (untouched), obj3 re-computed from the DAG.
    _set(env, [0, 1, 2, 0])
    _, _, _, _, info = env.step(0 * 3 + 2)
    assert env._state["colours"][0].tolist() == [2, 1, 2, _mechanism(env, 3, [2, 1, 2, 0])]
    g = info["local_graph"]
    assert _parents(g[1], 4) == {1} and _parents(g[2], 4) == {2}
    assert _parents(g[3], 4) == {1, 2, ACTION}
    # Root not 0, obj1 set: obj3 is re-computed, and would not have been with the root at 0.
    _set(env, [1, 0, 2, 0])
    _, _, _, _, info = env.step(1 * 3 + 2)
    assert env._state["colours"][0].tolist() == [1, 2, 2, _mechanism(env, 3, [1, 2, 2, 0])]
    assert _parents(info["local_graph"][3], 4) == {0, 2, ACTION}


def test_reward_and_termination():
    env = _env(n_objects=3, n_colours=4, graph="collider", local_rule=False)
    target = [1, 2, _mechanism(env, 2, [1, 2, 0])]
    _set(env, [1, 3, 0], target)
    _, reward, terminated, _, _ = env.step(0 * 4 + 3)  # obj0 <- 3: obj1 still wrong, obj2 re-computed
    expected = np.mean(np.array([3, 3, _mechanism(env, 2, [3, 3, 0])]) == np.array(target))
    assert reward == pytest.approx(expected) and not terminated
    _set(env, [1, 3, 0], target)
    _, reward, terminated, _, _ = env.step(1 * 4 + 2)  # obj1 <- 2 re-computes obj2 to the target
    assert reward == 1.0 and terminated


@pytest.mark.parametrize("kwargs", [{}, {"graph": "chain", "n_objects": 7}, {"graph": "random", "graph_seed": 5}])
def test_targets_are_reachable_in_index_order(kwargs):
    env = ChemistryEnv(**kwargs)
    for seed in range(20):
        env.reset(seed=seed)
        target = env._state["target"][0].copy()
        terminated = (env._state["colours"][0] == target).all()
        for i in range(env.n_objects):
            if terminated:
                break
            _, _, terminated, _, _ = env.step(int(i * env.n_colours + target[i]))
        assert terminated


def test_observation_layout():
    env = _env(n_objects=3, n_colours=4)
    _set(env, [2, 0, 3], [1, 1, 0])
    obs, *_ = env.step(2 * 4 + 3)  # obj2 <- 3 (a leaf: nothing else moves)
    assert obs.shape == (15,) and obs.dtype == np.float32
    assert obs[:12].reshape(3, 4).tolist() == [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    assert obs[12:].tolist() == [1.0, 1.0, 0.0]
    assert env.slot_names == ("obj0", "obj1", "obj2", "target")


def test_interventions_empty_the_row():
    env = _env(intervention_prob=1.0)
    env.action_space.seed(0)
    for _ in range(50):
        _, _, terminated, _, info = env.step(env.action_space.sample())
        assert info["intervened"].sum() == 1 and not info["intervened"][-1]
        assert not info["local_graph"][info["intervened"]].any()
        if terminated:
            env.reset()


def test_ood_starts_in_the_rule_context():
    def root_zero_fraction(env_id: str) -> tuple[float, float]:
        venv = gym.make_vec(env_id, num_envs=2000, vectorization_mode="vector_entry_point")
        venv.reset(seed=0)
        state = venv.unwrapped._state
        return float((state["colours"][:, 0] == 0).mean()), float((state["target"][:, 0] == 0).mean())

    start, target = root_zero_fraction("cwm/Chemistry-v0")
    assert 0.15 < start < 0.25 and 0.15 < target < 0.25
    start, target = root_zero_fraction("cwm/Chemistry-OOD-v0")
    assert 0.85 < start < 0.95 and 0.85 < target < 0.95


def test_random_start_breaks_consistency_but_targets_stay_consistent():
    venv = gym.make_vec("cwm/Chemistry-OOD-v0", num_envs=500, vectorization_mode="vector_entry_point")
    venv.reset(seed=1)
    env = venv.unwrapped.env
    colours, target = venv.unwrapped._state["colours"], venv.unwrapped._state["target"]
    rule = target[:, 0] == 0
    assert (target[rule][:, 1:] == env.rule_colours[1:]).all()
    assert not (colours[colours[:, 0] == 0][:, 1:] == env.rule_colours[1:]).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_objects": 1},
        {"n_objects": 13},
        {"n_objects": 2.5},
        {"n_objects": True},
        {"n_colours": 11},
        {"graph": "tree"},
        {"graph_seed": -1},
        {"local_rule": 1},
        {"intervention_prob": 1.5},
        {"start_context_prob": -0.1},
        {"target_context_prob": "high"},
        {"random_start": "yes"},
    ],
)
def test_bad_kwargs(kwargs):
    with pytest.raises(InvalidArgumentError):
        ChemistryEnv(**kwargs)
