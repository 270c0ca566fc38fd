"""The example DAGs' helper modules import each other by name, as Airflow allows: it puts the
DAGs folder (the bundle's root) on ``sys.path``. Do the same for their unit tests."""

from __future__ import annotations

import sys
from pathlib import Path

DAGS = Path(__file__).resolve().parents[3] / "dags"
if str(DAGS) not in sys.path:
    sys.path.append(str(DAGS))
