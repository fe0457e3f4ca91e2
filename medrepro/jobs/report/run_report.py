"""``report.md``: one run (a training run folder, or eval.py's folder) reported as the
medical-imaging reporting guidelines ask (CLAIM 2024, STARD 2015, TRIPOD+AI), written from
the folder's own files (results.json, split.csv, predictions.csv, val_predictions.csv,
metrics.csv, gallery/, plots/) so that ``write_run_report`` can rewrite it any time.

Order: the deviations from the experiment and what the pre-training checks allowed (before
any number), the data flow, the model and how it was selected, discrimination, the
operating point, calibration, failure analysis, which epoch each number comes from, the
paper comparison (experiments with a ``reference:``), the statistical methods, how to
reproduce the run, and the CLAIM / TRIPOD+AI checklist pointing to these sections.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from medrepro.core.run_folder import REPORT_MD, write_atomic
from medrepro.jobs.report import run_results, run_sections
from medrepro.jobs.report.guideline_checklist import checklist_table, section_link
from medrepro.jobs.report.run_contents import RunContents, read_run_contents
from medrepro.jobs.report.run_metrics import RESAMPLES, auroc_estimate

log = logging.getLogger(__name__)
REPRODUCE = "Reproduce"
CHECKLIST = "Reporting checklist (CLAIM 2024, TRIPOD+AI)"


def write_run_report(run_dir: str | Path, resamples: int = RESAMPLES) -> Path | None:
    """Write ``report.md`` into ``run_dir`` from its files; ``None`` when the folder has no
    results.json. ``resamples``: the patients' bootstrap resamples of the AUROC interval."""
    run = read_run_contents(run_dir)
    if run is None:
        return None
    return write_atomic(Path(run_dir) / REPORT_MD, run_report_text(run, resamples))


def write_run_report_after_job(run_dir: str | Path) -> Path | None:
    """:func:`write_run_report` at the end of a job: a report that cannot be written is
    logged as a warning and the completed run stands (the tests call
    :func:`write_run_report` itself, where an error fails them)."""
    try:
        return write_run_report(run_dir)
    except Exception as error:  # noqa: BLE001  (a by-product: the run's results stand)
        log.warning("report.md was not written (%s: %s).", type(error).__name__, error)
        return None


def run_report_text(run: RunContents, resamples: int = RESAMPLES) -> str:
    results = run.results
    model = (run.config.get("model") or {}).get("name", "model")
    kind = "Evaluation of a trained model" if run.evaluation else "Training run"
    estimate = (auroc_estimate(run.test.truth, run.test.probabilities, run.test.patients,
                               resamples=resamples) if run.test is not None else None)
    record = run_sections.deviation_record(run)
    lines = [f"# Run report: {model} on {run.data.get('name') or 'a data set'}", "",
             (f"{kind} ({run.folder.name}); status {results.get('status')}, finished "
              f"{results.get('finished_at', 'n/a')}. Written by medrepro from this folder's files; "
              "the sections follow CLAIM 2024, STARD 2015 and TRIPOD+AI (checklist at the end)."), ""]
    sections: dict[str, list[str]] = {
        "deviations": run_sections.deviation_lines(record),
        "allowed": run_sections.allowed_lines(run),
        "data_flow": run_sections.data_flow_lines(run),
        "model": run_sections.model_lines(run),
        "model_selection": run_sections.model_selection_lines(run),
        "discrimination": run_results.discrimination_lines(run, estimate),
        "operating_point": run_results.operating_point_lines(run),
        "calibration": run_results.calibration_lines(run),
        "failure_analysis": run_results.failure_lines(run),
        "epochs": run_sections.epoch_lines(run),
        "paper_comparison": run_results.paper_lines(run, record.get("deviations")),
        "statistics_methods": run_results.methods_lines(run.binary, resamples),
        "reproduce": reproduce_lines(run),
    }
    for section in sections.values():
        lines += section
    lines += [f"## {CHECKLIST}", "",
              ("Each item of CLAIM 2024 (Tejani et al., Radiology: Artificial Intelligence 2024) and "
               "the TRIPOD+AI items a run bears on (Collins et al., BMJ 2024), paraphrased, with the "
               "section of this report that answers it; what a run cannot know is left to the author."),
              "", *checklist_table(checklist_answers(sections, record))]
    return "\n".join(lines) + "\n"


def checklist_answers(sections: dict[str, list[str]], record: dict) -> dict[str, str]:
    """Section key -> a link to the section that answers it (only sections in the report)."""
    answers = {}
    for key, lines in sections.items():
        if key == "allowed" or not lines:
            continue
        if key == "deviations" and record.get("experiment") is None:
            continue  # nothing compared: the author states how the run departs from the paper
        answers[key] = section_link(lines[0].removeprefix("## "))
    answers["split"] = answers["data"] = answers["data_flow"]
    return answers


def reproduce_lines(run: RunContents) -> list[str]:
    results = run.results
    command = run_command(run.folder)
    versions = ", ".join(f"{k} {v}" for k, v in (results.get("versions") or {}).items() if v)
    device = results.get("device") or {}
    lines = [f"## {REPRODUCE}", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines.append(f"Versions: {versions or 'not recorded'}. Device: "
                 f"{device.get('gpu') or device.get('accelerator') or '?'}; precision "
                 f"{results.get('precision', '?')}. Files: results.json (every number and the "
                 "resolved configuration), predictions.csv, split.csv, metrics.csv, model_card.md.")
    return [*lines, ""]


def run_command(folder: Path) -> str | None:
    """``python train.py OVERRIDES`` (eval.py, ...) from the folder's .hydra/ files."""
    hydra_dir = folder / ".hydra"
    try:
        overrides = [str(o) for o in OmegaConf.load(hydra_dir / "overrides.yaml")]
        job = OmegaConf.select(OmegaConf.load(hydra_dir / "hydra.yaml"), "hydra.job.name") or "train"
    except (OSError, ValueError):
        return None
    return " ".join(["python", f"{job}.py", *overrides])
