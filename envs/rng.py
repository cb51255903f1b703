"""Counter-based random numbers, vectorised over many environments.

Why not ``np.random.Generator`` per environment: a natively batched env with 1,024 sub-environments would need a
Python loop over 1,024 generators every step, and the batched env must give *exactly* the transitions of 1,024
single envs with the same seeds. A counter-based generator solves both: the ``j``-th uniform drawn at event
``counter`` of the stream ``key`` is a pure function ``hash(key, counter, j)``, evaluated for all sub-environments
with a handful of ``uint64`` array operations. The generator's whole state is ``(key, counter)``, which is what
:meth:`CausalEnv.get_state` saves so a transition can be replayed counterfactually.

The key of a stream is drawn from the env's Gymnasium ``np_random`` at a seeded reset, so Gymnasium's seeding rules
hold: ``reset(seed=s)`` fixes everything that follows. The generator is SplitMix64 (Steele, Lea and Flood, 2014),
which passes BigCrush and can jump to any position of its sequence in O(1): exactly what a counter needs.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 2.0**-53

MAX_PER_EVENT = 64
"""At most this many uniforms per event: event ``c`` owns draws ``c * 64 .. c * 64 + 63`` of its stream, so
events that consume different amounts (a reset, a step) never share a draw."""
_STRIDE = np.uint64(MAX_PER_EVENT)
_OFFSETS = {n: np.arange(1, n + 1, dtype=np.uint64)[None, :] for n in range(1, MAX_PER_EVENT + 1)}


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a ``uint64`` array (wrapping arithmetic is intended)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def uniforms(key: np.ndarray, counter: np.ndarray, n: int) -> np.ndarray:
    """Return ``n`` uniforms in ``[0, 1)`` per stream for one event.

    Draw ``j`` of event ``c`` in stream ``key`` is SplitMix64's output number ``c * 64 + j + 1`` started from state
    ``key``: ``mix(key + (c * 64 + j + 1) * golden)``.

    Args:
        key: ``(B,)`` ``uint64`` stream keys, one per environment.
        counter: ``(B,)`` ``uint64`` event counters (the caller increments them after each event).
        n: how many numbers the event consumes (at most 64); a fixed number per event keeps streams aligned, so a
            counterfactual replay draws the same noise whatever the state.

    Returns:
        ``(B, n)`` ``float64`` array; row ``b`` depends only on ``key[b]``, ``counter[b]`` and ``n``.
    """
    index = (counter * _STRIDE)[:, None] + _OFFSETS[n]
    bits = _mix(key[:, None] + index * _GOLDEN) >> _S11
    return bits.astype(np.float64) * _TO_UNIT


def key_from_generator(generator: np.random.Generator) -> np.uint64:
    """Draw one stream key from a Gymnasium ``np_random`` generator."""
    return np.uint64(generator.integers(0, 2**63, dtype=np.int64))
