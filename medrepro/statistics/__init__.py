"""Statistics of test results: confidence intervals (Wilson, DeLong, grouped bootstrap, an
arm's mean over seeds), tests between arms (paired DeLong, Holm's correction), the
operating point chosen on the validation set, and calibration.

Pure functions of arrays: nothing here reads a run folder or knows of Lightning. Each
function's docstring states its method and the reference it follows; the modules also
hold the sentences that a report prints beside the numbers.
"""
