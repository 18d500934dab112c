"""Scoring predicted shot boundaries against ground truth (the rule of the shared test data).

Truth files are ``{"fps": 25, "frames": N, "transitions": [{"type", "start", "end"}]}``. A hard cut
(``start == end == k``, k the first frame of the new shot) matches a predicted boundary within
±``tolerance`` frames of k; a gradual transition matches a predicted boundary inside
``[start - tolerance, end + tolerance]``. Matching is one-to-one (a maximum bipartite matching, so
the score does not depend on the order of the predictions); unmatched predictions are false
positives, unmatched transitions false negatives.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Transition:
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Score:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            **asdict(self),
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
        }


def load_truth(path: Path) -> tuple[list[Transition], int]:
    """The transitions and frame count of a truth JSON file."""
    data = json.loads(Path(path).read_text())
    transitions = [
        Transition(t["type"], int(t["start"]), int(t["end"])) for t in data["transitions"]
    ]
    return transitions, int(data.get("frames", 0))


def score_boundaries(
    predicted: Sequence[int], truth: Sequence[Transition], tolerance: int = 2
) -> Score:
    """Scores predicted boundary frames (first frames of new shots) one-to-one against ``truth``."""
    frames = sorted(int(p) for p in predicted)
    candidates: list[list[int]] = []
    for transition in truth:
        if transition.start == transition.end:  # hard cut
            lo, hi = transition.start - tolerance, transition.start + tolerance
        else:
            lo, hi = transition.start - tolerance, transition.end + tolerance
        candidates.append([i for i, frame in enumerate(frames) if lo <= frame <= hi])
    owner: dict[int, int] = {}  # prediction index -> transition index

    def augment(t: int, seen: set[int]) -> bool:
        for p in candidates[t]:
            if p in seen:
                continue
            seen.add(p)
            if p not in owner or augment(owner[p], seen):
                owner[p] = t
                return True
        return False

    matched = sum(1 for t in range(len(truth)) if augment(t, set()))
    return Score(matched, len(frames) - matched, len(truth) - matched)
