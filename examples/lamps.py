"""Worked example: write, register and verify your own causal environment.

Two lamps and a wire. The action toggles lamp A; lamp B copies lamp A when the wire is connected and keeps its
own state when it is not. So lamp B's parents depend on the context: that is a *local* causal graph.

Run it::

    cwm-rl verify-env examples/Lamps-v0 --import examples/lamps.py     # counterfactual check of the graphs
    python examples/lamps.py                                           # the same from Python

The recipe (see the README section "Register your own env"):

1. Subclass :class:`cwm_rl.envs.CausalEnv`; in ``__init__`` declare the slots, the global graph, the observation
   bounds and the action space with ``_init_causal``.
2. Write the dynamics once, batched over a leading axis: ``_reset_batch``, ``_step_batch`` (returning the local
   graph of each transition), ``_observe_batch``; take randomness only from ``u``.
3. Say how to nudge one slot for verification (``_perturb_slot``) and how to draw it (``_render_frame``).
4. Register an id with :func:`cwm_rl.envs.register_causal_env` (the batched vector env comes for free).
5. Run ``cwm-rl verify-env ID``: 0 missing-edge violations means the declared local graphs hold.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from cwm_rl.envs import CausalEnv, State, StepResult, register_causal_env, verify_local_graphs
from cwm_rl.envs.render import Canvas
from cwm_rl.envs.validation import check_probability

A, B, WIRE, ACTION = 0, 1, 2, 3


class LampsEnv(CausalEnv):
    """Two lamps and a wire: lamp B follows lamp A only while the wire is connected.

    ## Description
    Lamp A is switched by the agent. Lamp B copies lamp A while the wire is connected; otherwise it keeps its
    state. The wire flips with probability ``flip_prob`` per step.

    ## Action Space
    ``Discrete(2)``: 0 do nothing, 1 toggle lamp A.

    ## Observation Space
    ``Box(3,)`` in {0, 1}: slots ``lamp_a``, ``lamp_b``, ``wire``.

    ## Rewards
    1 when both lamps are on, else 0.

    ## Starting State
    Both lamps off; the wire connected with probability 1/2.

    ## Episode End
    Truncated after 50 steps by the registration.

    ## Arguments
    * ``flip_prob`` (float in [0, 1], default 0.1): probability that the wire flips each step.

    ## Causal Graph
    * ``lamp_a <- lamp_a, action``: always.
    * ``lamp_b <- wire``: always (the wire decides what lamp B reads); ``lamp_b <- lamp_a`` when the wire is
      connected, ``lamp_b <- lamp_b`` when it is not.
    * ``wire <- wire``: always (it flips with exogenous noise).
    """

    n_reset_uniforms = 1
    n_step_uniforms = 1

    def __init__(self, render_mode: str | None = None, flip_prob: float = 0.1) -> None:
        super().__init__(render_mode=render_mode)
        self.flip_prob = check_probability(type(self).__name__, "flip_prob", flip_prob)
        graph = np.zeros((3, 4), dtype=bool)
        graph[A, [A, ACTION]] = True
        graph[B, [A, B, WIRE]] = True
        graph[WIRE, WIRE] = True
        self._init_causal({"lamp_a": 1, "lamp_b": 1, "wire": 1}, graph, np.zeros(3), np.ones(3), spaces.Discrete(2))

    def _reset_batch(self, u: np.ndarray) -> State:
        zeros = np.zeros(len(u))
        return {"a": zeros, "b": zeros.copy(), "wire": (u[:, 0] < 0.5).astype(np.float64)}

    def _step_batch(self, state: State, action: np.ndarray, u: np.ndarray) -> StepResult:
        a, b, wire = state["a"], state["b"], state["wire"]
        connected = wire == 1.0
        new_a = np.where(action == 1, 1.0 - a, a)
        new_b = np.where(connected, a, b)
        new_wire = np.where(u[:, 0] < self.flip_prob, 1.0 - wire, wire)
        graph = np.zeros((len(a), 3, 4), dtype=bool)
        graph[:, A, A] = graph[:, A, ACTION] = True
        graph[:, B, WIRE] = True
        graph[:, B, A] = connected
        graph[:, B, B] = ~connected
        graph[:, WIRE, WIRE] = True
        reward = ((new_a == 1.0) & (new_b == 1.0)).astype(np.float64)
        intervened = np.zeros((len(a), 3), dtype=bool)
        new_state = {"a": new_a, "b": new_b, "wire": new_wire}
        return StepResult(new_state, reward, np.zeros(len(a), dtype=bool), graph, intervened)

    def _observe_batch(self, state: State) -> np.ndarray:
        return np.stack([state["a"], state["b"], state["wire"]], axis=1).astype(np.float32)

    def _perturb_slot(self, state: State, slot: str, rng: np.random.Generator) -> State:
        key = {"lamp_a": "a", "lamp_b": "b", "wire": "wire"}[slot]
        state[key] = 1.0 - state[key]  # binary slots: the neighbourhood is the other value
        return state

    def _render_frame(self, state: State) -> np.ndarray:
        canvas = Canvas(3.0, 1.0, scale=32)
        for i, key in enumerate(("a", "b", "wire")):
            on = state[key][0] == 1.0
            canvas.rect(i + 0.1, 0.1, i + 0.9, 0.9, (250, 220, 80) if on else (60, 60, 60))
        return canvas.frame


register_causal_env("examples/Lamps-v0", LampsEnv, max_episode_steps=50)

if __name__ == "__main__":
    print(verify_local_graphs("examples/Lamps-v0", n_transitions=2000).table())
