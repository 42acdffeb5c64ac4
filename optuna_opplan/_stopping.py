"""The stopping rules a :class:`~optuna_opplan.KneePointPruner` can run, for either direction.

- ``"improve"`` (:func:`~optuna_opplan._improvement.improve_decision`): stop when more training
  is unlikely to improve the curve; a curve still at its epoch-0 level is never stopped.
- ``"paper"`` (:func:`~optuna_opplan._knee.knee_decision`): the paper's knee rule, stop at the
  fitted knee plus a delay.

Both decide on a curve where higher is better; a minimised score (a loss, a perplexity) is
negated first, and the decision's fit is turned back into the caller's units, so that a
minimised curve stops exactly where its negation maximised would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from optuna_opplan._decision import KneeDecision
from optuna_opplan._improvement import DEFAULT_DELAY
from optuna_opplan._improvement import improve_decision
from optuna_opplan._knee import knee_decision
from optuna_opplan._knee_fit import fit_knee

STOPPING_RULES: tuple[str, ...] = ("improve", "paper")
"""Rules of :class:`~optuna_opplan.KneePointPruner`; the first is the default."""

DEFAULT_DELAYS: dict[str, int] = {"improve": DEFAULT_DELAY, "paper": 10}
"""Each rule's default ``delay``."""

PAPER_SETTINGS: tuple[str, ...] = ("curve", "keep", "loss")
IMPROVE_SETTINGS: tuple[str, ...] = ("threshold", "min_delta", "noise_factor")


def stopping_decision(
    values: Sequence[float] | np.ndarray,
    *,
    rule: str,
    delay: int,
    max_epochs: int | None,
    minimize: bool = False,
    final: bool = False,
    keep_source: bool = True,
    from_scratch: bool = True,
    **settings: Any,
) -> KneeDecision:
    """One decision of ``rule`` on ``[v0, v1, ..., vn]``.

    Args:
        values: The scores, in the study's direction.
        rule: One of :data:`STOPPING_RULES`.
        delay: The rule's ``delay``.
        max_epochs: The cap.
        minimize: Lower scores are better: decide on the negated curve.
        final: The objective has ended on its own: the improve rule, which fits a curve only
            when it stops, fits one now for the planner's score.
        keep_source: ``v0`` is measured (see
            :func:`~optuna_opplan._improvement.improve_decision`); the paper rule ignores it.
        from_scratch: The run starts from an untrained model; the paper rule ignores it.
        settings: The rule's own settings (``curve``/``keep``/``loss`` for ``"paper"``,
            ``threshold``/``min_delta``/``noise_factor`` for ``"improve"``).

    Returns:
        The decision; its fit (if any) is in the caller's units.

    Example:
        >>> import numpy as np
        >>> from optuna_opplan._stopping import stopping_decision
        >>> t = np.arange(60)
        >>> loss = 0.2 + 2.0 * np.exp(-t / 4)
        >>> up = stopping_decision(-loss, rule="improve", delay=5, max_epochs=100)
        >>> down = stopping_decision(loss, rule="improve", delay=5, max_epochs=100, minimize=True)
        >>> (up.stop, up.keep_epoch) == (down.stop, down.keep_epoch)
        True
    """
    y = np.asarray(values, dtype=np.float64)
    if minimize:
        y = -y
    if rule == "paper":
        decision = knee_decision(y, delay=delay, max_epochs=max_epochs, **settings)
    elif rule == "improve":
        decision = improve_decision(
            y,
            delay=delay,
            max_epochs=max_epochs,
            keep_source=keep_source,
            from_scratch=from_scratch,
            **settings,
        )
        if final and decision.fit is None:
            decision = replace(decision, fit=fit_knee(y))
    else:
        raise ValueError(f"`rule` must be one of {STOPPING_RULES}, but got rule={rule!r}.")
    if minimize and decision.fit is not None:
        decision = replace(decision, fit=decision.fit.negated())
    return decision
