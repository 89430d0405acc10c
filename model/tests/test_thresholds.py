"""How the OOD thresholds are chosen (robust.threshold_at, robust.joint_thresholds, ood.calibrate's rule) and the
served confidence/known rule (ood.Calibration)."""

from __future__ import annotations

import numpy as np
import pytest
from celestial import robust
from celestial.ood import Calibration, ood_score


def test_threshold_at_flags_the_requested_share():
    s = np.arange(1.0, 101.0)
    t = robust.threshold_at(s, 0.01)
    assert t == 99.0 and robust.flag_rate(s, t) == 0.01
    assert robust.threshold_at(s, 0.1) == 90.0
    assert robust.threshold_at(s, 0.0) == 100.0


def test_joint_thresholds_of_one_score_twice_are_its_own_threshold():
    s = np.arange(1.0, 101.0)
    assert robust.joint_thresholds(s, s, 0.01) == (99.0, 99.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_joint_thresholds_flag_exactly_the_rate_together(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=1000), rng.exponential(size=1000)
    ta, tb = robust.joint_thresholds(a, b, 0.01)
    both = (a > ta) | (b > tb)
    assert both.mean() == 0.01
    # each threshold alone flags less than the pair does, and at least some of each score's largest values
    assert (a > ta).mean() < 0.01 and (b > tb).mean() < 0.01
    assert ta in a and tb in b


def test_ecdf_keeps_growing_beyond_the_reference():
    ref = np.array([0.0, 1.0, 2.0])
    got = robust.ecdf(ref, np.array([-1.0, 1.0, 2.0, 4.0]))
    assert np.allclose(got, [0.0, 2 / 3, 1.0, 1.0 + 2.0 / ref.std()])


def test_auroc_by_hand():
    assert robust.auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert robust.auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert robust.auroc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5
    assert robust.auroc(np.array([0.0, 2.0]), np.array([1.0, 3.0])) == 0.75


def test_msp_score_and_the_served_confidence_and_known():
    logits = np.array([[4.0, 0.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
    p_top = np.exp(4) / (np.exp(4) + 2)
    assert np.allclose(ood_score("msp", logits), [-p_top, -1 / 3])
    cal = Calibration("msp", temperature=0.5, threshold=-0.5, colour=None, fit={})
    conf, known = cal.confidence_known(logits)
    assert np.allclose(conf, [np.exp(8) / (np.exp(8) + 2), 1 / 3])
    assert known.tolist() == [True, False]
    assert cal.flagged(logits, None, None).tolist() == [False, True]


def test_other_scores_from_the_logits():
    z = np.array([[2.0, 0.0]])
    assert ood_score("max_logit", z).tolist() == [-2.0]
    assert np.allclose(ood_score("energy", z), [-np.log(np.exp(2) + 1)])
    assert ood_score("knn_cosine", z, np.array([0.25], np.float32)).tolist() == [0.25]
    with pytest.raises(ValueError):
        ood_score("nonsense", z)


def test_temperature_fit_prefers_sharper_logits_when_they_are_right():
    z = np.array([[2.0, 0.0], [0.0, 2.0]] * 10)
    y = np.array([0, 1] * 10)
    t, fit = robust.fit_temperature(z, y)
    assert t == 0.2  # always right: the sharpest temperature of the grid
    assert fit["nll"] < fit["nll_t1"]
