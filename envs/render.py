"""Tiny numpy rasteriser for ``render_mode="rgb_array"`` frames (no pygame needed).

World coordinates have their origin at the bottom left; frames are ``(H, W, 3)`` ``uint8`` with row 0 at the top.
"""

from __future__ import annotations

import numpy as np

PALETTE = (
    (230, 60, 60),
    (60, 140, 240),
    (70, 200, 90),
    (245, 210, 50),
    (180, 90, 230),
    (245, 140, 40),
    (60, 215, 215),
    (240, 120, 190),
    (150, 100, 60),
    (235, 235, 235),
)
"""Ten distinct object colours shared by the suite's renderers."""


class Canvas:
    """An RGB frame over a rectangular world of size ``world_w x world_h``, ``scale`` pixels per world unit."""

    def __init__(self, world_w: float, world_h: float, scale: int = 8, background: tuple[int, int, int] = (0, 0, 0)):
        self.scale = scale
        self.world_h = world_h
        self.height = int(round(world_h * scale))
        self.width = int(round(world_w * scale))
        self.frame = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self.frame[:] = background
        rows = (np.arange(self.height) + 0.5) / scale
        cols = (np.arange(self.width) + 0.5) / scale
        self._y = (world_h - rows)[:, None]  # world y of each pixel row (flipped: row 0 is the top)
        self._x = cols[None, :]

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: tuple[int, int, int]) -> None:
        """Fill the axis-aligned rectangle ``[x0, x1] x [y0, y1]`` (world units)."""
        mask = (self._x >= x0) & (self._x <= x1) & (self._y >= y0) & (self._y <= y1)
        self.frame[mask] = colour

    def circle(self, cx: float, cy: float, radius: float, colour: tuple[int, int, int]) -> None:
        """Fill a disc of ``radius`` around ``(cx, cy)`` (world units)."""
        mask = (self._x - cx) ** 2 + (self._y - cy) ** 2 <= radius**2
        self.frame[mask] = colour
