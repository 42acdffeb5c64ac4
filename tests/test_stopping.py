from __future__ import annotations

import numpy as np
import pytest

from optuna_opplan._stopping import STOPPING_RULES
from optuna_opplan._stopping import stopping_decision

_T = np.arange(61, dtype=float)
_NOISE = 0.01 * np.random.default_rng(0).standard_normal(_T.size)

# Curves in the maximised orientation; each is also fed negated with minimize=True.
CURVES = {
    "saturating": 0.8 - 0.7 * np.exp(-_T / 6) + _NOISE,
    "overfitting": 0.8 - 0.7 * np.exp(-_T / 4) - 0.0004 * _T**2 + _NOISE,
    "flat at chance": 0.001 + 0.0003 * np.random.default_rng(1).standard_normal(_T.size),
    "perplexity-like": -(80.0 + 200.0 * np.exp(-_T / 5) + 0.5 * _NOISE * 100),
}


@pytest.mark.parametrize("rule", STOPPING_RULES)
@pytest.mark.parametrize("curve", list(CURVES))
@pytest.mark.parametrize("n", [3, 8, 15, 30, 60])
def test_a_minimised_curve_stops_as_its_negation_maximised(rule: str, curve: str, n: int) -> None:
    up = CURVES[curve][: n + 1]
    settings = {"delay": 5, "max_epochs": 60}
    maxed = stopping_decision(up, rule=rule, **settings)
    mined = stopping_decision(-up, rule=rule, minimize=True, **settings)
    assert (mined.stop, mined.keep_epoch, mined.reason) == (
        maxed.stop,
        maxed.keep_epoch,
        maxed.reason,
    )
    assert (mined.improvement is None) == (maxed.improvement is None)
    if maxed.improvement is not None and mined.improvement is not None:
        assert mined.improvement.probability == maxed.improvement.probability
    assert (mined.fit is None) == (maxed.fit is None)
    if maxed.fit is not None and mined.fit is not None and maxed.fit.ok:
        # The fit comes back in the minimised curve's own units.
        assert mined.fit.epoch == maxed.fit.epoch
        assert mined.fit.value == pytest.approx(-maxed.fit.value)
        np.testing.assert_allclose(mined.fit.predict(_T[: n + 1]), -maxed.fit.predict(_T[: n + 1]))


def test_unknown_rule_is_rejected() -> None:
    with pytest.raises(ValueError, match="`rule` must be one of"):
        stopping_decision([0.1, 0.2, 0.3], rule="knee", delay=1, max_epochs=10)
