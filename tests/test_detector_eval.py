"""The box matcher of `visionlake.detectors.evaluate` on small examples worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from visionlake.detectors.evaluate import MatchCounts, iou_matrix, match_boxes, xywh_to_xyxy


def test_worked_example():
    """Four truth boxes (one ignored), five predictions; every count below is worked out by hand.

    T1 (0,0)-(10,10), T2 (20,0)-(30,10), T3 (40,0)-(50,10) ignored, T4 (60,0)-(70,10).
    In order of score:
      P5 0.95 (100,100)-(110,110) overlaps nothing          -> false positive
      P1 0.90 (0,0)-(10,10)   IoU 1 with T1                 -> true positive (IoU 1.0)
      P2 0.80 (1,0)-(11,10)   IoU 90/110 with T1, taken     -> false positive (a duplicate)
      P3 0.70 (20,0)-(30,20)  IoU 100/200 = 0.5 with T2     -> true positive at the threshold (IoU 0.5)
      P4 0.60 (40,0)-(50,10)  IoU 1 with ignored T3         -> neither
    T4 is never matched -> false negative.
    tp 2, fp 2, fn 1: precision 2/4, recall 2/3, F1 = 2 * (1/2) * (2/3) / (1/2 + 2/3) = 4/7,
    mean IoU of the matches (1.0 + 0.5) / 2 = 0.75.
    """
    truth = xywh_to_xyxy([[0, 0, 10, 10], [20, 0, 10, 10], [40, 0, 10, 10], [60, 0, 10, 10]])
    ignore = [False, False, True, False]
    pred = np.array(
        [[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 30, 20], [40, 0, 50, 10], [100, 100, 110, 110]], np.float32
    )
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.95], np.float32)
    m = match_boxes(pred, score, truth, ignore)
    assert (m.tp, m.fp, m.fn) == (2, 2, 1)
    assert m.precision == pytest.approx(0.5)
    assert m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(4 / 7)
    assert m.mean_iou == pytest.approx(0.75)


def test_higher_score_takes_the_truth_box_first():
    """Greedy by score, not by IoU: the 0.9 box (IoU 100/120) wins T1 over the exact 0.3 box."""
    truth = xywh_to_xyxy([[0, 0, 10, 10]])
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 12]], np.float64)
    m = match_boxes(pred, [0.3, 0.9], truth)
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    assert m.mean_iou == pytest.approx(100 / 120)


def test_free_truth_box_is_preferred_over_an_ignored_one():
    """A prediction overlapping a person to find and an ignored one is a hit on the person to find."""
    truth = xywh_to_xyxy([[0, 0, 10, 10], [0, 0, 10, 10]])
    m = match_boxes([[0, 0, 10, 10]], [1.0], truth, [True, False])
    assert (m.tp, m.fp, m.fn) == (1, 0, 0)


def test_below_threshold_is_a_miss_and_a_false_positive():
    truth = xywh_to_xyxy([[0, 0, 10, 10]])
    m = match_boxes([[5, 0, 15, 10]], [1.0], truth)  # IoU 50/150 = 1/3
    assert (m.tp, m.fp, m.fn) == (0, 1, 1)
    assert m.f1 == 0.0 and m.mean_iou == 0.0


def test_empty_inputs_and_sums():
    nothing = np.zeros((0, 4))
    assert match_boxes(nothing, [], nothing) == MatchCounts()
    missed = match_boxes(nothing, [], xywh_to_xyxy([[0, 0, 5, 5], [9, 9, 5, 5]]), [False, True])
    assert (missed.tp, missed.fp, missed.fn, missed.precision, missed.recall) == (0, 0, 1, 1.0, 0.0)
    spurious = match_boxes([[0, 0, 5, 5]], [0.5], nothing)
    assert (spurious.tp, spurious.fp, spurious.fn) == (0, 1, 0)
    total = missed + spurious + MatchCounts(tp=3, iou_sum=2.4)
    assert (total.tp, total.fp, total.fn) == (3, 1, 1)
    assert total.mean_iou == pytest.approx(0.8)
    assert total.to_dict()["precision"] == pytest.approx(0.75)


def test_iou_matrix_and_length_checks():
    a = xywh_to_xyxy([[0, 0, 10, 10]])
    b = xywh_to_xyxy([[5, 5, 10, 10], [0, 0, 0, 10]])  # 25 / 175, and a box with no area
    np.testing.assert_allclose(iou_matrix(a, b), [[25 / 175, 0.0]])
    with pytest.raises(ValueError, match="scores"):
        match_boxes(a, [1.0, 2.0], a)
    with pytest.raises(ValueError, match="ignore"):
        match_boxes(a, [1.0], a, [True, False])
