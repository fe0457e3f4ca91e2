"""The shared report pieces: the CLAIM 2024 / TRIPOD+AI checklist table and the sentence
that places a paper's number against our interval. Expected values are written by hand."""

from __future__ import annotations

import math

import pytest

from medrepro.jobs.report.guideline_checklist import (
    AUTHOR,
    ITEMS,
    SECTION_KEYS,
    checklist_table,
    section_link,
)
from medrepro.jobs.report.paper_comparison import paper_comparison_sentence


def _rows(lines: list[str]) -> dict[tuple[str, str], list[str]]:
    """(guideline, item number) -> the row's cells."""
    assert lines[0].startswith("| guideline | item |")
    assert set(lines[1].replace("|", "")) <= {"-", ":"}
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 5, line  # a stray "|" in a cell would break the table
        assert (cells[0], cells[1]) not in rows, f"item listed twice: {line}"
        rows[(cells[0], cells[1])] = cells
    return rows


def test_claim_items_numbered_one_to_forty_four_once():
    rows = _rows(checklist_table({}))
    claim = sorted(int(number) for guideline, number in rows if guideline == "CLAIM 2024")
    assert claim == list(range(1, 45))
    tripod = {number for guideline, number in rows if guideline == "TRIPOD+AI"}
    for wanted in ("5a", "6b", "7", "12a", "12c", "12e", "15", "17", "18f", "20a", "23a", "26"):
        assert wanted in tripod


def test_no_answers_leaves_every_item_to_the_author():
    rows = _rows(checklist_table({}))
    assert all(cells[4] == AUTHOR for cells in rows.values())


def test_each_answered_item_points_to_its_section():
    answers = {key: section_link(f"Section {key}") for key in SECTION_KEYS}
    rows = _rows(checklist_table(answers))
    expected = {  # item -> the section that must answer it (by hand, from the guideline)
        ("CLAIM 2024", "21"): "split",  # level at which partitions are disjoint
        ("CLAIM 2024", "20"): "split",
        ("CLAIM 2024", "27"): "model_selection",
        ("CLAIM 2024", "30"): "statistics_methods",
        ("CLAIM 2024", "34"): "data_flow",
        ("CLAIM 2024", "38"): "failure_analysis",
        ("TRIPOD+AI", "15"): "operating_point",
        ("TRIPOD+AI", "12f"): "calibration",
        ("TRIPOD+AI", "23a"): "calibration",
        ("TRIPOD+AI", "16"): "deviations",
    }
    for item, key in expected.items():
        assert f"(#section-{key.replace('_', '')})" in rows[item][4] or \
            f"(#section-{key})" in rows[item][4], (item, rows[item])
    # what a run cannot know stays with the author even when every section exists
    for item in [("CLAIM 2024", "11"), ("CLAIM 2024", "14"), ("CLAIM 2024", "43"),
                 ("TRIPOD+AI", "17"), ("TRIPOD+AI", "18a"), ("TRIPOD+AI", "19")]:
        assert rows[item][4] == AUTHOR, item
    # answered in part: the link, then what the author adds
    assert rows[("CLAIM 2024", "35")][4].startswith("[Section data_flow]")
    assert AUTHOR in rows[("CLAIM 2024", "35")][4]


def test_only_given_sections_are_cited():
    rows = _rows(checklist_table({"calibration": "[Calibration](#calibration)"}))
    assert rows[("TRIPOD+AI", "12f")][4] == "[Calibration](#calibration)"
    assert rows[("TRIPOD+AI", "15")][4] == AUTHOR  # no operating point section given
    cited = [cells for cells in rows.values() if cells[4] != AUTHOR]
    assert cited and all("[Calibration](#calibration)" in cells[4] for cells in cited)


def test_unknown_section_key_is_refused():
    with pytest.raises(ValueError, match="dataflow"):
        checklist_table({"dataflow": "x"})


def test_every_item_names_known_keys():
    for item in ITEMS:
        assert set(item.keys) <= set(SECTION_KEYS), item


def test_section_link_anchor():
    assert section_link("Data flow (STARD)") == "[Data flow (STARD)](#data-flow-stard)"
    assert section_link("Operating point") == "[Operating point](#operating-point)"


# ------------------------------------------------------------------ paper comparison


@pytest.mark.parametrize(("paper", "where"), [(0.961, "inside"), (0.99, "above"), (0.90, "below"),
                                              (0.94, "inside"), (0.975, "inside")])
def test_percent_inside_above_below(paper, where):
    sentence = paper_comparison_sentence("test/acc", paper, 0.95, 0.94, 0.975, percent=True)
    shown = f"{100 * paper:.1f} %"
    assert sentence.startswith(f"test/acc: the paper's {shown} lies {where} our 95 % CI, 94.0 to 97.5 %")


def test_issue_example_words_and_difference():
    sentence = paper_comparison_sentence("test/acc", 0.961, 0.95, 0.94, 0.975, percent=True)
    assert sentence == ("test/acc: the paper's 96.1 % lies inside our 95 % CI, 94.0 to 97.5 % "
                        "(ours 95.0 %, 1.1 points below the paper).")


def test_plain_numbers():
    sentence = paper_comparison_sentence("test/auroc", 0.80, 0.912, 0.85, 0.96, percent=False)
    assert sentence == ("test/auroc: the paper's 0.800 lies below our 95 % CI, 0.850 to 0.960 "
                        "(ours 0.912, 0.112 above the paper).")
    above = paper_comparison_sentence("val/loss", 1.2766, 0.4, 0.3, 0.5, percent=False)
    assert "1.277 lies above our 95 % CI, 0.300 to 0.500" in above
    assert "0.877 below the paper" in above


def test_rounding_never_contradicts_the_words():
    # 97.51 % is above 97.50 %: at one decimal both read 97.5, so more decimals are shown
    sentence = paper_comparison_sentence("test/acc", 0.9751, 0.95, 0.94, 0.975, percent=True)
    assert "97.51 % lies above our 95 % CI, 94.00 to 97.50 %" in sentence


@pytest.mark.parametrize("missing", [None, math.nan])
def test_no_interval_is_said(missing):
    sentence = paper_comparison_sentence("test/acc", 0.90, 0.85, missing, 0.9, percent=True)
    assert "lies" not in sentence
    assert "no interval" in sentence
    assert "85.0 %" in sentence and "90.0 %" in sentence and "5.0 points below the paper" in sentence
