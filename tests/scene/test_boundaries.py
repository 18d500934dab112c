"""Post-processing rules, streaming of boundaries and the scoring rule (pure, no model)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from services.scene.boundaries import (
    BoundaryTracker,
    Kind,
    MergedRule,
    legacy_boundaries,
    legacy_scenes,
    merged_boundaries,
    scenes_from_boundaries,
)
from services.scene.evaluation import Transition, score_boundaries


def _probs(n: int, high: dict[int, float]) -> np.ndarray:
    values = np.zeros(n, dtype=np.float32)
    for frame, value in high.items():
        values[frame] = value
    return values


def test_legacy_scenes_follow_the_spec_example() -> None:
    # Spec §1.4: 100 frames, cut at index 39 -> frames 1..40 and 41..100 (1-based).
    assert legacy_scenes(_probs(100, {39: 0.9})) == [(0, 39), (40, 99)]


def test_legacy_scenes_keep_every_quirk() -> None:
    assert legacy_scenes(_probs(0, {})) == []
    assert legacy_scenes(_probs(30, {})) == [(0, 29)]
    # Consecutive high frames make one-frame scenes.
    assert legacy_scenes(_probs(20, {10: 0.6, 11: 0.7})) == [(0, 10), (11, 11), (12, 19)]
    # A cut on the last frame adds no trailing scene; a cut on frame 0 makes a one-frame scene.
    assert legacy_scenes(_probs(10, {0: 0.9, 9: 0.9})) == [(0, 0), (1, 9)]
    # Strictly above the threshold.
    assert legacy_scenes(_probs(10, {4: 0.5}), threshold=0.5) == [(0, 9)]
    assert legacy_scenes(_probs(10, {4: 0.5}), threshold=0.49) == [(0, 4), (5, 9)]


def test_legacy_boundaries_are_the_scene_starts() -> None:
    probs = _probs(20, {10: 0.6, 11: 0.7, 19: 0.9})
    starts = [b.cut_frame for b in legacy_boundaries(probs)]
    assert starts == [s for s, _ in legacy_scenes(probs)[1:]] == [11, 12]
    scenes = scenes_from_boundaries(legacy_boundaries(probs), 20, 25.0)
    assert [(s.start_frame, s.end_frame) for s in scenes] == legacy_scenes(probs)


def test_merged_rule_makes_one_hard_cut_per_run() -> None:
    single = _probs(100, {39: 0.9, 40: 0.6})
    many = _probs(100, {39: 0.8})
    (boundary,) = merged_boundaries(single, many)
    assert boundary.kind is Kind.HARD_CUT
    assert boundary.cut_frame == boundary.start_frame == boundary.end_frame == 40
    assert boundary.peak == pytest.approx(0.9)
    # The legacy rule splits the same run into a one-frame scene.
    assert len(legacy_boundaries(single)) == 2


def test_merged_rule_reports_a_gradual_transition_as_a_span() -> None:
    many = np.zeros(200, dtype=np.float32)
    many[60:80] = 0.9
    many[69:72] = 0.4  # a dip inside a fade, above the hysteresis floor
    single = _probs(200, {70: 0.45})  # the single-frame head alone would miss it
    assert legacy_boundaries(single) == []
    (boundary,) = merged_boundaries(single, many)
    assert boundary.kind is Kind.GRADUAL
    assert (boundary.start_frame, boundary.end_frame, boundary.cut_frame) == (60, 79, 71)


def test_min_scene_length_merges_close_runs_and_can_be_disabled() -> None:
    many = np.zeros(200, dtype=np.float32)
    many[50:60] = 0.9  # fade out
    many[64:74] = 0.9  # fade in, 4 frames later
    single = np.zeros(200, dtype=np.float32)
    merged = merged_boundaries(single, many, MergedRule.with_threshold(0.5, min_scene_frames=8))
    assert [(b.start_frame, b.end_frame) for b in merged] == [(50, 73)]
    split = merged_boundaries(single, many, MergedRule.with_threshold(0.5, min_scene_frames=0))
    assert [(b.start_frame, b.end_frame) for b in split] == [(50, 59), (64, 73)]


def test_runs_without_a_frame_above_the_threshold_are_ignored() -> None:
    many = np.full(100, 0.4, dtype=np.float32)  # above the floor (0.35), never above 0.5
    assert merged_boundaries(np.zeros(100, np.float32), many) == []


def test_scenes_cover_every_frame_once() -> None:
    single = _probs(300, {49: 0.9, 149: 0.95})
    many = np.zeros(300, dtype=np.float32)
    many[200:220] = 0.8
    scenes = scenes_from_boundaries(merged_boundaries(single, many), 300, 25.0)
    assert scenes[0].start_frame == 0 and scenes[-1].end_frame == 299
    for before, after in itertools.pairwise(scenes):
        assert after.start_frame == before.end_frame + 1
    assert scenes[1].start_s == pytest.approx(50 / 25.0)
    assert scenes[-1].end_s == pytest.approx(300 / 25.0)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 50, 200, 333])
def test_streamed_boundaries_equal_the_final_ones(legacy: bool, chunk: int) -> None:
    rng = np.random.default_rng(chunk)
    n = 1500
    single = (rng.random(n) ** 30).astype(np.float32)  # sparse spikes
    many = (
        np.convolve(rng.random(n) ** 20, np.ones(9) / 3, mode="same").clip(0, 1).astype(np.float32)
    )
    rule = MergedRule.with_threshold(0.5, min_scene_frames=8)
    tracker = BoundaryTracker(legacy=legacy, threshold=0.5, rule=rule)
    streamed = []
    for start in range(0, n, chunk):
        streamed += tracker.update(single[start : start + chunk], many[start : start + chunk])
    early = len(streamed)
    final, rest = tracker.finish()
    expected = legacy_boundaries(single) if legacy else merged_boundaries(single, many, rule)
    assert streamed + rest == final == expected
    assert len(expected) > 5 and early >= len(expected) - 2  # most were streamed before the end


@pytest.mark.parametrize("seed", range(20))
def test_streaming_across_long_quiet_stretches_loses_nothing(seed: int) -> None:
    """Quiet shots, near-threshold wobbles, fades and runs just under ``min_scene_frames`` apart:
    the tracker skips re-reading settled frames but must still find exactly the final result."""
    rng = np.random.default_rng(seed)
    n = 3000
    single = (rng.random(n) * 0.2).astype(np.float32)
    many = (rng.random(n) * 0.2).astype(np.float32)
    for start in rng.integers(0, n - 20, size=12):
        length = int(rng.integers(1, 15))
        head = single if rng.random() < 0.5 else many
        head[start : start + length] = rng.uniform(0.3, 0.95, size=length)
    rule = MergedRule.with_threshold(0.5, min_scene_frames=int(rng.integers(0, 12)))
    for legacy in (False, True):
        tracker = BoundaryTracker(legacy=legacy, threshold=0.5, rule=rule)
        streamed = []
        position = 0
        while position < n:
            size = int(rng.integers(1, 120))
            streamed += tracker.update(
                single[position : position + size], many[position : position + size]
            )
            position += size
        final, rest = tracker.finish()
        expected = legacy_boundaries(single) if legacy else merged_boundaries(single, many, rule)
        assert streamed + rest == final == expected


def test_scoring_matches_one_to_one_with_the_tolerances() -> None:
    truth = [Transition("cut", 100, 100), Transition("dissolve", 200, 220)]
    assert score_boundaries([102, 218], truth).f1 == 1.0
    score = score_boundaries([97, 103, 223, 199], truth)  # 97/103 too far; 223 too late
    assert (score.true_positives, score.false_positives, score.false_negatives) == (1, 3, 1)
    # Two predictions for one cut: one is a false positive.
    score = score_boundaries([99, 101], truth[:1])
    assert (score.true_positives, score.false_positives) == (1, 1)
    # Maximum matching: 199 may serve the dissolve only if 101 takes the cut.
    score = score_boundaries(
        [101, 199], [Transition("cut", 100, 100), Transition("fade", 197, 230)]
    )
    assert score.true_positives == 2
