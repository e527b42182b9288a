"""Training metric sinks: JSONL (one object per log step), a tidy CSV, and TensorBoard.

``metrics.jsonl``: ``{"step": 100, "time": 12.3, "loss/main": 0.1, ...}`` per line.
``metrics.csv``: tidy long table with columns ``step, time, key, value``.
``tb/``: TensorBoard event files (``tensorboard --logdir RUN_DIR/tb``).

On resume, rows logged after the checkpoint's step (by the run that was interrupted) are
dropped, so the files describe one consistent run.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

from hub.io_utils import atomic_path, atomic_write_text

JSONL_NAME = "metrics.jsonl"
CSV_NAME = "metrics.csv"
CSV_COLUMNS = ("step", "time", "key", "value")


class MetricsLogger:
    """Appends scalars to the run folder; a disabled logger (non-zero ranks) does nothing."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._tb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self._truncate_after(resume_step)
        self._jsonl = open(self.run_dir / JSONL_NAME, "a", encoding="utf-8")
        csv_path = self.run_dir / CSV_NAME
        new_csv = not csv_path.exists() or csv_path.stat().st_size == 0
        self._csv_file = open(csv_path, "a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._csv_file)
        if new_csv:
            self._csv.writerow(CSV_COLUMNS)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=resume_step)

    def log(self, step: int, values: dict[str, float], elapsed_s: float) -> None:
        """Record ``values`` (plain floats) at optimizer ``step``."""
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in values.items()}
        self._jsonl.write(json.dumps({"step": step, "time": round(elapsed_s, 3), **clean}) + "\n")
        self._jsonl.flush()
        for key, value in clean.items():
            self._csv.writerow((step, f"{elapsed_s:.3f}", key, "" if value is None else repr(value)))
        self._csv_file.flush()
        if self._tb is not None:
            for key, value in clean.items():
                if value is not None:
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._jsonl.close()
        self._csv_file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        self.enabled = False

    def _truncate_after(self, step: int) -> None:
        jsonl = self.run_dir / JSONL_NAME
        if jsonl.exists():
            keep = [line for line in jsonl.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= step]
            atomic_write_text(jsonl, "".join(line + "\n" for line in keep))
        table = self.run_dir / CSV_NAME
        if table.exists():
            with open(table, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
            keep_rows = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step] if rows else []
            with atomic_path(table) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows(keep_rows)
