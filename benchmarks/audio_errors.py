"""Where the embedded engine's diarization errors lie, file by file, on a composed set.

``python -m benchmarks.audio_errors --set DEVSET_FOLDER_OR_INDEX [--half tuning]``

Runs the engine in this process (no service, no baseline: for diagnosis, not for speed) and
prints one JSON line per file: pyannote's DER split (missed, false alarm, confusion; collar
0.25 s as ``benchmarks.audio``), and the missed speech by where it lies, as shares of the
scored reference speech on a 10 ms grid with the same collar:

- ``overlap``: two or more reference speakers, fewer in the answer;
- ``onset`` / ``offset``: before the answer's first or after its last speech inside a
  reference turn;
- ``inside``: between two stretches of the answer's speech inside one reference turn (pauses
  the reference counts as speech);
- ``whole_turn``: reference turns the answer has no speech in at all.

False alarms are split by whether Silero VAD marked the frame (``fa_vad``) or the turn extent
and pause bridges added it (``fa_added``). A closing line gives the means per half.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")

import numpy as np

from benchmarks.audio import load_set, score

_FPS = 100
_HALF_COLLAR_S = 0.125
_PARTS = ("overlap", "onset", "offset", "inside", "whole_turn", "fa_vad", "fa_added")


def _reference(rttm: Path) -> list[tuple[float, float, str]]:
    turns = []
    for line in rttm.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start = float(fields[3])
            turns.append((start, start + float(fields[4]), fields[7]))
    return turns


def _active(turns: list[tuple[float, float, str]], n: int) -> np.ndarray:
    """Speakers talking per frame."""
    count = np.zeros(n, dtype=int)
    for speaker in {t[2] for t in turns}:
        mask = np.zeros(n, dtype=bool)
        for start, end, who in turns:
            if who == speaker:
                mask[round(start * _FPS) : round(end * _FPS)] = True
        count += mask
    return count


def breakdown(
    reference: list[tuple[float, float, str]],
    answer: list[tuple[float, float, str]],
    vad: np.ndarray,
) -> dict[str, float]:
    """The missed and false-alarm shares of :data:`_PARTS` for one file."""
    n = len(vad)
    truth, said = _active(reference, n), _active(answer, n)
    scored = np.ones(n, dtype=bool)
    for start, end, _ in reference:
        for edge in (start, end):
            low = max(0, round((edge - _HALF_COLLAR_S) * _FPS))
            scored[low : round((edge + _HALF_COLLAR_S) * _FPS)] = False
    missed = np.maximum(0, truth - said) * scored
    parts = dict.fromkeys(_PARTS, 0.0)
    parts["overlap"] = float((missed * (truth >= 2)).sum())
    single = (missed > 0) & (truth == 1)
    for start, end, _ in reference:
        first, last = round(start * _FPS), min(n, round(end * _FPS))
        spoken = np.flatnonzero(said[first:last] > 0) + first
        lost = np.flatnonzero(single[first:last]) + first
        if not spoken.size:
            parts["whole_turn"] += lost.size
            continue
        parts["onset"] += int((lost < spoken[0]).sum())
        parts["offset"] += int((lost > spoken[-1]).sum())
        parts["inside"] += int(((lost > spoken[0]) & (lost < spoken[-1])).sum())
    false_alarm = np.maximum(0, said - truth) * scored
    parts["fa_vad"] = float((false_alarm * vad).sum())
    parts["fa_added"] = float((false_alarm * ~vad).sum())
    total = max(1, int((truth * scored).sum()))
    return {k: round(v / total, 4) for k, v in parts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, required=True)
    parser.add_argument("--half")
    args = parser.parse_args(argv)

    from services.audio.diarizer import SpeakerCount
    from services.audio.embedded import EmbeddedEngine
    from services.common.blocking import CancelToken
    from services.common.ffmpeg import read_audio

    engine = EmbeddedEngine()
    engine.load()
    reports = []
    for case in load_set(args.set.resolve()):
        if args.half not in (None, case.half):
            continue
        audio = read_audio(case.audio)
        turns, _ = engine.diarize(audio, SpeakerCount(), CancelToken(), lambda _s: None)
        answer = [(t.start_s, t.end_s, t.speaker) for t in turns]
        vad = engine._signal(audio, CancelToken(), lambda _s: None).speech
        report = {
            "file": case.name,
            "half": case.half,
            **score(answer, case.rttm, len(audio) / 16000),
            **breakdown(_reference(case.rttm), answer, vad),
        }
        reports.append(report)
        print(json.dumps(report), flush=True)
    keys = ("der", "missed", "false_alarm", "confusion", *_PARTS)
    summary = {
        half: {
            k: round(float(np.mean([r[k] for r in reports if r["half"] == half])), 4) for k in keys
        }
        for half in dict.fromkeys(r["half"] for r in reports)
    }
    print(json.dumps({"summary": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
