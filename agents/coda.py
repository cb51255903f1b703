"""Counterfactual data augmentation from locally independent slots (CoDA, Pitis, Creager & Garg, NeurIPS 2020).

What:
    Two real transitions whose slots split the same way into parts that do not influence each other *in this
    step* can be mixed: take one part (its slots, now and next, and the action if it belongs to that part) from
    the first transition and the rest from the second. If the split is right, the mixed transition is one the env
    could have produced, though nobody saw it: "the paddle moved like this while the ball, elsewhere, moved like
    that". :func:`coda_transitions` builds such transitions in batches from the world model's **learned** local
    graphs (the ``(n_slots, n_slots + 1)`` masks its cross-attention gives per transition).

How, per pair ``(i, j)`` of real transitions:
    1. The learned local graphs ``G_i`` and ``G_j`` (the model's thresholded edge scores at that transition).
    2. Their union, made undirected over the ``n_slots + 1`` nodes (slots and the action), split into connected
       components. A component is closed in both transitions: no edge in either joins it to the other nodes.
    3. A component ``S`` at random (the one holding a random slot); pairs whose union is connected give nothing.
    4. The mixed transition: obs and next obs of transition ``j`` with the slots of ``S`` from transition ``i``;
       the action of ``i`` if the action node is in ``S``, else that of ``j``.
    5. A check CoDA's masks allow: the model's graph of the *mixed* state and action must keep ``S`` closed too
       (in Pong, a paddle moved next to the ball would have touched it: the swap is then not valid and is dropped).
    6. Reward and termination of the mixed transition come from the model's heads (CoDA relabels rewards with the
       task's reward function; here the env's is not assumed known).

Why this module: Dyna-style agents train an off-policy learner on replayed transitions; counterfactual ones add
combinations of slot states the agent has not visited, with the real next states of each part, not a model's
prediction of them. The learned graph decides what may be mixed, so a model whose graph is wrong produces wrong
transitions: step 5 is the guard, and the acceptance rate (returned) says how often the graphs disagreed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cwm_rl.wm_evaluation import Normalizer


def components(adjacency: np.ndarray) -> np.ndarray:
    """Connected components of undirected graphs: ``adjacency (N, m, m)`` bool -> ``(N, m, m)`` bool, entry
    ``[k, a, b]`` true when nodes ``a`` and ``b`` are connected in graph ``k`` (every node reaches itself)."""
    m = adjacency.shape[-1]
    reach = (adjacency | adjacency.transpose(0, 2, 1) | np.eye(m, dtype=bool)).astype(np.int64)
    for _ in range(max(1, int(np.ceil(np.log2(max(m, 2)))))):  # paths double in length each squaring
        reach = np.minimum(reach @ reach, 1)
    return reach.astype(bool)


def node_graph(local_graph: np.ndarray) -> np.ndarray:
    """A local graph ``(N, n, n + 1)`` (children x parents, the action last) as ``(N, n + 1, n + 1)`` adjacency
    over all nodes (the action has no parents)."""
    n_graphs, n, m = local_graph.shape
    out = np.zeros((n_graphs, m, m), dtype=bool)
    out[:, :n, :] = local_graph
    return out


def crosses(local_graph: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Whether any edge of ``local_graph (N, n, n + 1)`` joins the nodes in ``part (N, n + 1)`` to the others."""
    adj = node_graph(local_graph)
    inside = part[:, :, None] & ~part[:, None, :]
    outside = ~part[:, :, None] & part[:, None, :]
    return (adj & (inside | outside)).any(axis=(1, 2))


@torch.no_grad()
def learned_graphs(model: nn.Module, norm: Normalizer, obs: np.ndarray, action: np.ndarray) -> dict[str, np.ndarray]:
    """The model's one-step view of ``(obs, action)`` batches: local graph, reward, termination.

    Each row starts from the model's initial recurrent state, as imagination does (the suite's envs are Markov in
    their observation)."""
    was_training = model.training
    model.eval()
    x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
    action = np.asarray(action)
    a = torch.as_tensor(action.astype(np.int64 if action.dtype.kind in "iub" else np.float32))
    pred, _ = model.step(model.initial_state(x.shape[0]), norm.obs(x), norm.action(a))
    model.train(was_training)
    return {
        "graph": model.local_graph(pred.scores).numpy(),
        "reward": pred.reward.numpy().astype(np.float32),
        "terminated": (pred.termination_logit > 0).numpy(),
    }


def coda_transitions(
    model: nn.Module,
    norm: Normalizer,
    slot_dims: tuple[int, ...],
    obs: np.ndarray,
    action: np.ndarray,
    next_obs: np.ndarray,
    rng: np.random.Generator,
    check_mixed: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Counterfactual transitions from random pairs of the given real ones (see the module docstring).

    Args:
        model: a slot world model with a graph (``local_graph``; the MLP has none).
        norm: the normaliser the model was trained with.
        slot_dims: observation entries of each slot, in observation order.
        obs, next_obs: real transitions ``(N, obs_dim)``.
        action: their env actions, ``(N,)`` int (Discrete) or ``(N, action_dim)`` float (Box), env units.
        rng: draws the pairs (transition ``i`` with ``i + k`` for a random shift ``k``; the transitions are random
            draws already) and the component to swap.
        check_mixed: drop mixes whose own learned graph joins the swapped part to the rest (step 5); False keeps
            every split pair (for measuring what the check removes).

    Returns:
        ``obs``, ``action``, ``reward``, ``next_obs``, ``terminated`` of the accepted mixed transitions (at most
        ``N``) and ``part`` (``(n_accepted, n_slots + 1)`` bool: the nodes taken from the first transition), and
        statistics: ``pairs``, ``splittable`` (pairs whose union graph has more than one component),
        ``accepted`` (those that also passed the check on the mixed state).
    """
    if getattr(model, "local_graph", None) is None:
        raise ValueError("CoDA needs a world model with a local causal graph (a slot model, not the MLP)")
    obs, next_obs = np.asarray(obs, dtype=np.float32), np.asarray(next_obs, dtype=np.float32)
    action = np.asarray(action)
    n_pairs, n_slots = len(obs), len(slot_dims)
    slot_of_col = np.repeat(np.arange(n_slots), slot_dims)
    if n_pairs < 2:
        raise ValueError(f"CoDA mixes pairs of transitions; got {n_pairs}")
    own = learned_graphs(model, norm, obs, action)["graph"]
    partner = (np.arange(n_pairs) + rng.integers(1, n_pairs)) % n_pairs  # a random shift: never itself
    union = node_graph(own | own[partner])
    reach = components(union)  # (N, n + 1, n + 1)
    seed_slot = rng.integers(0, n_slots, size=n_pairs)
    part = reach[np.arange(n_pairs), seed_slot]  # (N, n + 1): the component holding the random slot
    splittable = ~part.all(axis=1)
    take_cols = part[:, slot_of_col]  # (N, obs_dim): columns that come from transition i
    mixed_obs = np.where(take_cols, obs, obs[partner])
    mixed_next = np.where(take_cols, next_obs, next_obs[partner])
    action_from_i = part[:, n_slots].reshape((-1,) + (1,) * (action.ndim - 1))
    mixed_action = np.where(action_from_i, action, action[partner])
    view = learned_graphs(model, norm, mixed_obs, mixed_action)
    accepted = splittable & ~crosses(view["graph"], part) if check_mixed else splittable
    data = {
        "obs": mixed_obs[accepted],
        "action": mixed_action[accepted],
        "reward": view["reward"][accepted],
        "next_obs": mixed_next[accepted],
        "terminated": view["terminated"][accepted],
        "part": part[accepted],
    }
    stats = {"pairs": int(n_pairs), "splittable": int(splittable.sum()), "accepted": int(accepted.sum())}
    return data, stats


__all__ = ["coda_transitions", "components", "crosses", "learned_graphs", "node_graph"]
