"""How an experiment is named in legends and tables: its training settings in one line.

Kept apart from rnngen.analysis (which imports scipy) so that `rnngen status`, which must
answer in under a second, names experiments exactly as the report and figures do.
"""

from __future__ import annotations

import json
from typing import Any


def settings_label(settings: dict[str, Any]) -> str:
    """'hidden 128, 10 epochs, adam lr 0.0005, batch 64, β_W ≤ 1, 2500 train reviews' from
    the run-spec fields of one run (absent optional fields are left out)."""
    s = settings
    parts = [
        f"hidden {s['hidden']}",
        f"{s['epochs']} epochs",
        f"{s['optimizer']} lr {s['lr']:g}",
        f"batch {s['batch_size']}",
    ]
    if s.get("w_row_sum_max") is not None:
        parts.append(f"β_W ≤ {s['w_row_sum_max']:g}")
    if s.get("n_train") is not None:
        parts.append(f"{s['n_train']} train reviews")
    return ", ".join(parts)


def spec_label(spec_json: str) -> str:
    """settings_label of a run's spec as stored (runs.parquet's `spec_json`)."""
    return settings_label(json.loads(spec_json))
