"""Robust numeric helpers the rules share.

Training statistics are heavy-tailed (small batches, occasional bad batches),
trend-carrying (the loss falls) and scale-free (a loss of 1e-5 is as healthy
as one of 10). So the rules use medians rather than means, MAD rather than
standard deviation, noise from first differences rather than from levels (the
trend cancels), and ratios or log-differences rather than absolute thresholds.

All helpers are warning-free on all-NaN or empty input: they return NaN
rather than asking callers to silence numpy (``warnings.catch_warnings`` is
not thread-safe, and the service evaluates runs concurrently).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: 1.4826 * MAD estimates the standard deviation of a normal distribution.
MAD_TO_SIGMA = 1.4826
#: Relative noise floor for perfectly smooth series (a loss that never moves
#: would otherwise have zero noise and every wobble would be infinitely
#: significant).
TINY_REL = 1e-12
TINY_ABS = 1e-30
#: Standard error of a median is about sqrt(pi/2) = 1.2533 times that of a mean.
MEDIAN_SE = 1.2533


# The mean of the two middle values of huge data (1e308) overflows to inf, which is the
# answer; numpy would also warn, and the service runs with warnings as signals of bugs.
@np.errstate(over="ignore", invalid="ignore")
def nanmedian(x: np.ndarray, axis: int | None = None) -> Any:
    """Median ignoring NaN; NaN (not a warning) for an all-NaN or empty slice.

    Returns a float when ``axis`` is None, else an array reduced over ``axis``.
    ``inf`` values take part like any other value; the median of values near
    the float maximum may be inf (the mean of the two middle ones overflows).
    """
    a = np.asarray(x, dtype=float)
    if axis is None:
        f = a[~np.isnan(a)]
        return float(_median_complete(f, 0)) if f.size else float("nan")
    if a.shape[axis] == 0:
        return np.full(np.delete(a.shape, axis), np.nan)
    if not np.isnan(a).any():
        return _median_complete(a, axis)  # a partition, cheaper than the sort below
    # One sort per call instead of numpy's nanmedian, which loops in Python
    # over rows once a row is long (1,000 layers). NaN sorts last, so the n
    # non-NaN values of a slice are its first n; the median is the mean of the
    # two middle ones (the same arithmetic as np.median).
    s = np.moveaxis(np.sort(a, axis=axis), axis, -1)
    n = s.shape[-1] - np.count_nonzero(np.isnan(s), axis=-1)
    lo = np.maximum((n - 1) // 2, 0)[..., None]
    hi = np.maximum(n // 2, 0)[..., None]
    below = np.take_along_axis(s, lo, axis=-1)[..., 0]
    above = np.take_along_axis(s, hi, axis=-1)[..., 0]
    with np.errstate(invalid="ignore"):
        m = np.mean(np.stack([below, above]), axis=0)
    return np.where(n > 0, m, np.nan)


def median_gap_band(sigma: float, n_a: int, n_b: int, k: float = 3.0) -> float:
    """``k`` standard errors of the difference of two medians, of ``n_a`` and ``n_b`` samples of per-sample noise sigma.

    A median of n samples has a standard error of about MEDIAN_SE x sigma / sqrt(n).
    """
    return float(k * MEDIAN_SE * sigma * np.sqrt(1.0 / max(n_a, 1) + 1.0 / max(n_b, 1)))


def _median_complete(a: np.ndarray, axis: int) -> np.ndarray:
    """``np.median(a, axis)`` of data without NaN: the same partition and arithmetic, without its overhead.

    np.median's own bookkeeping costs ~30 us a call, as much as the partition of
    a 1,000-layer row; the aggregator takes several medians for every row it ingests.
    """
    m = a.shape[axis]
    lo, hi = (m - 1) // 2, m // 2
    part = np.partition(a, (lo, hi) if lo != hi else hi, axis=axis)
    below = np.take(part, lo, axis=axis)
    if lo == hi:
        return below
    return (below + np.take(part, hi, axis=axis)) / 2


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value below which half of the total weight lies (a median of layers weighted by their parameters)."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def mad_sigma(x: np.ndarray, axis: int | None = None) -> Any:
    """Robust standard deviation: 1.4826 * median(|x - median(x)|), NaN ignored."""
    a = np.asarray(x, dtype=float)
    if axis is None:
        med = nanmedian(a)
        return MAD_TO_SIGMA * nanmedian(np.abs(a - med))
    med = np.expand_dims(nanmedian(a, axis=axis), axis)
    return MAD_TO_SIGMA * nanmedian(np.abs(a - med), axis=axis)


def diff_sigma(x: np.ndarray, axis: int = -1) -> Any:
    """Per-sample noise of a series from its first differences.

    For x_t = trend_t + e_t with i.i.d. e, x_t - x_{t-1} = (trend step) + e_t - e_{t-1}:
    the MAD around the median difference removes a smooth trend, and the
    difference of two noise draws has sqrt(2) times the noise sigma.
    """
    d = np.diff(np.asarray(x, dtype=float), axis=axis)
    if d.ndim == 1:
        return mad_sigma(d) / np.sqrt(2.0)
    return mad_sigma(d, axis=axis) / np.sqrt(2.0)


def diff2_sigma(x: np.ndarray) -> float:
    """Per-sample noise of a sparse 1-D series from its second differences.

    x_{t+1} - 2 x_t + x_{t-1} cancels a trend's slope, not just its level, so a
    curved trend sampled sparsely (a val loss every few hundred steps) does not
    read as noise; for i.i.d. noise its standard deviation is sqrt(6) sigma.
    """
    a = np.asarray(x, dtype=float)
    if a.size < 3:
        return float("nan")
    return float(mad_sigma(np.diff(a, n=2)) / np.sqrt(6.0))


def median3(x: np.ndarray) -> np.ndarray:
    """Centred rolling median of 3 (2 at the ends): one low outlier cannot set a minimum."""
    a = np.asarray(x, dtype=float)
    if a.size < 3:
        return a.copy()
    mid = np.median(np.stack([a[:-2], a[1:-1], a[2:]]), axis=0)
    return np.r_[(a[0] + a[1]) / 2.0, mid, (a[-2] + a[-1]) / 2.0]


def safe_ratio(num: Any, den: Any) -> Any:
    """num / den with NaN where den is 0 or NaN (never a warning)."""
    n = np.asarray(num, dtype=float)
    d = np.asarray(den, dtype=float)
    ok = np.isfinite(d) & (d != 0)
    out = np.divide(n, np.where(ok, d, 1.0))
    out = np.where(ok, out, np.nan)
    return float(out) if out.ndim == 0 else out


def run_lengths(mask: np.ndarray) -> np.ndarray:
    """Length of the run of True ending at each index (0 where False)."""
    m = np.asarray(mask, dtype=bool)
    idx = np.arange(m.size)
    # Index of the most recent False at or before each position; -1 if none.
    last_false = np.maximum.accumulate(np.where(~m, idx, -1)) if m.size else idx
    return np.where(m, idx - last_false, 0)


def trailing_run(mask: np.ndarray) -> int:
    """Length of the run of True at the end of ``mask``."""
    r = run_lengths(mask)
    return int(r[-1]) if r.size else 0


@dataclass(frozen=True)
class Trend:
    """Level change of a noisy series between its first and last thirds."""

    first: float
    last: float
    sigma: float

    @property
    def change(self) -> float:
        """last - first (negative when a loss improves)."""
        return self.last - self.first

    def improving(self, k: float, rel: float = 0.0) -> bool:
        """The series fell by more than max(k * sigma, rel * |first|)."""
        return -self.change > max(k * self.sigma, rel * abs(self.first))

    def rising(self, k: float) -> bool:
        """The series rose by more than k * sigma."""
        return self.change > k * self.sigma


def trend(x: np.ndarray) -> Trend:
    """Compare medians of the first and last thirds of a finite series.

    The medians of n/3 samples have a standard error of about
    1.25 * sigma / sqrt(n/3) each, so a change of 2 sigma over a 40-step window
    is several standard errors: small enough to see real progress, large
    enough that noise does not look like progress.
    """
    a = np.asarray(x, dtype=float)
    k = max(1, a.size // 3)
    first = nanmedian(a[:k])
    last = nanmedian(a[-k:])
    sigma = float(diff_sigma(a)) if a.size > 2 else float("nan")
    floor = TINY_REL * abs(nanmedian(a)) + TINY_ABS
    sigma = max(sigma, floor) if np.isfinite(sigma) else floor
    return Trend(first=first, last=last, sigma=sigma)


def as_float(x: Any) -> float:
    """A plain Python float for evidence dicts (keeps NaN/Inf)."""
    return float(x)


def as_floats(x: Any) -> list[float]:
    """A list of plain Python floats for evidence dicts."""
    return [float(v) for v in np.asarray(x, dtype=float).ravel()]
