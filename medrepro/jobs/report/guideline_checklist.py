"""The reporting-guideline checklist of a report: the items of CLAIM (2024 update; Tejani
et al., Radiology: Artificial Intelligence 2024) and TRIPOD+AI (Collins et al., BMJ 2024),
each in a short paraphrase with the guideline's item number, pointing to the report section
that answers it or marked "the author must complete this".

Only a run's own files are known to the report, so items about the study's clinical
setting, ethics, registration, funding or the reference standard's readers are always left
to the author; items the run can answer name the section keys (SECTION_KEYS) that answer
them. Check the item numbers against the published checklists when citing them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AUTHOR = "the author must complete this"

# the section keys a report may answer (the ``answers`` of checklist_table)
SECTION_KEYS = {
    "deviations": "settings that differ from the experiment (the paper's protocol)",
    "data": "data set, its source and pre-processing",
    "data_flow": "images and patients per split and class, exclusions (STARD flow)",
    "split": "how the data were partitioned and at which level",
    "model": "architecture, initialisation, training settings",
    "model_selection": "monitor, tested checkpoint, epochs, early stopping",
    "discrimination": "AUROC and accuracy with 95 % intervals",
    "operating_point": "threshold, 2x2 table, sensitivity, specificity, PPV, NPV",
    "calibration": "calibration errors, Brier score, reliability diagram",
    "failure_analysis": "misclassified images (gallery)",
    "statistics_methods": "how each interval and test was computed",
    "epochs": "which epoch each reported number comes from",
    "paper_comparison": "the paper's numbers against our intervals",
    "reproduce": "command, versions, code",
}


@dataclass(frozen=True)
class Item:
    guideline: str  # "CLAIM 2024" or "TRIPOD+AI"
    number: str  # the guideline's item number
    group: str  # the guideline's section
    topic: str  # short paraphrase
    keys: tuple[str, ...] = ()  # section keys that answer it (any one suffices)
    author_adds: str = ""  # what the author still adds where a section answers it in part


CLAIM = "CLAIM 2024"
TRIPOD = "TRIPOD+AI"

ITEMS: tuple[Item, ...] = (
    # CLAIM 2024 update
    Item(CLAIM, "1", "Title/Abstract", "Title names an AI study and the kind of method"),
    Item(CLAIM, "2", "Title/Abstract", "Structured abstract"),
    Item(CLAIM, "3", "Introduction", "Clinical background, intended use and role of the AI"),
    Item(CLAIM, "4", "Introduction", "Objectives and hypotheses"),
    Item(CLAIM, "5", "Methods: study design", "Prospective or retrospective"),
    Item(CLAIM, "6", "Methods: study design", "Study goal (model creation, feasibility, ...)",
         ("deviations",), "state the goal; the report lists how the run departs from the paper"),
    Item(CLAIM, "7", "Methods: data", "Data sources", ("data",), "institution, dates, devices"),
    Item(CLAIM, "8", "Methods: data", "Eligibility: inclusion and exclusion", ("data_flow",),
         "how the source cohort was selected"),
    Item(CLAIM, "9", "Methods: data", "Pre-processing", ("data", "model")),
    Item(CLAIM, "10", "Methods: data", "Selection of data subsets", ("data_flow",)),
    Item(CLAIM, "11", "Methods: data", "De-identification"),
    Item(CLAIM, "12", "Methods: data", "Handling of missing or unreadable data", ("data_flow",)),
    Item(CLAIM, "13", "Methods: data", "Image acquisition protocol"),
    Item(CLAIM, "14", "Methods: ground truth", "Reference standard defined"),
    Item(CLAIM, "15", "Methods: ground truth", "Rationale for the reference standard"),
    Item(CLAIM, "16", "Methods: ground truth", "Who annotated, and their qualifications"),
    Item(CLAIM, "17", "Methods: ground truth", "Annotation tools and method"),
    Item(CLAIM, "18", "Methods: ground truth", "Inter- and intra-reader variability"),
    Item(CLAIM, "19", "Methods: data partitions", "Sample size and how it was chosen",
         ("data_flow",), "why this many cases (the report gives the counts and interval widths)"),
    Item(CLAIM, "20", "Methods: data partitions", "How data were assigned to partitions, proportions",
         ("split",)),
    Item(CLAIM, "21", "Methods: data partitions", "Level at which partitions are disjoint",
         ("split",)),
    Item(CLAIM, "22", "Methods: testing data", "Test set: internal or external, how it was held out",
         ("split",), "whether the test data come from another site or time"),
    Item(CLAIM, "23", "Methods: model", "Model: inputs, outputs, architecture", ("model",)),
    Item(CLAIM, "24", "Methods: model", "Software, libraries and versions", ("reproduce",)),
    Item(CLAIM, "25", "Methods: model", "Initialisation of parameters (random, transfer)",
         ("model",)),
    Item(CLAIM, "26", "Methods: training", "Training: augmentation, hyperparameters, runs",
         ("model",)),
    Item(CLAIM, "27", "Methods: training", "How the final model was selected", ("model_selection",)),
    Item(CLAIM, "28", "Methods: training", "Ensembling, if any", ("model",)),
    Item(CLAIM, "29", "Methods: evaluation", "Performance metrics and their rationale",
         ("discrimination",)),
    Item(CLAIM, "30", "Methods: evaluation", "Uncertainty and significance methods",
         ("statistics_methods",)),
    Item(CLAIM, "31", "Methods: evaluation", "Robustness or sensitivity analysis"),
    Item(CLAIM, "32", "Methods: evaluation", "Explainability methods and their validation",
         ("failure_analysis",), "how saliency maps were checked"),
    Item(CLAIM, "33", "Methods: evaluation", "External testing"),
    Item(CLAIM, "34", "Results", "Flow of cases with inclusions and exclusions", ("data_flow",)),
    Item(CLAIM, "35", "Results", "Demographic and clinical characteristics per partition",
         ("data_flow",), "age, sex and clinical characteristics (the report gives classes only)"),
    Item(CLAIM, "36", "Results", "Performance on every partition", ("epochs",)),
    Item(CLAIM, "37", "Results", "Diagnostic accuracy with its precision (95 % CI)",
         ("operating_point", "discrimination")),
    Item(CLAIM, "38", "Results", "Failure analysis of misclassified cases", ("failure_analysis",)),
    Item(CLAIM, "39", "Discussion", "Limitations: bias, uncertainty, generalisability",
         ("deviations",), "interpretation of the limitations"),
    Item(CLAIM, "40", "Discussion", "Implications for practice and intended use"),
    Item(CLAIM, "41", "Other information", "Registration"),
    Item(CLAIM, "42", "Other information", "Where the protocol can be accessed"),
    Item(CLAIM, "43", "Other information", "Funding and the funder's role"),
    Item(CLAIM, "44", "Other information", "Availability of data, code and model",
         ("reproduce",), "where the code, weights and data are published"),
    # TRIPOD+AI 2024 (the items a run can answer or an author must add)
    Item(TRIPOD, "5a", "Methods: data", "Data sources", ("data",), "setting, dates"),
    Item(TRIPOD, "6a", "Methods: participants", "Study setting and centres"),
    Item(TRIPOD, "6b", "Methods: participants", "Eligibility criteria", ("data_flow",),
         "selection of the source population"),
    Item(TRIPOD, "7", "Methods: data preparation", "Pre-processing and quality checks",
         ("data", "data_flow")),
    Item(TRIPOD, "8a", "Methods: outcome", "Outcome and how it was assessed"),
    Item(TRIPOD, "10", "Methods: sample size", "Sample size", ("data_flow",),
         "how the size was decided"),
    Item(TRIPOD, "11", "Methods: missing data", "Handling of missing data", ("data_flow",)),
    Item(TRIPOD, "12a", "Methods: analysis", "How the data were used: partitions and their level",
         ("split",)),
    Item(TRIPOD, "12c", "Methods: analysis", "Model type, building, tuning and selection",
         ("model", "model_selection")),
    Item(TRIPOD, "12e", "Methods: analysis", "Performance measures incl. calibration, with CIs",
         ("statistics_methods",)),
    Item(TRIPOD, "12f", "Methods: analysis", "Model updating, e.g. recalibration", ("calibration",)),
    Item(TRIPOD, "14", "Methods: fairness", "Methods to assess fairness across groups"),
    Item(TRIPOD, "15", "Methods: model output", "Output and threshold, and how it was chosen",
         ("operating_point",)),
    Item(TRIPOD, "16", "Methods: development vs evaluation", "Differences between development and "
         "evaluation data or settings", ("deviations",)),
    Item(TRIPOD, "17", "Methods: ethics", "Ethics approval and consent"),
    Item(TRIPOD, "18a", "Open science", "Funding"),
    Item(TRIPOD, "18b", "Open science", "Conflicts of interest"),
    Item(TRIPOD, "18c", "Open science", "Protocol"),
    Item(TRIPOD, "18d", "Open science", "Registration"),
    Item(TRIPOD, "18e", "Open science", "Data sharing"),
    Item(TRIPOD, "18f", "Open science", "Code sharing", ("reproduce",), "where the code is published"),
    Item(TRIPOD, "19", "Patient and public involvement", "Patient and public involvement"),
    Item(TRIPOD, "20a", "Results: participants", "Flow of participants with outcome numbers",
         ("data_flow",)),
    Item(TRIPOD, "20b", "Results: participants", "Characteristics per data source and partition",
         ("data_flow",), "demographics and clinical characteristics"),
    Item(TRIPOD, "22", "Results: model", "Full model details, or how to obtain and use it",
         ("model", "reproduce")),
    Item(TRIPOD, "23a", "Results: performance", "Performance with CIs: discrimination, calibration",
         ("discrimination", "calibration")),
    Item(TRIPOD, "23b", "Results: performance", "Performance in subgroups (heterogeneity)"),
    Item(TRIPOD, "25", "Discussion", "Interpretation, including fairness"),
    Item(TRIPOD, "26", "Discussion", "Limitations", ("deviations",), "interpretation"),
)


def section_link(heading: str) -> str:
    """A markdown link to ``heading`` in the same file, with the anchor GitHub (and most
    renderers) give it: lower case, punctuation removed, spaces as hyphens."""
    anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
    return f"[{heading}](#{anchor})"


def checklist_table(answers: dict[str, str]) -> list[str]:
    """The checklist as markdown table lines. ``answers`` maps a section key (SECTION_KEYS)
    to the markdown put in the table for it (e.g. ``section_link("Data flow (STARD)")``);
    an item answered by none of the given keys says "the author must complete this", and
    one answered in part names what the author still adds."""
    unknown = sorted(set(answers) - set(SECTION_KEYS))
    if unknown:
        raise ValueError(f"unknown checklist section key(s) {unknown}; known: {sorted(SECTION_KEYS)}")
    lines = ["| guideline | item | section | topic | answered in |", "|---|---|---|---|---|"]
    for item in ITEMS:
        where = [answers[key] for key in item.keys if answers.get(key)]
        if not where:
            cell = AUTHOR
        else:
            cell = ", ".join(dict.fromkeys(where))
            if item.author_adds:
                cell += f"; {AUTHOR}: {item.author_adds}"
        lines.append(f"| {item.guideline} | {item.number} | {item.group} | {item.topic} | {cell} |")
    return lines
