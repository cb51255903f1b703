"""Counter-based random numbers, vectorised over many environments.

Why not ``np.random.Generator`` per environment: a natively batched env with 1,024 sub-environments would need a
Python loop over 1,024 generators every step, and the batched env must give *exactly* the transitions of 1,024
single envs with the same seeds. A counter-based generator solves both: the ``j``-th uniform drawn at event
``counter`` of the stream ``key`` is a pure function ``hash(key, counter, j)``, evaluated for all sub-environments
with a handful of ``uint64`` array operations. The generator's whole state is ``(key, counter)``, which is what
:meth:`CausalEnv.get_state` saves so a transition can be replayed counterfactually.

The key of a stream is drawn from the env's Gymnasium ``np_random`` at a seeded reset, so Gymnasium's seeding rules
hold: ``reset(seed=s)`` fixes everything that follows. The hash is SplitMix64's finaliser (Steele, Lea and Flood,
2014), applied twice; its output passes BigCrush when used as a counter-based generator.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 2.0**-53


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a ``uint64`` array (wrapping arithmetic is intended)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def uniforms(key: np.ndarray, counter: np.ndarray, n: int) -> np.ndarray:
    """Return ``n`` uniforms in ``[0, 1)`` per stream for one event.

    Args:
        key: ``(B,)`` ``uint64`` stream keys, one per environment.
        counter: ``(B,)`` ``uint64`` event counters (the caller increments them after each event).
        n: how many numbers the event consumes; a fixed number per event keeps streams aligned, so a
            counterfactual replay draws the same noise whatever the state.

    Returns:
        ``(B, n)`` ``float64`` array; row ``b`` depends only on ``key[b]``, ``counter[b]`` and ``n``'s prefix.
    """
    base = _mix(key ^ _mix(counter * _GOLDEN + _GOLDEN))
    offsets = (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    bits = _mix(base[:, None] + offsets) >> _S11
    return bits.astype(np.float64) * _TO_UNIT


def key_from_generator(generator: np.random.Generator) -> np.uint64:
    """Draw one stream key from a Gymnasium ``np_random`` generator."""
    return np.uint64(generator.integers(0, 2**63, dtype=np.int64))
