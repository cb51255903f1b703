"""Shared test fixtures: every test sees the registered suite."""

from __future__ import annotations

import cwm_rl  # noqa: F401  (registers the envs)
