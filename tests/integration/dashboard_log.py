"""What the embedded cluster's dashboard logged: its requests (with their sizes) and its modules' lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def dashboard_logs(cluster: Any) -> dict[Path, int]:
    """The sizes of the embedded cluster's dashboard logs (the head's and its modules')."""
    logs = Path(cluster.status().temp_dir) / "session_latest" / "logs"
    return {path: path.stat().st_size for path in logs.glob("dashboard*.log")}


def dashboard_lines(cluster: Any, since: dict[Path, int]) -> list[str]:
    """The lines its dashboard logged after ``since`` (see :func:`dashboard_logs`)."""
    lines = []
    for path in dashboard_logs(cluster):
        with path.open("rb") as log:
            log.seek(since.get(path, 0))
            lines += log.read().decode(errors="replace").splitlines()
    return lines
