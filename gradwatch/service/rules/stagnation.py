"""The ``stagnation`` rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import StagnationConfig
from .lr_schedule import small_lr_intended
from .progress import FromStart, sloping_down
from .robust import Trend, as_float, nanmedian, trailing_run, trend
from .series import (
    clean_grad_norm,
    finite_loss,
    global_update_ratio,
    global_weight_norm,
    has_converged,
    memo,
    zero_loss_rows,
)
from .view import INITIAL_LOSSES, Finding, RunView

ADVICE = {
    "tiny_updates": (
        "Training has stalled with tiny updates: raise the learning rate (an update/weight ratio near 1e-3 is "
        "typical) and check that the optimizer holds all parameters and the scheduler did not set lr to ~0."
    ),
    "dead_gradients": (
        "Gradients are zero in every layer: check that the loss depends on the parameters (detached tensors, "
        "requires_grad=False), and for dead ReLUs or saturated activations."
    ),
    "graph_cut": (
        "Almost every parameter the optimizer trains gets no gradient at all: the loss does not reach them. "
        "Look for a .detach(), torch.no_grad() or torch.inference_mode() around their part of the forward pass, "
        "or a branch it skips; if they are frozen on purpose, call requires_grad_(False) on them or leave them "
        "out of the optimizer."
    ),
    "all_steps_skipped": (
        "The optimizer skipped almost every step: if an AMP GradScaler keeps finding inf gradients, train in bf16 "
        "or fp32, lower the learning rate, or find the overflowing layer; otherwise check that optimizer.step() "
        "runs and that the optimizer passed to watch() is the one that trains the model (a rebuilt optimizer "
        "must hold the parameters being trained)."
    ),
    "frozen_parameters": (
        "Almost every parameter is frozen or gets no gradient, and the loss has not moved from where it started: "
        "check requires_grad and which parameters the optimizer holds."
    ),
    "loss_frozen": (
        "The loss has not moved at all: check that optimizer.step() runs, the learning rate is not zero, and "
        "the parameters being trained are the ones the loss uses."
    ),
}


def _judged_rows(view: RunView, rows: int) -> np.ndarray:
    """Indices of the newest ``rows`` stats rows whose step's loss was not exactly 0.

    A zero loss (every margin of a hinge met) has zero gradients and, under SGD, an update of exactly
    0: such a row would read as a dead, or frozen, network.
    """
    return memo(view, "stagnation.judged", lambda: np.flatnonzero(~zero_loss_rows(view)))[-rows:]


def _missing_gradients(view: RunView, cfg: StagnationConfig, picked: np.ndarray) -> np.ndarray:
    """(rows, L) for the stats rows ``picked`` (among the newest dead_rows judged ones): the layer got no gradient
    although the optimizer trains it, and the same layers got none on each of the newest dead_rows judged rows.

    A cut graph leaves the same layers without a gradient row after row. A multi-task model that trains
    one sampled tower per step, or stochastic depth, leaves different ones out each time: no cut.
    """
    missing = np.asarray(view.grad_missing, dtype=bool)
    layers = view.layer_numel.size
    newest = _judged_rows(view, cfg.dead_rows)
    none = np.zeros((picked.size, layers), dtype=bool)
    if missing.shape != (view.stat_steps.size, layers) or newest.size < cfg.dead_rows:
        return none
    recent = missing[newest]
    if not (recent == recent[0]).all():
        return none
    return np.broadcast_to(recent[0], (picked.size, layers))


def _dead_layers(view: RunView, cfg: StagnationConfig, rows: int) -> np.ndarray:
    """(rows, L) for the newest ``rows`` judged stats rows: the layer's gradient was measured and is 0, or
    ||g|| ||w|| is at most dead_grad_ratio of the loss's size; or it got none although the optimizer trains it.

    ||g|| ||w|| is, to first order, what scaling the layer's weights by (1 + e) does to the loss, over e: in
    the loss's own units, so a loss of 1e-9 (an autoencoder on signals in volts) with gradients of 1e-10
    is not dead, while a saturated layer whose gradient is 1e-12 of a loss of 1 is. Against the weights
    alone the line would move with the loss's units. A layer whose weights are all 0 (a zero-initialised
    head or gate) is dead only with a zero gradient.

    An absent gradient is an exact 0 as far as the loss goes (it does not depend on those parameters):
    autograd only skips writing it. For a parameter frozen on purpose that is no news; for one the
    optimizer holds and that still requires a gradient it is a cut graph (a ``.detach()`` or
    ``torch.no_grad()`` left in the forward pass).
    """
    picked = _judged_rows(view, rows)
    g = np.asarray(view.grad_norm, dtype=float)[picked]
    w = np.asarray(view.weight_norm, dtype=float)[picked]
    _, loss = finite_loss(view, cfg.window_steps)
    scale = float(np.median(np.abs(loss))) if loss.size else np.nan
    tiny = (w > 0) & (g * w <= cfg.dead_grad_ratio * scale)
    dead = np.isfinite(g) & ((g == 0) | tiny)
    return dead | _missing_gradients(view, cfg, picked)


def _dead_shares(view: RunView, cfg: StagnationConfig, rows: int, cut_only: bool = False) -> np.ndarray:
    """For the newest ``rows`` judged stats rows: the share of the trained parameters (measured, or
    missing a gradient the optimizer expects) whose gradient is dead (``cut_only``: missing).

    By count, not by layer: one live output bias does not make a network of dead ReLUs a training one.
    """
    numel = np.asarray(view.layer_numel, dtype=float)
    picked = _judged_rows(view, rows)
    missing = _missing_gradients(view, cfg, picked)
    trained = (np.isfinite(np.asarray(view.grad_norm, dtype=float)[picked]) | missing) * numel
    dead = (missing if cut_only else _dead_layers(view, cfg, rows)) * numel
    total = trained.sum(axis=1)
    return np.divide(dead.sum(axis=1), total, out=np.zeros_like(total), where=total > 0)


def _inactive_shares(view: RunView, cfg: StagnationConfig) -> tuple[float, float, float]:
    """Latest stats row: shares (dead gradient among trained parameters; frozen; without a gradient).

    A layer is frozen when it has no gradient and the agent did not say the optimizer expects one
    (requires_grad=False, left out of the optimizer, or an agent that does not tell), or a live one
    that the latest sampled step left exactly unchanged.
    """
    latest = _judged_rows(view, 1)
    if latest.size == 0 or view.layer_numel.size == 0:
        return 0.0, 0.0, 0.0
    numel = np.asarray(view.layer_numel, dtype=float)
    # A layer missing a gradient the optimizer expects counts as dead (see _dead_layers), not frozen.
    measured = (
        np.isfinite(np.asarray(view.grad_norm, dtype=float)[latest[0]]) | _missing_gradients(view, cfg, latest)[0]
    )
    dead = _dead_layers(view, cfg, 1)[0]
    # A layer with a live gradient that the latest sampled step left exactly unchanged is not being
    # trained (its parameters are not in the optimizer, or their group's lr is 0): frozen, as far
    # as training goes.
    frozen = ~measured | (_unmoved(view) & measured & ~dead)
    total = numel.sum()
    frozen_share = float(numel[frozen].sum() / total) if total else 0.0
    no_grad_share = float(numel[~measured].sum() / total) if total else 0.0
    return float(_dead_shares(view, cfg, 1)[0]), frozen_share, no_grad_share


#: Layers named in the evidence of a cut graph (the first ones: a cut is usually all layers below one point).
_NAMED_LAYERS = 5


@dataclass(frozen=True)
class _Signals:
    """What the latest rows say about whether the weights move (the reasons' inputs, and the evidence)."""

    skipped: np.ndarray
    update_ratio: float
    update_ratio_step: int | None
    dead_share: float
    frozen_share: float
    no_grad_share: float
    #: Share of the trained parameters that got no gradient (see _missing_gradients), and up to
    #: _NAMED_LAYERS of their layers, input side first.
    missing_share: float
    missing_layers: list[str]

    @property
    def dead_reason(self) -> str:
        """Dead gradients, or mostly absent ones (a cut graph), whichever makes up more of the dead share."""
        return "graph_cut" if 2.0 * self.missing_share >= self.dead_share > 0 else "dead_gradients"

    @classmethod
    def of(cls, view: RunView, config: StagnationConfig) -> _Signals:
        skipped = np.asarray(view.skipped, dtype=bool)[-config.skipped_window_steps :]
        if skipped.size < config.skipped_window_steps:
            skipped = skipped[:0]
        u_all = global_update_ratio(view)
        # A zero-loss step's update is 0 under plain SGD: it says nothing about the learning rate.
        sampled = np.flatnonzero(np.isfinite(u_all) & ~zero_loss_rows(view))
        dead_share, frozen_share, no_grad_share = _inactive_shares(view, config)
        latest = _judged_rows(view, 1)
        missing = _missing_gradients(view, config, latest)[0] if latest.size else np.zeros(0, dtype=bool)
        return cls(
            skipped=skipped,
            update_ratio=float(u_all[sampled[-1]]) if sampled.size else float("nan"),
            update_ratio_step=int(view.stat_steps[sampled[-1]]) if sampled.size else None,
            dead_share=dead_share,
            frozen_share=frozen_share,
            no_grad_share=no_grad_share,
            missing_share=float(_dead_shares(view, config, 1, cut_only=True)[0]) if latest.size else 0.0,
            missing_layers=[view.layers[i] for i in np.flatnonzero(missing)[:_NAMED_LAYERS]],
        )


def _unmoved(view: RunView) -> np.ndarray:
    """Per layer: the newest judged row that sampled the update ratio shows exactly 0 with a gradient (all False
    when none did).

    A zero gradient makes a zero update whatever the optimizer holds: ReZero's and SkipInit's residual
    gates start at 0, so every block's gradient, and its first update, are exactly 0 at step 0.
    """
    u = np.asarray(view.update_ratio, dtype=float)
    rows = np.flatnonzero(np.isfinite(u).any(axis=1) & ~zero_loss_rows(view)) if u.size else np.zeros(0, dtype=int)
    if rows.size == 0:
        return np.zeros(view.layer_numel.size, dtype=bool)
    g = np.asarray(view.grad_norm, dtype=float)[rows[-1]]
    return (u[rows[-1]] == 0) & (g > 0)


def _frozen_evidence(
    view: RunView,
    config: StagnationConfig,
    sig: _Signals,
    window: tuple[np.ndarray, np.ndarray, Trend],
    finite: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, Trend] | None:
    """(steps, losses, trend) that show a mostly frozen network whose loss never left its start, or None.

    Gradients computed and never applied (parameters left out of the optimizer) are a mistake whatever
    the noise: the window decides. Parameters without a gradient (requires_grad=False) are frozen on
    purpose as often as by mistake (a linear probe, LoRA on a frozen base), and what trains may start
    slowly (LoRA's zero-initialised B): then the judgement takes frozen_window_steps losses, and only
    a run whose noise would let a drop of frozen_noise_rel x the initial loss show may be called
    stalled; noisier ones are not judged.
    """
    if sig.frozen_share + (1.0 - sig.frozen_share) * sig.dead_share < config.inactive_fraction:
        return None
    if sig.no_grad_share < config.inactive_fraction:
        steps, loss, tr = window
        return window if FromStart.of(view.initial_loss, loss, tr.sigma).never_learned(config.no_progress_rel) else None
    steps, loss = (part[-config.frozen_window_steps :] for part in finite)
    if loss.size < config.frozen_window_steps:
        return None
    tr = trend(loss)
    if tr.improving(config.min_improvement, config.rel_tolerance) or sloping_down(
        loss, tr.sigma, config.min_improvement
    ):
        return None
    start = FromStart.of(view.initial_loss, loss, tr.sigma)
    if start.never_learned(config.no_progress_rel) and start.can_tell(config.frozen_noise_rel):
        return steps, loss, tr
    return None


#: The update/weight ratio of a healthy step (the dashboards' band around 1e-3).
TYPICAL_UPDATE_RATIO = 1e-3


def _at_a_minimum(
    view: RunView, config: StagnationConfig, loss: np.ndarray, sigma: float, finite_loss: np.ndarray
) -> bool:
    """Has the run descended to a minimum and stopped there, as it should?

    Tiny, zero or dead updates are a stall when a normal step would still lower the loss; at a
    minimum the gradient has vanished, and full-batch training (L-BFGS, gradient descent) stops
    moving by itself (L-BFGS's line search then returns the weights unchanged: an update ratio of
    exactly 0, as for parameters the optimizer does not hold), at whatever level the problem's
    optimum has (far from 0 with noisy labels). To first order a step of update ratio r lowers the loss by at most r ||g|| ||w||: at a minimum that is
    below stationary_gain x the loss for r = TYPICAL_UPDATE_RATIO. It must also have descended (by
    more than noise and no_progress_rel from where it began) and be at its best: a loss that rose
    and then stopped moving, or never moved, is not a minimum reached.
    """
    grad, weight = clean_grad_norm(view), global_weight_norm(view)
    rows = np.flatnonzero(np.isfinite(grad) & np.isfinite(weight))
    level = float(nanmedian(loss))
    if rows.size == 0 or not np.isfinite(level) or level == 0.0:
        return False
    gain = TYPICAL_UPDATE_RATIO * grad[rows[-1]] * weight[rows[-1]]
    if not gain <= config.stationary_gain * abs(level):
        return False
    # Descended: from the run's start, or from the oldest loss in view. The initial loss is a median of
    # five, and L-BFGS is at its optimum after one step: its second to fifth losses are already there.
    start = float(np.nanmax([view.initial_loss, finite_loss[0]]))
    tolerance = max(3.0 * sigma, config.rel_tolerance * abs(level))
    if not start - level > max(tolerance, config.no_progress_rel * abs(start)):
        return False
    return level <= float(np.min(finite_loss)) + tolerance


def _learned_while_skipped(
    view: RunView, window: np.ndarray, sigma: float, config: StagnationConfig, streak: bool = False
) -> bool:
    """Has the loss come down since the skipping began?

    Weights that no step updates cannot lower it: then something else trains them (a hand-written
    update beside an optimizer that only zeroes the gradients and never steps), and the skipped
    flags say nothing about training. The skipping began where the trailing streak of skipped steps
    did, or (unless ``streak``: judged on the streak alone) at the skipped-steps window's start when
    the streak is shorter (a step applied now and then); its first losses are its start, as a run's are.
    """
    since = trailing_run(np.asarray(view.skipped, dtype=bool))
    since = since if streak else max(since, config.skipped_window_steps)
    loss = np.asarray(view.loss, dtype=float)[-since:]
    loss = loss[np.isfinite(loss)]
    if loss.size < INITIAL_LOSSES:
        return False
    start = float(np.median(loss[:INITIAL_LOSSES]))
    return not FromStart.of(start, window, sigma).never_learned(config.no_progress_rel)


def _skipped_since_applied(view: RunView) -> int:
    """Length of the trailing streak of skipped steps when a step in view before it was applied, else 0.

    A streak from the run's first step is an AMP GradScaler calibrating its scale down from a large
    initial value, one halving per skipped step: routine, however long (the skipped-steps window judges it).
    """
    skipped = np.asarray(view.skipped, dtype=bool)
    streak = trailing_run(skipped)
    return streak if streak < skipped.size else 0


def _has_nonfinite(view: RunView, window: int) -> bool:
    """NaN/Inf in the latest ``window`` losses or in the newest stats row."""
    recent = np.asarray(view.loss, dtype=float)[-window:]
    if recent.size and not np.all(np.isfinite(recent)):
        return True
    rows = (np.asarray(view.grad_nonfinite, dtype=bool), np.asarray(view.weight_nonfinite, dtype=bool))
    return any(flags.size and flags[-1].any() for flags in rows)


# NaN/Inf are the data this service exists to see: arithmetic on them is expected,
# not a warning. errstate is thread-local, so concurrent evaluations are unaffected.
@np.errstate(all="ignore")
def detect_stagnation(view: RunView, config: StagnationConfig) -> Finding | None:
    """Report a loss that does not improve because the weights barely move.

    Not improving: over the last window_steps finite losses, with medians m1,
    m3 of the first and last thirds and sigma the noise from first
    differences, m1 - m3 <= max(min_improvement * sigma, rel_tolerance * |m1|).
    Barely moving (first that holds): at least inactive_fraction of the
    trained parameters (by count) have a gradient that is zero or <=
    dead_grad_ratio * weight norm, or none although the optimizer trains
    them (dead_gradients; graph_cut when the absent ones are at least half
    of those: a .detach() or torch.no_grad() in the forward pass); this
    holding on dead_rows rows in a row is enough whatever the loss does
    (what still trains is too little of the network); at least inactive_fraction
    of all parameters are frozen (no gradient, or a gradient but an update
    ratio of exactly 0 at the newest sampled row: not in the optimizer) or
    dead, and the loss is still where it began, within noise and
    no_progress_rel (frozen_parameters: a frozen backbone whose head has
    learned is not stalled; parameters frozen without a gradient are judged
    on frozen_window_steps losses, see _frozen_evidence); >= skipped_fraction of
    the window's steps were skipped (all_steps_skipped); the latest sampled
    global update ratio < min_update_ratio (tiny_updates); or, with no update
    ratio ever sampled, the loss range <= frozen_rel_range * |median|
    (loss_frozen). A converged run, whose loss is flat but whose weights still
    move, stays silent.

    Silent during warmup (latest lr > warmup_lr_rise * lr at the window start)
    and in the tail of a decay schedule (latest lr < decay_tail_fraction * max lr
    in view), where small updates are intended -- unless the lr collapsed (fell
    by more than collapse_factor in one step), which no schedule does, or has
    stayed in the tail for more than tail_max_share of the steps it took to get
    there (a schedule that ended too early), unless the run had learned and
    plateaued at its peak lr before a plateau scheduler cut it into the tail
    (lr_schedule.small_lr_intended: converged, not stalled). The step is the window's
    first step.

    Silent too once the median of the newest losses is at most
    converged_fraction of the initial loss: the run has learned its task.
    And silent at a minimum reached (_at_a_minimum): the loss descended
    and is at its best, and the gradient is too small for a typical step to
    lower it (full-batch L-BFGS at the optimum), whatever the reason says.
    """
    if _has_nonfinite(view, config.window_steps):
        # NaN/Inf belongs to the nonfinite rule: NaN gradients would read as
        # "no gradient" here, and a NaN-stuck loss as a flat one.
        return None
    if has_converged(view, config.converged_fraction):
        # A loss at 1e-14 of where it began (a realisable regression at float precision) does not
        # improve and its updates are tiny: that is the task solved, not a stall.
        return None
    ok = np.isfinite(view.loss)
    finite_steps, finite_loss = view.loss_steps[ok], np.asarray(view.loss, dtype=float)[ok]
    steps, loss = finite_steps[-config.window_steps :], finite_loss[-config.window_steps :]
    if loss.size < config.window_steps:
        return None
    tr = trend(loss)
    if _judged_rows(view, config.dead_rows).size >= config.dead_rows and np.all(
        _dead_shares(view, config, config.dead_rows) >= config.inactive_fraction
    ):
        # Gradients dead row after row: nothing but a live bias or two can still move the loss (towards
        # the class prior, after the burst that killed the ReLUs), so its trend proves nothing.
        if _at_a_minimum(view, config, loss, tr.sigma, finite_loss):
            return None
        sig = _Signals.of(view, config)
        return _finding(view, sig.dead_reason, steps, loss, tr, sig)
    if tr.improving(config.min_improvement, config.rel_tolerance):
        return None

    if small_lr_intended(view, config, int(steps[0]), (finite_steps, finite_loss)):
        return None

    sig = _Signals.of(view, config)
    frozen = _frozen_evidence(view, config, sig, (steps, loss, tr), (finite_steps, finite_loss))
    if sig.dead_share >= config.inactive_fraction:
        reason = sig.dead_reason
    elif frozen is not None:
        reason = "frozen_parameters"
        steps, loss, tr = frozen
    elif (
        sig.skipped.size
        and sig.skipped.mean() >= config.skipped_fraction
        and not _learned_while_skipped(view, loss, tr.sigma, config)
    ) or (
        # Every step of the judged window skipped after steps had been applied: no update at all
        # since (a GradScaler whose scale halved window_steps times in a row mid-run, or the watched
        # optimizer replaced by one that holds none of the trained parameters), judged without
        # waiting for the longer window.
        _skipped_since_applied(view) >= config.window_steps
        and not _learned_while_skipped(view, loss, tr.sigma, config, streak=True)
    ):
        reason = "all_steps_skipped"
    elif sig.update_ratio_step is not None and sig.update_ratio < config.min_update_ratio:
        reason = "tiny_updates"
    elif sig.update_ratio_step is None and np.ptp(loss) <= config.frozen_rel_range * abs(nanmedian(loss)):
        reason = "loss_frozen"
    else:
        return None
    # Weights that stopped moving (no update, a zero one, or no gradient left) at a minimum reached.
    if reason != "all_steps_skipped" and _at_a_minimum(view, config, loss, tr.sigma, finite_loss):
        return None

    return _finding(view, reason, steps, loss, tr, sig)


def _finding(view: RunView, reason: str, steps: np.ndarray, loss: np.ndarray, tr: Trend, sig: _Signals) -> Finding:
    """The diagnosis with its evidence; its step is the window's first."""
    lr = np.asarray(view.lr, dtype=float)
    evidence: dict[str, Any] = {
        "reason": reason,
        "update_ratio": as_float(sig.update_ratio),
        "update_ratio_step": sig.update_ratio_step,
        "loss_first_third": as_float(tr.first),
        "loss_last_third": as_float(tr.last),
        "improvement": as_float(-tr.change),
        "loss_sigma": as_float(tr.sigma),
        "lr_now": as_float(lr[-1] if lr.size else np.nan),
        "lr_max": as_float(np.nanmax(lr) if np.isfinite(lr).any() else np.nan),
        "skipped_fraction": as_float(sig.skipped.mean()) if sig.skipped.size else 0.0,
        "dead_gradient_share": as_float(sig.dead_share),
        "missing_gradient_share": as_float(sig.missing_share),
        "missing_gradient_layers": sig.missing_layers,
        "frozen_share": as_float(sig.frozen_share),
        "initial_loss": as_float(view.initial_loss),
        "window_steps": int(loss.size),
    }
    return Finding(symptom="stagnation", step=int(steps[0]), evidence=evidence, advice=ADVICE[reason])
