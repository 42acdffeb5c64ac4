"""The paper's knee stopping rule: after each epoch, stop a transition or train on.

Once ``T`` epochs have run, the rule fits the knee ``t*`` of the transition's validation curve
(:func:`~optuna_opplan._knee_fit.fit_knee`) and stops once the current epoch reaches
``t* + T``; it also says which retained checkpoint the transition keeps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optuna_opplan._decision import KneeDecision
from optuna_opplan._decision import best_retained
from optuna_opplan._decision import check_window
from optuna_opplan._knee_fit import as_scores
from optuna_opplan._knee_fit import check_curve
from optuna_opplan._knee_fit import check_loss
from optuna_opplan._knee_fit import fit_knee

KNEE_KEEP_RULES: tuple[str, ...] = ("best", "knee")
"""What :func:`knee_decision` keeps: the best observed retained epoch, or the knee."""


_CLAMPED = " (keep clamped to the oldest retained epoch)"


def knee_decision(
    values: Sequence[float] | np.ndarray,
    *,
    delay: int = 10,
    max_epochs: int | None = None,
    curve: str = "exponential",
    keep: str = "best",
    loss: str = "linear",
) -> KneeDecision:
    """Decide after an epoch whether a transition stops, and which epoch's checkpoint to keep.

    The paper's rule: once ``delay`` (``T``) epochs have run, fit the curve after every epoch
    (see :func:`~optuna_opplan._knee_fit.fit_knee`); stop when the current epoch
    ``n >= t* + T``. In addition, training always stops at ``max_epochs``, and a failed fit
    never stops it before that cap.

    The trainer retains the checkpoints of epochs ``max(0, n - delay) .. n`` only, so the kept
    epoch is one of those. ``keep="knee"`` keeps ``t*`` as the paper does (clamped to the oldest
    retained epoch if the knee predates it); ``keep="best"`` keeps the retained epoch with the
    best observed score, which measured better on noisy real curves
    (``benchmarks/results/knee_rule.md``). Before a fit exists, or when it failed, the best
    retained epoch is kept whatever ``keep`` says.

    Args:
        values:
            ``[v0, v1, ..., vn]``: the epoch-0 score (the inherited checkpoint's, 0 for an
            untrained model) and the validation score after each epoch so far. Higher is better.
        delay:
            ``T``: epochs before the first fit, and epochs trained past the knee.
        max_epochs:
            Stop when ``n >= max_epochs``; :obj:`None` for no cap.
        curve:
            One of :data:`~optuna_opplan._knee_fit.KNEE_CURVES`.
        keep:
            One of :data:`KNEE_KEEP_RULES`.
        loss:
            One of :data:`~optuna_opplan._knee_fit.KNEE_LOSSES`, passed to
            :func:`~optuna_opplan._knee_fit.fit_knee`.

    Returns:
        A :class:`KneeDecision`.

    Raises:
        ValueError: For an empty ``values`` or an invalid argument.

    Example:
        >>> import numpy as np
        >>> from optuna_opplan._knee import knee_decision
        >>> t = np.arange(21)
        >>> decision = knee_decision(0.8 - 0.8 * np.exp(-0.3 * t) - 0.0005 * t**2, delay=10)
        >>> decision.stop, decision.keep_epoch, decision.reason
        (True, 10, 'knee')
    """
    check_window(delay, max_epochs)
    check_curve(curve)
    if keep not in KNEE_KEEP_RULES:
        raise ValueError(f"`keep` must be one of {KNEE_KEEP_RULES}, but got keep={keep!r}.")
    check_loss(loss)
    y = as_scores(values)

    n = len(y) - 1
    first = max(0, n - delay)
    capped = max_epochs is not None and n >= max_epochs
    best = best_retained(y, first)
    if n < delay:
        return KneeDecision(capped, best, None, "max_epochs" if capped else "warming_up")

    fit = fit_knee(y, curve=curve, loss=loss)
    if not fit.ok:
        return KneeDecision(capped, best, fit, "max_epochs" if capped else "fit_failed")
    past_knee = n >= fit.epoch + delay
    if not (past_knee or capped):
        return KneeDecision(False, best, fit, "before_knee")
    reason = "knee" if past_knee else "max_epochs"
    if keep == "best":
        return KneeDecision(True, best, fit, reason)
    if fit.epoch < first:
        return KneeDecision(True, first, fit, reason + _CLAMPED)
    return KneeDecision(True, fit.epoch, fit, reason)
