"""DAVIS J and F on cases worked out by hand, and F against a brute-force second derivation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mobilevos_deploy.metrics.davis import (
    boundary_accuracy,
    boundary_map,
    disk,
    region_similarity,
    score_sequence,
    statistics,
    summarise,
    tolerance_px,
)


def _mask(shape, *pixels_or_boxes) -> np.ndarray:
    out = np.zeros(shape, bool)
    for item in pixels_or_boxes:
        if len(item) == 2:
            out[item] = True
        else:
            r0, r1, c0, c1 = item
            out[r0:r1, c0:c1] = True
    return out


def test_j_counts_overlap_over_union_and_ignores_void():
    a = _mask((10, 10), (0, 4, 0, 4))  # 16 px
    b = _mask((10, 10), (2, 6, 2, 6))  # 16 px, 4 shared
    assert region_similarity(a, b) == pytest.approx(4 / 28, abs=1e-15)
    void = _mask((10, 10), (0, 2, 0, 4))  # hides 8 px of a, none of b
    assert region_similarity(a, b, void) == pytest.approx(4 / 20, abs=1e-15)
    empty = np.zeros((10, 10), bool)
    assert region_similarity(empty, empty) == 1.0  # empty union
    assert region_similarity(a, empty) == 0.0


def test_boundary_of_a_single_pixel_is_the_pixel_and_its_three_upper_left_neighbours():
    edge = boundary_map(_mask((7, 7), (3, 3)))
    assert sorted(zip(*np.nonzero(edge), strict=True)) == [(2, 2), (2, 3), (3, 2), (3, 3)]


def test_the_image_border_is_not_a_boundary():
    assert not boundary_map(np.ones((6, 9), bool)).any()
    # a block touching the right and bottom border: only its top and left sides
    edge = boundary_map(_mask((6, 6), (3, 6, 3, 6)))
    expected = _mask((6, 6), (2, 3, 2, 6), (2, 6, 2, 3))
    assert (edge == expected).all()


def test_tolerance_and_disk():
    assert tolerance_px(480, 854) == 8  # ceil(0.008 * 979.6)
    assert tolerance_px(100, 100) == 2  # ceil(1.13)
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert disk(2).sum() == 13


def test_f_of_two_pixels_three_apart_is_one_half():
    # 100 x 100: tolerance 2 px. Boundaries {(49,49),(49,50),(50,49),(50,50)} and the same
    # moved 3 columns right: two pixels of each lie 2 columns from the other, two lie 3
    mask, truth = _mask((100, 100), (50, 50)), _mask((100, 100), (50, 53))
    assert boundary_accuracy(mask, truth) == pytest.approx(0.5, abs=1e-15)
    assert region_similarity(mask, truth) == 0.0
    # one column nearer and every boundary pixel is matched
    assert boundary_accuracy(mask, _mask((100, 100), (50, 52))) == 1.0


def test_f_special_cases():
    shape = (40, 60)
    empty, box = np.zeros(shape, bool), _mask(shape, (10, 20, 10, 20))
    far = _mask(shape, (10, 20, 40, 50))
    assert boundary_accuracy(empty, empty) == 1.0
    assert boundary_accuracy(box, empty) == 0.0  # P = 0, R = 1
    assert boundary_accuracy(empty, box) == 0.0  # P = 1, R = 0
    assert boundary_accuracy(box, far) == 0.0  # P + R = 0
    assert boundary_accuracy(box, box) == 1.0
    # void over the whole of the truth object: both masks are cleared there first
    assert boundary_accuracy(box, box, void=box) == 1.0
    assert boundary_accuracy(box, far, void=far) == 0.0


def _f_brute_force(mask: np.ndarray, truth: np.ndarray) -> float:
    """F from pixel distances: a boundary pixel is matched when a pixel of the other
    boundary lies within the tolerance (Euclidean). No dilation, no cv2."""
    r = math.ceil(0.008 * math.hypot(*mask.shape))
    ours = np.argwhere(boundary_map(mask))
    theirs = np.argwhere(boundary_map(truth))
    if len(ours) == 0 or len(theirs) == 0:
        return float(len(ours) == len(theirs))
    d2 = ((ours[:, None, :] - theirs[None, :, :]) ** 2).sum(-1)
    p = (d2.min(1) <= r * r).mean()
    rec = (d2.min(0) <= r * r).mean()
    return 0.0 if p + rec == 0 else 2 * p * rec / (p + rec)


@pytest.mark.parametrize("seed", range(6))
def test_f_agrees_with_a_brute_force_derivation(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(40, 120)), int(rng.integers(40, 160)))
    ys, xs = np.mgrid[: shape[0], : shape[1]]

    def blob():
        cy, cx = rng.uniform(0.2, 0.8, 2) * shape
        ry, rx = rng.uniform(0.1, 0.3, 2) * shape
        return ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1 + 0.3 * rng.random(shape)

    mask, truth = blob(), blob()
    assert abs(boundary_accuracy(mask, truth) - _f_brute_force(mask, truth)) <= 1e-12


def test_statistics_by_hand():
    values = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    s = statistics(values)
    assert s.mean == pytest.approx(0.65, abs=1e-15)
    assert s.recall == 5 / 8  # strictly above 0.5
    # quarters cut at round(linspace(1, 8, 5) + 1e-10) - 1 = 0, 2, 4, 5, 7, ends included:
    # first = frames 0..2 (mean 0.9), last = frames 5..7 (mean 0.4)
    assert s.decay == pytest.approx(0.5, abs=1e-15)


def test_sequence_scores_skip_the_first_and_last_frame():
    truth = np.zeros((5, 20, 20), np.uint8)
    truth[:, 5:15, 5:15] = 1
    truth[:, 0:3, 0:3] = 2
    results = truth.copy()
    results[0] = 0
    results[-1] = 0  # wrong on the frames that are not evaluated: still perfect
    scores = score_sequence("seq", results, truth)
    assert [s.name for s in scores] == ["seq_1", "seq_2"]
    assert all((s.j == 1).all() and (s.f == 1).all() and len(s.j) == 3 for s in scores)
    results[2, 5:15, 5:10] = 0  # half of object 1 lost on one evaluated frame
    j = score_sequence("seq", results, truth)[0].j
    assert j.tolist() == [1.0, 0.5, 1.0]
    summary = summarise(score_sequence("seq", results, truth))
    assert summary.jf == pytest.approx((summary.j.mean + summary.f.mean) / 2)


def test_void_in_the_annotation_is_ignored_unless_asked_not_to():
    truth = np.zeros((3, 10, 10), np.uint8)
    truth[:, 2:6, 2:6] = 1
    truth[:, 6:8, 2:6] = 255  # void band below the object
    results = truth.copy()
    results[results == 255] = 1  # the result covers the void band too
    assert score_sequence("s", results, truth)[0].j.tolist() == [1.0]
    assert score_sequence("s", results, truth, use_void=False)[0].j.tolist() == [16 / 24]


def test_result_ids_that_are_not_objects_are_refused():
    truth = np.zeros((3, 8, 8), np.uint8)
    truth[:, 1:3, 1:3] = 1
    results = truth.copy()
    results[1, 5, 5] = 3
    with pytest.raises(ValueError, match=r"result ids \[3\]"):
        score_sequence("s", results, truth)
