"""The sweep report: every run of a sweep folder, grouped into arms, beside the paper.

``python report.py SWEEP_DIR`` (and the Hydra callback at the end of a multirun) call
:func:`medrepro.jobs.report.summary.write_report`. The report only reads run folders.
"""
