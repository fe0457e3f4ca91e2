"""What the top of the sweep report says before any number: the settings in which the runs
differ from their experiment (the paper's protocol), the pre-training checks a run was
allowed to pass, which epoch each number comes from, and the data flow."""

from __future__ import annotations

import json

from medrepro.jobs.report.runs import Run


def _jobs(runs: list[Run], total: int) -> str:
    jobs = ", ".join(str(r.job) for r in runs)
    noun = "job" if len(runs) == 1 else "jobs"
    return f"{noun} {jobs} ({len(runs)} of {total})"


def _value(value) -> str:
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def deviation_lines(runs: list[Run]) -> list[str]:
    """Each setting in which runs differ from their experiment config (results.json
    ``deviations``), with the runs that do; nothing where no run records it."""
    recorded = [r for r in runs if "deviations" in r.results]
    if not recorded:
        return []
    experiments = sorted({str(r.results.get("experiment")) for r in recorded
                          if r.results.get("experiment")})
    if not experiments:
        return [("- **Deviations from an experiment:** the runs were not started from an "
                "experiment config, so there is no protocol to compare with.")]
    groups: dict[tuple, list[Run]] = {}
    for run in recorded:
        for item in run.results.get("deviations") or []:
            key = (item.get("key"), json.dumps(item.get("experiment"), sort_keys=True),
                   json.dumps(item.get("run"), sort_keys=True))
            groups.setdefault(key, []).append(run)
    name = ", ".join(f"`{e}`" for e in experiments)
    lines = []
    if not groups:
        lines.append(f"- **Deviations from the experiment {name}:** none; every run used the "
                     "experiment's settings.")
    else:
        lines.append(f"- **Deviations from the experiment {name}** (settings in which runs "
                     "differ from the experiment config, i.e. from the paper's protocol: compare "
                     "with the paper's numbers knowing them):")
        for (key, experiment, value), members in groups.items():
            lines.append(f"  - `{key}`: experiment {_value(json.loads(experiment))}, run "
                         f"{_value(json.loads(value))} ({_jobs(members, len(runs))})")
    unrecorded = [r for r in runs if r not in recorded and r.results]
    if unrecorded:
        lines.append(f"  - not recorded for {_jobs(unrecorded, len(runs))} (older runs)")
    return lines


def allowed_check_lines(runs: list[Run]) -> list[str]:
    """The pre-training checks runs were allowed to pass (results.json ``allowed_checks``),
    with the counts; nothing where no run records them."""
    recorded = [r for r in runs if r.results.get("allowed_checks")]
    if not recorded:
        return []
    leakage = [r for r in recorded if (r.results["allowed_checks"].get("allow_leakage") or {}).get("set")]
    skipped = [r for r in recorded if (r.results["allowed_checks"].get("skip_unreadable") or {}).get("set")]
    lines = []
    if leakage:
        counts = {key: [int((r.results["allowed_checks"]["allow_leakage"]).get(key) or 0) for r in leakage]
                  for key in ("test_images_with_copy_in_training", "files_across_splits",
                              "groups_across_splits", "patients_in_several_splits")}
        lines.append(
            f"- **Trained despite leakage** (`data.checks.allow_leakage=true`, {_jobs(leakage, len(runs))}): "
            f"{_span(counts['test_images_with_copy_in_training'])} test image(s) per run have an "
            f"exact or near copy in training; {_span(counts['files_across_splits'])} file(s) and "
            f"{_span(counts['groups_across_splits'])} group(s) of copies across splits; "
            f"{_span(counts['patients_in_several_splits'])} patient(s) in several splits. Test "
            "metrics of these runs are optimistic.")
    if skipped:
        numbers = [int((r.results["allowed_checks"]["skip_unreadable"]).get("skipped") or 0) for r in skipped]
        lines.append(f"- **Unreadable files skipped** (`data.checks.skip_unreadable=true`, "
                     f"{_jobs(skipped, len(runs))}): {_span(numbers)} file(s) per run left out.")
    if not lines:
        lines.append("- **Pre-training checks:** none was overridden (allow_leakage and "
                     "skip_unreadable were off in every run that records them).")
    return lines


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low} to {high}"


def epoch_lines(runs: list[Run]) -> list[str]:
    """Which epoch the val/*, test/* and train/* numbers come from."""
    completed = [r for r in runs if r.completed]
    if not completed:
        return ["No run completed."]
    tested = [r for r in completed if r.tested_epoch is not None]
    which = sorted({str((r.config or {}).get("test_checkpoint") or "?") for r in completed})
    epochs = sorted({r.tested_epoch for r in tested})
    lines = [(f"val/* and test/* come from the tested checkpoint (`test_checkpoint="
              f"{'/'.join(which)}`), train/* from metrics.csv at the same epoch, so the three "
              "describe one model. seconds_per_epoch averages all epochs run.")]
    if tested:
        lines.append("")
        lines.append("Tested epoch per job: " + ", ".join(f"job {r.job}: {r.tested_epoch}" for r in tested)
                     + f" (epochs {', '.join(map(str, epochs))}; counted from 1 as in metrics.csv).")
    untested = [r for r in completed if r.tested_epoch is None]
    if untested:
        finals = ", ".join(f"job {r.job}: {r.final_epoch}" for r in untested)
        lines += ["", (f"{_jobs(untested, len(completed))} do not record their tested epoch "
                       f"(older runs): their train/* values are read at the final epoch "
                       f"({finals}), their val/* and test/* at the tested checkpoint.")]
    return lines


def data_flow_lines(runs: list[Run], classes: list[str]) -> list[str]:
    """Images (and patients, where split.csv names them) per split and class of the first
    run that records them, and what was left out (STARD's flow diagram as a table)."""
    source = next((r for r in runs if r.data.get("split_counts")), None)
    if source is None:
        return ["No run recorded its split (a run records it when training starts)."]
    counts = source.data["split_counts"]
    names = list(classes) or sorted({c for row in counts.values() for c in row})
    patients = _patients(source)
    header = "| split | " + " | ".join(names) + " | images | patients |"
    lines = [(f"From job {source.job} (every run of a sweep with a fixed split seed has the same "
             "split; with a split per seed the counts differ slightly). Patients: distinct "
             "patient ids in split.csv (an image without an id counts as one)."), "",
             header, "|---|" + "---|" * (len(names) + 2)]
    for split, row in counts.items():
        values = [int(row.get(name, 0) or 0) for name in names]
        lines.append(f"| {split} | " + " | ".join(map(str, values)) + f" | {sum(values)} | "
                     f"{patients.get(split, '–')} |")
    skipped = source.data.get("skipped_unreadable") or []
    if skipped:
        lines += ["", (f"{len(skipped)} unreadable file(s) left out before the split "
                      "(data.checks.skip_unreadable=true).")]
    if "unused" in counts:
        lines += ["", "`unused`: images the split did not assign (e.g. beyond the paper's counts)."]
    return lines


def _patients(run: Run) -> dict[str, int]:
    split = run.split
    if split is None or "split" not in split:
        return {}
    result = {}
    for name, group in split.groupby("split"):
        ids = group.get("patient_id", None)
        if ids is None:
            continue
        known = ids.dropna().astype(str)
        known = known[known.str.strip() != ""]
        result[str(name)] = int(known.nunique() + (len(ids) - len(known)))
    return result
