"""Re-running a sweep into the same folder: find the jobs that are already done."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from medrepro.core.run_folder import RESULTS_JSON


def completed_results(output_dir: str | Path, cfg: DictConfig) -> dict | None:
    """The results.json in ``output_dir`` if it records a completed run of exactly this
    resolved configuration, else ``None`` (no file, an unfinished, failed or diverged
    run, or a run of another configuration)."""
    path = Path(output_dir) / RESULTS_JSON
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if results.get("status") != "completed" or "test" not in results:
        return None
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # compared the way results.json stores it (JSON types, str() of anything else)
    if json.loads(json.dumps(resolved, default=str)) != results.get("config"):
        return None
    return results
