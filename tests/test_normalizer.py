"""The world models' normaliser: dimensions whose change is constant in the data stay exactly constant."""

from __future__ import annotations

import numpy as np
import torch

from cwm_rl.models.factory import make_world_model
from cwm_rl.models.world_model import SlotModelConfig
from cwm_rl.planning.imagination import Imagination
from cwm_rl.wm_evaluation import Normalizer


def _data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Columns: a random walk, a fixed value (a goal), a counter that always moves by +1."""
    rng = np.random.default_rng(seed)
    obs = np.stack([rng.normal(size=n), np.full(n, 0.7), np.arange(n, dtype=float)], 1).astype(np.float32)
    nxt = obs + np.stack([rng.normal(size=n), np.zeros(n), np.ones(n)], 1).astype(np.float32)
    return obs, nxt


def test_constant_changes_are_held_exactly_whatever_the_model_outputs():
    obs, nxt = _data()
    norm = Normalizer.from_arrays(obs, nxt)
    assert norm.delta_fixed.tolist() == [False, True, True]
    out = torch.tensor([[0.5, 0.03, -0.2], [-1.0, -7.0, 3.0]])
    raw = norm.unnormalize_delta(out)
    assert raw[:, 1].tolist() == [0.0, 0.0]  # the goal never moves
    assert raw[:, 2].tolist() == [1.0, 1.0]  # the counter always moves by exactly its constant step
    torch.testing.assert_close(raw[:, 0], out[:, 0] * norm.delta_std[0] + norm.delta_mean[0])
    # normalising is unchanged: a constant dimension keeps raw units (no division by a zero spread)
    assert norm.delta_std[1].item() == 1.0 and norm.delta(torch.zeros(1, 3))[0, 1].item() == 0.0


def test_state_round_trip_and_older_states_keep_the_old_behaviour():
    obs, nxt = _data()
    norm = Normalizer.from_arrays(obs, nxt)
    again = Normalizer.from_state(norm.state())
    assert again.delta_fixed.tolist() == norm.delta_fixed.tolist()
    old = norm.state()
    old.pop("delta_fixed")  # a normaliser saved before the field existed
    legacy = Normalizer.from_state(old)
    assert legacy.delta_fixed is None
    out = torch.tensor([[0.5, 0.03, -0.2]])
    torch.testing.assert_close(legacy.unnormalize_delta(out), out * norm.delta_std + norm.delta_mean)


def test_release_fixed_frees_a_dimension_once_the_data_shows_it_change():
    obs, nxt = _data()
    norm = Normalizer.from_arrays(obs, nxt)
    assert norm.release_fixed(obs, nxt) == []  # the same data: nothing to release
    moved = nxt.copy()
    moved[5, 1] += 0.25  # the "goal" moves once
    before = norm.state()
    assert norm.release_fixed(obs, moved) == [1]
    assert norm.delta_fixed.tolist() == [False, False, True]
    # the released dimension gets the scale of its change in the data: a single move of 0.25 among 200 steps
    change = (moved - obs)[:, 1].astype(np.float64)
    assert norm.delta_mean[1].item() == np.float32(change.mean())
    assert norm.delta_std[1].item() == np.float32(change.std())
    torch.testing.assert_close(
        norm.delta(torch.tensor([[0.0, 0.25, 1.0]]))[0, 1], torch.tensor(0.25 - 0.25 / 200) / norm.delta_std[1]
    )
    torch.testing.assert_close(
        norm.unnormalize_delta(torch.tensor([[0.0, 2.0, 0.0]]))[0, 1], 2.0 * norm.delta_std[1] + norm.delta_mean[1]
    )
    # the others keep their statistics, and the state given out earlier is not changed in place
    for key in ("delta_mean", "delta_std", "obs_mean", "obs_std"):
        torch.testing.assert_close(norm.state()[key][[0, 2]], before[key][[0, 2]])
    assert before["delta_fixed"].tolist() == [False, True, True] and before["delta_std"][1].item() == 1.0
    assert norm.release_fixed(obs[:0], nxt[:0]) == []  # no data: nothing changes


def test_release_fixed_gives_inputs_without_spread_their_scale():
    """An input constant in the seed data (Pusher2D's box velocity before any contact) is in raw units; once the
    data shows it vary it is standardised like the others."""
    obs, nxt = _data()
    norm = Normalizer.from_arrays(obs, nxt)
    assert norm.obs_fixed.tolist() == [False, True, False] and norm.obs_std[1].item() == 1.0
    later = obs.copy()
    later[::2, 1] += 0.01  # small values, as a box's velocity in a unit arena
    norm.release_fixed(later, later + (nxt - obs))
    assert norm.obs_fixed.tolist() == [False, False, False]
    torch.testing.assert_close(norm.obs_std[1], torch.tensor(0.005))
    scaled = norm.obs(torch.as_tensor(later[:2]))[:, 1]
    torch.testing.assert_close(scaled, torch.tensor([1.0, -1.0]))
    old = norm.state()
    old.pop("obs_fixed")  # a normaliser saved before the field existed still loads
    assert Normalizer.from_state(old).obs_fixed is None


def test_pusher_goal_stays_put_in_imagination():
    """Pusher2D's goal is fixed within an episode; an untrained model's outputs must not move it."""
    from cwm_rl.data import make_vector_env

    venv, _ = make_vector_env("cwm/Pusher2D-v0", 16, {})
    obs, _ = venv.reset(seed=0)
    rng = np.random.default_rng(0)
    first, nexts = [], []
    for _ in range(20):
        action = rng.uniform(-1, 1, (16, 2)).astype(np.float32)
        nxt, *_ = venv.step(action)
        first.append(obs)
        nexts.append(nxt)
        obs = nxt
    venv.close()
    norm = Normalizer.from_arrays(np.concatenate(first), np.concatenate(nexts))
    goal = slice(12, 14)
    assert norm.delta_fixed[goal].all() and not norm.delta_fixed[:4].any()  # the agent moves, the goal never
    torch.manual_seed(0)
    model = make_world_model("slot-ssm", [4, 4, 4, 2], ("continuous", 2), SlotModelConfig(d_model=16)).eval()
    actions = torch.as_tensor(rng.uniform(-1, 1, (16, 1, 10, 2)).astype(np.float32))
    roll = Imagination(model, norm).rollout(obs, actions)
    assert roll.obs.shape == (16, 10, obs.shape[1])
    torch.testing.assert_close(roll.obs[..., goal], torch.as_tensor(obs[:, None, goal]).expand(16, 10, 2))
    assert not torch.allclose(roll.obs[..., :2], torch.as_tensor(obs[:, None, :2]).expand(16, 10, 2))
