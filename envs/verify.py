"""Counterfactual verification of the local causal graphs an environment reports.

For each transition ``(s_t, a_t) -> s_{t+1}`` of a random-policy rollout, and for each parent column ``j`` (every
slot, then the action), the transition is replayed from ``s_t`` with only ``j`` moved within its neighbourhood
(:meth:`CausalEnv.perturb_state` / :meth:`CausalEnv.perturb_action`) and the *same* random stream. Then, for each
child slot ``i``:

* **missing edge** (a violation): child ``i`` changed although neither the original nor the perturbed transition
  declares ``j -> i``. (If the perturbation itself moved the transition into a context where ``j -> i`` is active,
  e.g. it created a contact, the perturbed transition declares the edge and the change is explained.)
* **confirmed edge**: ``j -> i`` is declared and some perturbation of ``j`` changed child ``i``.
* **unused edge**: declared, but no perturbation showed an effect. Not a violation (an effect can be hidden by a
  clip or a threshold), but a high rate means the declared graph is looser than the dynamics.

Children are compared exactly (bitwise): a slot that does not read a parent cannot change when it moves.
The report also counts local edges outside the global ``causal_graph`` and intervened slots that declare parents,
both contract violations.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cwm_rl.envs.base import CausalEnv
from cwm_rl.envs.registration import make_causal_env, spec_of
from cwm_rl.errors import InvalidArgumentError


@dataclass
class VerificationReport:
    """Counts per edge (child row, parent column) over the verified transitions."""

    env_id: str
    n_transitions: int
    n_replays: int
    slot_names: tuple[str, ...]
    declared: np.ndarray  # (n, n+1) transitions in which the edge was declared
    confirmed: np.ndarray  # (n, n+1) ... and a perturbation of the parent changed the child
    missing: np.ndarray  # (n, n+1) violations: child changed, edge declared in neither transition
    outside_global: int = 0  # local edges that the global graph does not have
    intervened_with_parents: int = 0  # intervened slots whose row is not empty
    examples: list[dict[str, Any]] = field(default_factory=list)  # first few violations

    @property
    def parent_names(self) -> tuple[str, ...]:
        return (*self.slot_names, "action")

    @property
    def n_violations(self) -> int:
        """Missing edges plus contract violations; 0 means the declared local graphs hold."""
        return int(self.missing.sum()) + self.outside_global + self.intervened_with_parents

    @property
    def passed(self) -> bool:
        return self.n_violations == 0

    def unused_rate(self, include_self: bool = True, include_action: bool = True) -> float:
        """Fraction of declared edge instances that no perturbation confirmed."""
        mask = np.ones_like(self.declared, dtype=bool)
        n = len(self.slot_names)
        if not include_self:
            mask[np.arange(n), np.arange(n)] = False
        if not include_action:
            mask[:, n] = False
        declared = int(self.declared[mask].sum())
        return 0.0 if declared == 0 else 1.0 - int(self.confirmed[mask].sum()) / declared

    def to_dict(self) -> dict[str, Any]:
        edges = []
        for i, child in enumerate(self.slot_names):
            for j, parent in enumerate(self.parent_names):
                if self.declared[i, j] or self.missing[i, j]:
                    d = int(self.declared[i, j])
                    edges.append(
                        {
                            "child": child,
                            "parent": parent,
                            "declared": d,
                            "confirmed": int(self.confirmed[i, j]),
                            "unused_rate": 0.0 if d == 0 else 1.0 - int(self.confirmed[i, j]) / d,
                            "missing_edge_violations": int(self.missing[i, j]),
                        }
                    )
        return {
            "env_id": self.env_id,
            "n_transitions": self.n_transitions,
            "n_replays": self.n_replays,
            "passed": self.passed,
            "n_violations": self.n_violations,
            "missing_edge_violations": int(self.missing.sum()),
            "outside_global_graph": self.outside_global,
            "intervened_with_parents": self.intervened_with_parents,
            "unused_edge_rate": self.unused_rate(),
            "unused_edge_rate_excluding_self_edges": self.unused_rate(include_self=False),
            "edges": edges,
            "violation_examples": self.examples,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """Human-readable summary: one line per edge that was ever declared or violated."""
        lines = [
            f"{self.env_id}: {self.n_transitions} transitions, {self.n_replays} counterfactual replays",
            f"missing-edge violations: {int(self.missing.sum())}   local edges outside the global graph: "
            f"{self.outside_global}   intervened slots with parents: {self.intervened_with_parents}",
            f"unused-edge rate: {self.unused_rate():.3f} (excluding self-edges: "
            f"{self.unused_rate(include_self=False):.3f})",
            "",
        ]
        rows = [(f"{e['child']} <- {e['parent']}", e) for e in self.to_dict()["edges"]]
        width = max([len(name) for name, _ in rows] + [4])
        lines.append(f"{'edge':<{width}}  {'declared':>9}  {'confirmed':>9}  {'unused':>7}  {'missing':>7}")
        for name, e in rows:
            lines.append(
                f"{name:<{width}}  {e['declared']:>9}  {e['confirmed']:>9}  {e['unused_rate']:>7.3f}  "
                f"{e['missing_edge_violations']:>7}"
            )
        lines.append("")
        lines.append("PASSED: the declared local graphs hold" if self.passed else "FAILED: see the violations above")
        return "\n".join(lines)


def verify_local_graphs(
    env: str | CausalEnv,
    n_transitions: int = 10_000,
    *,
    seed: int = 0,
    n_perturbations: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    max_episode_steps: int | None = None,
    max_examples: int = 10,
    policy: Callable[[np.ndarray], Any] | None = None,
) -> VerificationReport:
    """Replay ``n_transitions`` random-policy transitions counterfactually and check the declared local graphs.

    Args:
        env: a registered env id (any namespace) or a :class:`CausalEnv` instance.
        n_transitions: transitions to verify; each costs ``(n_slots + 1) * n_perturbations + 1`` env steps.
        seed: seeds the env, the random policy and the perturbations.
        n_perturbations: perturbations per parent and transition (more finds more rarely-active edges).
        env_kwargs: constructor arguments when ``env`` is an id.
        max_episode_steps: episode horizon of the rollout (default: the registered one, else 1,000).
        max_examples: how many violations to keep as examples in the report.
        policy: maps an observation to an action; default uniform random actions. A policy that seeks rare
            contexts (contacts, pushes) exercises the edges that only those contexts switch on.

    Returns:
        A :class:`VerificationReport`; ``report.passed`` is True when no violation was found.
    """
    if not isinstance(n_transitions, (int, np.integer)) or n_transitions < 1:
        raise InvalidArgumentError(f"n_transitions={n_transitions!r} must be a positive integer")
    if not isinstance(n_perturbations, (int, np.integer)) or n_perturbations < 1:
        raise InvalidArgumentError(f"n_perturbations={n_perturbations!r} must be a positive integer")
    if isinstance(env, str):
        spec = spec_of(env)
        env_id = spec.id
        causal = make_causal_env(spec.id, **(env_kwargs or {})).unwrapped
        horizon = max_episode_steps or spec.max_episode_steps or 1000
    elif isinstance(env, CausalEnv):
        causal = env
        env_id = env.spec.id if env.spec is not None else type(env).__name__
        horizon = max_episode_steps or 1000
    else:
        raise InvalidArgumentError(f"verify_local_graphs needs an env id or a CausalEnv, got {type(env).__name__}")

    n = causal.n_slots
    slices = [causal.slot_slices[name] for name in causal.slot_names]
    global_graph = causal.causal_graph
    declared = np.zeros((n, n + 1), dtype=np.int64)
    confirmed = np.zeros_like(declared)
    missing = np.zeros_like(declared)
    outside_global = 0
    intervened_with_parents = 0
    examples: list[dict[str, Any]] = []
    rng = np.random.default_rng(seed + 1)
    causal.action_space.seed(seed)
    obs, _ = causal.reset(seed=seed)
    t_in_episode = 0
    replays = 0

    for t in range(n_transitions):
        before = causal.get_state()
        action = causal.action_space.sample() if policy is None else policy(obs)
        next_obs, _, terminated, _, info = causal.step(action)
        after = causal.get_state()
        graph = np.asarray(info["local_graph"], dtype=bool)
        if graph.shape != (n, n + 1):
            raise InvalidArgumentError(f"{env_id}: info['local_graph'] has shape {graph.shape}, expected {(n, n + 1)}")
        declared += graph
        outside_global += int((graph & ~global_graph).sum())
        intervened_with_parents += int((np.asarray(info["intervened"], dtype=bool) & graph.any(axis=1)).sum())
        effect = np.zeros((n, n + 1), dtype=bool)
        for j in range(n + 1):
            for _ in range(n_perturbations):
                if j < n:
                    causal.set_state(causal.perturb_state(before, causal.slot_names[j], rng))
                    alt_action = action
                else:
                    causal.set_state(before)
                    alt_action = causal.perturb_action(action, rng)
                alt_obs, _, _, _, alt_info = causal.step(alt_action)
                replays += 1
                alt_graph = np.asarray(alt_info["local_graph"], dtype=bool)
                for i, sl in enumerate(slices):
                    if np.array_equal(next_obs[sl], alt_obs[sl]):
                        continue
                    if graph[i, j]:
                        effect[i, j] = True
                    elif not alt_graph[i, j]:
                        missing[i, j] += 1
                        if len(examples) < max_examples:
                            examples.append(
                                {
                                    "transition": t,
                                    "child": causal.slot_names[i],
                                    "parent": (*causal.slot_names, "action")[j],
                                    "child_before": next_obs[sl].tolist(),
                                    "child_after_perturbation": alt_obs[sl].tolist(),
                                }
                            )
        confirmed += effect & graph
        causal.set_state(after)
        obs = next_obs
        t_in_episode += 1
        if terminated or t_in_episode >= horizon:
            obs, _ = causal.reset()
            t_in_episode = 0

    return VerificationReport(
        env_id=env_id,
        n_transitions=int(n_transitions),
        n_replays=replays,
        slot_names=tuple(causal.slot_names),
        declared=declared,
        confirmed=confirmed,
        missing=missing,
        outside_global=outside_global,
        intervened_with_parents=intervened_with_parents,
        examples=examples,
    )
