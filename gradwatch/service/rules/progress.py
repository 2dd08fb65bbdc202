"""Has a loss moved? Where it stands against its start, and whether it slopes down, both within noise.

The stagnation rule's yardsticks (its frozen-parameter judgement and its reading of lr schedules):
medians and a least-squares slope, each against the noise of the losses they summarise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .robust import median_gap_band, nanmedian
from .view import INITIAL_LOSSES


@dataclass(frozen=True)
class FromStart:
    """How far the window's loss is from where the run began, and how far noise alone could put it."""

    distance: float
    noise_band: float
    initial: float

    @classmethod
    def of(cls, initial: float, loss: np.ndarray, sigma: float) -> FromStart:
        """Both levels are medians: of the run's first INITIAL_LOSSES losses and of the window.

        A median of n noisy samples has a standard error of about 1.25 sigma / sqrt(n), so noise alone
        keeps the two within 3 x 1.25 sigma x sqrt(1/INITIAL_LOSSES + 1/n) (1.9 sigma for a 16-step
        window). Per-step sigma itself is the wrong yardstick for a difference of medians: with small
        noisy batches a linear probe whose loss had fallen by 25% still sat within 3 sigma of its start.
        """
        noise_band = median_gap_band(sigma, INITIAL_LOSSES, loss.size)
        return cls(distance=abs(nanmedian(loss) - initial), noise_band=noise_band, initial=initial)

    def never_learned(self, rel: float) -> bool:
        """Still where it began, within noise and within ``rel`` x |initial|."""
        return bool(np.isfinite(self.initial) and self.distance <= max(rel * abs(self.initial), self.noise_band))

    def can_tell(self, rel: float) -> bool:
        """Would a loss ``rel`` x |initial| below the start stand out of the noise?"""
        return bool(np.isfinite(self.initial) and self.noise_band <= rel * abs(self.initial))


def sloping_down(loss: np.ndarray, sigma: float, k: float) -> bool:
    """Is the least-squares slope of ``loss`` more than ``k`` standard errors below 0?

    Uses every loss, where the thirds' medians use two thirds of them: a probe whose loss falls 8% in
    32 steps under per-step noise of that size shows here (about 2 standard errors) and not there.
    """
    x = np.arange(loss.size, dtype=float) - (loss.size - 1) / 2.0
    spread = float(x @ x)
    if spread == 0.0 or not np.isfinite(sigma):
        return False
    slope = float(x @ (loss - loss.mean())) / spread
    return slope < -k * sigma / np.sqrt(spread)
