"""Shared helpers for the benchmark scripts: machine description and JSON output."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


def ood_id(env_id: str) -> str:
    """The suite's OOD twin of ``cwm/Name-v0``: ``cwm/Name-OOD-v0``."""
    return env_id.replace("-v0", "-OOD-v0")


def cpu_model() -> str | None:
    """The CPU's model name (Linux), since torch's float results, and so a seeded run, can differ between CPUs."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import gymnasium

    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
    }


def write_json(path: str | os.PathLike[str] | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (temp file, then rename) when ``path`` is given."""
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def report(payload: dict[str, Any], as_json: bool, out: str | os.PathLike[str] | None) -> None:
    """A benchmark's ending: print ``payload`` as JSON when asked (``--json``), write it to ``out`` (``--out``)."""
    if as_json:
        print(json.dumps(payload, indent=2))
    write_json(out, payload)
