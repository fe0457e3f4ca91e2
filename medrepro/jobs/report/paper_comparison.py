"""One sentence that places a published number against our estimate and its 95 % interval:
"test/acc: the paper's 96.1 % lies inside our 95 % CI, 94.0 to 97.5 % (ours 95.0 %,
1.1 points below the paper)".

Inside means ``low <= paper <= high`` (the interval's ends included), decided on the
numbers themselves, not on their rounded display; the display gains decimals until the
paper's number and the end it is compared with read differently, so the words never
contradict the digits ("96.1 lies above ..., 94.0 to 96.1").
"""

from __future__ import annotations

import math

PERCENT_DECIMALS = 1  # 0.961 -> "96.1 %"
PLAIN_DECIMALS = 3  # 0.912 -> "0.912" (AUROC, loss, ...)
EXTRA_DECIMALS = 4  # at most this many more where rounding would hide the difference


def paper_comparison_sentence(metric: str, paper: float, ours: float | None, low: float | None,
                              high: float | None, percent: bool) -> str:
    """Whether the paper's value of ``metric`` lies inside, above or below our 95 % CI
    ``[low, high]``, beside our value and the difference. ``percent``: the values are
    proportions shown as percentages (differences in points); otherwise plain numbers.
    An interval with a missing end, or no value of ours, is said in words."""
    if not _number(paper):
        return f"{metric}: the paper gives no number to compare with."
    has_interval = _number(low) and _number(high)
    decimals = _decimals(paper, [v for v in (low, high) if _number(v)], percent)

    def show(value: float) -> str:
        return _format(value, decimals, percent)

    gap = _difference(ours, paper, decimals, percent) if _number(ours) else None
    if not has_interval:
        if gap is None:
            return f"{metric}: the paper's {show(paper)} cannot be compared (we have no value)."
        return (f"{metric}: ours {show(ours)} against the paper's {show(paper)} ({gap}); "
                "we have no interval to say whether the difference is more than chance.")
    low, high = sorted((float(low), float(high)))
    where = "inside" if low <= paper <= high else ("above" if paper > high else "below")
    interval = f"{_bare(low, decimals, percent)} to {show(high)}"  # "94.0 to 97.5 %"
    sentence = f"{metric}: the paper's {show(paper)} lies {where} our 95 % CI, {interval}"
    if gap is not None:
        sentence += f" (ours {show(ours)}, {gap})"
    return sentence + "."


def _difference(ours: float, paper: float, decimals: int, percent: bool) -> str:
    scale = 100.0 if percent else 1.0
    gap = round((ours - paper) * scale, decimals)
    unit = " points" if percent else ""
    if gap == 0:
        return "the same as the paper's at this precision"
    side = "above" if gap > 0 else "below"
    return f"{abs(gap):.{decimals}f}{unit} {side} the paper"


def _decimals(paper: float, ends: list[float], percent: bool) -> int:
    """The fewest decimals (from the default) at which the paper's value reads differently
    from every interval end it differs from."""
    base = PERCENT_DECIMALS if percent else PLAIN_DECIMALS
    for decimals in range(base, base + EXTRA_DECIMALS + 1):
        shown = _format(paper, decimals, percent)
        if all(end == paper or _format(end, decimals, percent) != shown for end in ends):
            return decimals
    return base + EXTRA_DECIMALS


def _format(value: float, decimals: int, percent: bool) -> str:
    return f"{_bare(value, decimals, percent)} %" if percent else _bare(value, decimals, percent)


def _bare(value: float, decimals: int, percent: bool) -> str:
    return f"{(100 * value if percent else value):.{decimals}f}"


def _number(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
