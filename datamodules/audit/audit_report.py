"""Render a data audit (:func:`medrepro.datamodules.audit.data_audit.audit_data`) as ``audit.json``,
``audit.md`` and a short summary for the terminal."""

from __future__ import annotations

import json
from pathlib import Path

from medrepro.datamodules.audit.file_inspection import TOO_LARGE

LISTED = 25  # entries per section in audit.md (audit.json has them all)


def write_audit(audit: dict, folder: str | Path) -> tuple[Path, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "audit.json", folder / "audit.md"
    json_path.write_text(json.dumps(audit, indent=2, default=str))
    md_path.write_text(markdown(audit))
    return json_path, md_path


def summary_lines(audit: dict) -> list[str]:
    s = audit["summary"]
    data = audit.get("data", {})
    totals = audit.get("class_totals") or {}
    counts = "; ".join(
        f"{split} " + ", ".join(f"{label} {n}" for label, n in per_class.items())
        for split, per_class in audit["counts"].items()
    )
    props = audit["image_properties"]
    lines = [
        f"{data.get('name', 'data')}: {s['files']} files ({_inline(totals)})",
        f"per split: {counts}",
        f"unreadable, truncated, zero-byte or non-image files: {s['problem_files']}",
        *_bomb_lines(audit),
        (f"exact duplicate groups (same bytes or pixels): {s['exact_duplicate_groups']} "
         f"({s['exact_duplicate_groups_across_splits']} across splits)"),
    ]
    if s["near_duplicate_pairs"] is not None:
        lines.append(
            f"near duplicates confirmed (pHash distance <= {audit['near_duplicate_max_distance']}"
            f", similarity >= {audit['near_duplicate_min_similarity']}): "
            f"{s['near_duplicate_pairs']} pair(s) ({s['near_duplicate_pairs_across_splits']} "
            f"across splits); candidates rejected: {s['near_duplicate_candidates_rejected']}"
        )
    if "copy_groups" in s:
        lines.append(
            f"groups of copies: {s['copy_groups']} ({s['copy_groups_kept_in_one_split']} kept "
            f"in one split, {s['copy_groups_across_splits']} across splits)"
        )
    if s["duplicates_with_different_labels"]:
        lines.append(f"groups of copies with different labels: {s['duplicates_with_different_labels']}"
                     + (f" ({s['conflicting_label_files_excluded']} files left out of the split)"
                        if s.get("conflicting_label_files_excluded") else ""))
    patients = s["patients_in_several_splits"]
    several = s.get("patients_with_several_images")
    lines.append(
        "patients in more than one split: "
        + ("unknown (the file names carry no patient id)" if patients is None else str(patients))
        + (f"; patients with several images: {several}, "
           f"{s.get('patients_kept_in_one_split')} of them kept in one split"
           if several is not None else "")
    )
    lines.append(
        f"formats {_inline(props['formats'])}; modes {_inline(props['modes'])}; "
        f"bit depths {_inline(props['bit_depths'])}; "
        f"width {_range(props['width'])}, height {_range(props['height'])} px"
    )
    other = audit["files_not_taken"]
    if other["count"] or other["hidden_or_macosx"]:
        lines.append(
            f"files not taken: {other['count']} ({_inline(other['by_extension'])}), "
            f"hidden or __MACOSX: {other['hidden_or_macosx']}"
        )
    shortfall = data.get("split_shortfall")
    if shortfall:
        lines.append("split differs from its targets (whole groups kept together): " + "; ".join(
            f"{d['split']} {d['class']} {d['got']} instead of {d['wanted']}" for d in shortfall))
    if data.get("split_error"):
        lines.append(f"split not made: {data['split_error']}")
    return lines


def _bomb_lines(audit: dict) -> list[str]:
    """A line naming the images refused as possible decompression bombs, and the setting
    that allows them, when there are any."""
    bombs = audit["summary"].get("possible_decompression_bombs")
    if not bombs:
        return []
    first = next(p for p in audit["problems"] if p["problem"] == TOO_LARGE)
    return [(f"possible decompression bombs: {bombs}, e.g. {first['path']} ({first['detail']}); "
             "set data.checks.max_image_pixels higher if they are genuine images")]


def markdown(audit: dict) -> str:
    data = audit.get("data", {})
    out = [f"# Data audit: {data.get('name', '')}", ""]
    out += [f"- {key.replace('_', ' ')}: `{value}`" for key, value in data.items()]
    out += ["", "## Summary", ""] + [f"- {line}" for line in summary_lines(audit)]
    out += ["", "## Images per split and class", ""] + _counts_table(audit["counts"])
    out += _section(
        "Unreadable, truncated, zero-byte and non-image files", audit["problems"],
        lambda p: f"`{p['path']}` ({p['split']}, {p['label']}): {p['problem']} — {p['detail']}",
    )
    out += _section(
        "Exact duplicates (same bytes or same decoded pixels)", audit["exact_duplicates"],
        lambda g: f"same {g.get('same', 'bytes')}: " + _group_line(g),
    )
    if audit["near_duplicate_max_distance"] is not None:
        distance = audit["near_duplicate_max_distance"]
        similarity = audit["near_duplicate_min_similarity"]
        out += _section(
            f"Near duplicates, confirmed (pHash distance <= {distance} of 64 bits and "
            f"structural similarity >= {similarity} after alignment)",
            audit["near_duplicates"], _pair_line,
        )
        out += _section(
            f"Near-duplicate candidates rejected (pHash distance <= {distance}, but "
            f"structural similarity < {similarity}: different images with a similar layout)",
            audit.get("near_duplicate_candidates_rejected", []), _pair_line,
        )
        out += _section(
            "Groups of copies (joined transitively; the split keeps each in one split)",
            audit.get("copy_groups", []), _group_line,
        )
    out += _section(
        "Copies filed under different classes, left out of training and evaluation",
        audit.get("conflicting_labels", []),
        lambda g: ", ".join(f"`{f['path']}` ({f['label']})" for f in g),
    )
    if audit["patient_ids_known"]:
        out += _section(
            "Patients in more than one split", audit["patients_in_several_splits"],
            lambda p: f"`{p['patient_id']}`: " + _inline(p["images_per_split"]),
        )
    props = audit["image_properties"]
    out += ["", "## Image properties", ""]
    out += [f"- formats: {_inline(props['formats'])}", f"- modes: {_inline(props['modes'])}",
            f"- bit depths: {_inline(props['bit_depths'])}",
            f"- width: {_range(props['width'])} px; height: {_range(props['height'])} px",
            f"- file sizes: {_range(props['bytes'])} bytes",
            f"- extension does not match the format: {props['extension_differs_from_format']}"]
    other = audit["files_not_taken"]
    out += ["", "## Files the data source did not take", ""]
    out += [(f"- below `{other.get('folder', '')}`: {other['count']} "
            f"({_inline(other['by_extension'])}); hidden or `__MACOSX`: {other['hidden_or_macosx']}")]
    out += [f"  - `{path}`" for path in other["examples"]]
    return "\n".join(out) + "\n"


def _section(title: str, entries: list, line) -> list[str]:
    out = ["", f"## {title}", ""]
    if not entries:
        return out + ["None found."]
    out += [f"- {line(entry)}" for entry in entries[:LISTED]]
    if len(entries) > LISTED:
        out.append(f"- ... and {len(entries) - LISTED} more (all in audit.json)")
    return out


def _group_line(group: dict) -> str:
    flags = [flag for flag, on in (("ACROSS SPLITS", group["cross_split"]),
                                   ("DIFFERENT LABELS", group["labels_differ"])) if on]
    files = ", ".join(f"`{f['path']}` ({f['split']}, {f['label']})" for f in group["files"])
    return (f"**{' / '.join(flags)}** " if flags else "") + files


def _pair_line(pair: dict) -> str:
    return (f"distance {pair['distance']}, similarity {pair['similarity']:.3f}: "
            + _group_line(pair))


def _counts_table(counts: dict) -> list[str]:
    labels = sorted({label for per_class in counts.values() for label in per_class})
    rows = ["| split | " + " | ".join(labels) + " | total |",
            "|---|" + "---|" * (len(labels) + 1)]
    for split, per_class in counts.items():
        values = [per_class.get(label, 0) for label in labels]
        rows.append(f"| {split} | " + " | ".join(map(str, values)) + f" | {sum(values)} |")
    return rows


def _inline(mapping: dict) -> str:
    return ", ".join(f"{key}: {value}" for key, value in mapping.items()) or "none"


def _range(spread: dict) -> str:
    if not spread:
        return "n/a"
    return f"{spread['min']}–{spread['max']} (median {spread['median']:g})"
