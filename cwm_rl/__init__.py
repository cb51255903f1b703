"""cwm_rl: causal model-based reinforcement learning.

Importing the package registers every environment of the suite with Gymnasium, so
``gymnasium.make("cwm/InterventionalPong-v0")`` works after ``import cwm_rl`` and
``gymnasium.make("cwm_rl:cwm/InterventionalPong-v0")`` works with no import at all.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from cwm_rl import envs  # noqa: F401  (registers the environments)

try:
    __version__ = version("cwm-rl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__", "envs"]
