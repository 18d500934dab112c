"""Multi-speaker conversations composed from LibriSpeech read speech, for diarization dev sets.

``python -m benchmarks.devsets.conversations [--count 40] [--seed 15] [--root DIR]``

Writes ``<root>/conversations-<tag>/`` (default root ``~/.cache/videoanalysis/devsets``) with one
16 kHz mono ``.wav`` and one ``.rttm`` per conversation and an ``index.json`` that records the
parameters, the voices and, per file, its half: the first ``count // 2`` files are the
**tuning** half (thresholds may be chosen on them), the rest the **checking** half (reported,
never tuned on). The same parameters always give the same bytes; ``<tag>`` is a hash of the
parameters and of :data:`COMPOSER_VERSION`, so a change of either makes a new folder.

Sources: the five LibriSpeech speakers of ``../shared/testdata/audio/librispeech_dev`` (four men,
one woman, ten utterances each). More voices are **speed-perturbed** copies (resampled, so pitch,
formants and tempo all move by the factor, as in Kaldi-style speed perturbation): each half has
its own factors, so the checking half holds voices the tuning half never had. A conversation
uses at most one voice of each source speaker (a copy and its source are closer to each other
than two real speakers, so putting both in one file would test a case real media does not
have); ``--voices`` measures how close they are with the engine's embedding.

Each conversation: 2-5 speakers (the count cycles, so every count has the same number of files
in each half), about 45-85 s (a 40-65 s target; the last turn may run past it), turns of
1-20 s cut at pauses of the read speech, gaps of 0.1-1.2 s,
some turns that start before the previous one ends, some short back-channel fragments
(0.3-0.9 s) of another speaker over a long turn, a level per speaker (0 to -9 dB) with a
little variation per turn, and on some files pink noise or a synthetic chord "music" bed
under everything. The reference marks each turn from its first to its last frame above
-55 dBFS (the voices are at -20 dBFS RMS before their gains); a pause inside it splits it only
where it stays below that level for 0.5 s or more. That is the convention of the ``conv_dev_*``
references: a reader with audible room tone (-35 to -50 dB) keeps whole sentences, pauses
included (conv_dev_1/3), one recorded near digital silence has its long pauses left out
(conv_dev_2). Between turns there is digital silence (or the bed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

COMPOSER_VERSION = 4
SAMPLE_RATE = 16000
SOURCE = Path(__file__).resolve().parents[2].parent / "shared/testdata/audio/librispeech_dev"
DEFAULT_ROOT = Path.home() / ".cache/videoanalysis/devsets"

_FRAME = 160  # 10 ms analysis frames
_SILENT_DB = -35.0  # below the voice's loud frames: a pause
_MIN_PAUSE_S = 0.12
_FADE = 160  # 10 ms fades around every piece
_REFERENCE_DB = -55.0  # at the voice's -20 dBFS: quieter pauses are not speech in a reference
_SPLIT_PAUSE_S = 0.5


@dataclass(frozen=True)
class ConversationParams:
    """What a set is made of; every range is drawn uniformly unless its docstring says more."""

    count: int = 40
    seed: int = 15
    speakers: tuple[int, int] = (2, 5)
    #: The last turn starts before this target and may run past it.
    duration_s: tuple[float, float] = (40.0, 65.0)
    #: Every speaker gets at least this much speech in main turns (a participant, not a guest).
    min_speech_s: float = 4.0
    #: Turn lengths: ``short_turn_share`` of them 1-3 s, the rest log-uniform 3-20 s.
    turn_s: tuple[float, float] = (1.0, 20.0)
    short_turn_share: float = 0.3
    gap_s: tuple[float, float] = (0.1, 1.2)
    #: Chance that a turn starts this much before the previous one ends (both at least 2 s).
    overlap_probability: float = 0.15
    overlap_s: tuple[float, float] = (0.2, 1.0)
    #: Chance that a turn of 4 s or more gets a back-channel of another speaker over its middle.
    backchannel_probability: float = 0.25
    backchannel_s: tuple[float, float] = (0.3, 0.9)
    speaker_level_db: tuple[float, float] = (-9.0, 0.0)
    turn_level_db: float = 2.0
    #: Background per file: pink noise, chord "music" or nothing, at a speech-to-bed ratio.
    noise_probability: float = 0.25
    noise_snr_db: tuple[float, float] = (12.0, 30.0)
    music_probability: float = 0.25
    music_snr_db: tuple[float, float] = (10.0, 25.0)
    #: Speed factors of the extra voices, per half (1.0, the real voice, is always there).
    tuning_factors: tuple[float, ...] = (0.88, 1.12)
    checking_factors: tuple[float, ...] = (0.92, 1.16)
    sources: tuple[str, ...] = field(default=("1688", "1998", "2033", "2414", "2609"))

    @property
    def tag(self) -> str:
        text = json.dumps({"version": COMPOSER_VERSION, **asdict(self)}, sort_keys=True)
        return f"n{self.count}-seed{self.seed}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


@dataclass
class Voice:
    """One voice: a source speaker at one speed factor, as one long stream of its utterances."""

    name: str
    source: str
    factor: float
    audio: np.ndarray
    cuts: np.ndarray  # sample positions inside pauses (where a turn may start or end)
    pause_db: float  # frames below this level are pauses (room tone)


def voice_name(source: str, factor: float) -> str:
    return source if factor == 1.0 else f"{source}x{factor:.2f}"


def load_voice(source: str, factor: float, folder: Path = SOURCE) -> Voice:
    """The utterances of ``source`` (sorted, end to end), speed-perturbed by ``factor``."""
    import soundfile
    from scipy.signal import resample_poly

    pieces = []
    for path in sorted((folder / source).glob("*.flac")):
        audio, rate = soundfile.read(path, dtype="float32")
        if rate != SAMPLE_RATE:
            raise ValueError(f"{path} is {rate} Hz, expected {SAMPLE_RATE}")
        pieces.append(audio)  # each keeps its own leading and trailing room tone
    if not pieces:
        raise FileNotFoundError(f"no utterances of speaker {source} in {folder}")
    audio = np.concatenate(pieces)
    if factor != 1.0:  # played faster by `factor`: fewer samples at the same rate
        ratio = Fraction(1 / factor).limit_denominator(100)
        audio = resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)
    audio /= max(1e-6, float(np.sqrt(np.mean(np.square(audio[_voiced(audio)])))))
    audio *= 0.1  # -20 dBFS RMS over voiced frames
    threshold = _pause_threshold(audio)
    return Voice(
        voice_name(source, factor),
        source,
        factor,
        audio,
        _pause_centres(audio, threshold),
        threshold,
    )


def _frame_db(audio: np.ndarray) -> np.ndarray:
    frames = audio[: len(audio) // _FRAME * _FRAME].reshape(-1, _FRAME)
    return 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-12)


def _voiced(audio: np.ndarray) -> np.ndarray:
    """Sample mask of the frames within 35 dB of the loud (95th percentile) frames."""
    level = _frame_db(audio)
    frames = level > np.percentile(level, 95) + _SILENT_DB
    mask = np.zeros(len(audio), bool)
    mask[: len(frames) * _FRAME] = np.repeat(frames, _FRAME)
    return mask


def _pause_threshold(audio: np.ndarray) -> float:
    """Frames below this level are pauses: 6 dB above the room tone (5th-percentile frame)."""
    return float(np.percentile(_frame_db(audio), 5)) + 6.0


def _pause_centres(audio: np.ndarray, threshold_db: float) -> np.ndarray:
    silent = np.concatenate(([False], _frame_db(audio) < threshold_db, [False]))
    runs = np.flatnonzero(np.diff(silent.astype(int))).reshape(-1, 2)
    long = runs[(runs[:, 1] - runs[:, 0]) * _FRAME >= _MIN_PAUSE_S * SAMPLE_RATE]
    return (long.mean(axis=1) * _FRAME).astype(int)


def _trim(piece: np.ndarray, threshold_db: float) -> tuple[int, int]:
    """First and last+1 sample of the frames of ``piece`` above ``threshold_db``."""
    voiced = np.flatnonzero(_frame_db(piece) > threshold_db)
    if voiced.size == 0:
        return 0, 0
    return int(voiced[0] * _FRAME), int(min(len(piece), (voiced[-1] + 1) * _FRAME))


def _voiced_runs(piece: np.ndarray) -> list[tuple[int, int]]:
    """Sample ``[start, end)`` of the stretches of ``piece`` above :data:`_REFERENCE_DB`, pauses
    below it of :data:`_SPLIT_PAUSE_S` or more splitting them."""
    voiced = np.concatenate(([False], _frame_db(piece) > _REFERENCE_DB, [False]))
    runs = np.flatnonzero(np.diff(voiced.astype(int))).reshape(-1, 2).tolist()
    merged: list[list[int]] = []
    for first, last in runs:
        if merged and (first - merged[-1][1]) * _FRAME < _SPLIT_PAUSE_S * SAMPLE_RATE:
            merged[-1][1] = last
        else:
            merged.append([first, last])
    return [(a * _FRAME, min(len(piece), b * _FRAME)) for a, b in merged]


def _fade(piece: np.ndarray) -> np.ndarray:
    piece = piece.copy()
    n = min(_FADE, len(piece) // 2)
    ramp = np.linspace(0, 1, n, dtype=np.float32)
    piece[:n] *= ramp
    piece[len(piece) - n :] *= ramp[::-1]
    return piece


class _Cursor:
    """Reads a voice's stream turn after turn, from pause to pause, wrapping at the end."""

    def __init__(self, voice: Voice, rng: np.random.Generator) -> None:
        self.voice = voice
        self.index = int(rng.integers(len(voice.cuts)))

    def turn(self, length_s: float) -> np.ndarray:
        cuts = self.voice.cuts
        if self.index >= len(cuts) - 1:
            self.index = 0
        start = int(cuts[self.index])
        later = cuts[self.index + 1 :]
        self.index += 1 + int(np.argmin(np.abs(later - (start + length_s * SAMPLE_RATE))))
        piece = self.voice.audio[start : int(cuts[self.index])]
        if len(piece) > (1.5 * length_s + 0.5) * SAMPLE_RATE:  # no pause anywhere near: cut
            piece = piece[: int(length_s * SAMPLE_RATE)]
        return piece

    def fragment(self, length_s: float, rng: np.random.Generator) -> np.ndarray:
        """The first ``length_s`` of a phrase: a back-channel-like fragment."""
        start = int(self.voice.cuts[int(rng.integers(len(self.voice.cuts)))])
        piece = self.voice.audio[start : start + int(4 * SAMPLE_RATE)]
        first, _ = _trim(piece, self.voice.pause_db)
        return piece[first : first + int(length_s * SAMPLE_RATE)]


def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    noise = np.fft.irfft(spectrum, n)
    return (noise / np.sqrt(np.mean(np.square(noise)))).astype(np.float32)


def _music(n: int, rng: np.random.Generator) -> np.ndarray:
    """Chords of three harmonic tones (a new chord every 0.5-2 s, decaying notes)."""
    out = np.zeros(n, np.float32)
    position = 0
    while position < n:
        length = int(rng.uniform(0.5, 2.0) * SAMPLE_RATE)
        t = np.arange(min(length, n - position)) / SAMPLE_RATE
        root = 110.0 * 2 ** (int(rng.integers(0, 24)) / 12)
        chord = np.zeros(len(t))
        for interval in (0, int(rng.choice([3, 4])), 7):
            f0 = root * 2 ** (interval / 12)
            for harmonic in range(1, 6):
                if f0 * harmonic < SAMPLE_RATE / 2:
                    chord += np.sin(2 * np.pi * f0 * harmonic * t) / harmonic
        chord *= np.exp(-t * rng.uniform(0.5, 3.0))
        out[position : position + len(t)] = chord
        position += len(t)
    return out / np.sqrt(np.mean(np.square(out)) + 1e-12)


def _turn_length(params: ConversationParams, rng: np.random.Generator) -> float:
    low, high = params.turn_s
    if rng.random() < params.short_turn_share:
        return float(rng.uniform(low, 3.0))
    return float(np.exp(rng.uniform(np.log(3.0), np.log(high))))


def compose_one(
    name: str,
    voices: list[Voice],
    params: ConversationParams,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[tuple[float, float, str]], dict[str, object]]:
    """One conversation of ``voices``: the mix, its reference turns and a description."""
    n = len(voices)
    cursors = [_Cursor(voice, rng) for voice in voices]
    gains = [10 ** (rng.uniform(*params.speaker_level_db) / 20) for _ in voices]
    weights = rng.dirichlet(np.full(n, 2.0))
    duration = float(rng.uniform(*params.duration_s))
    # Who speaks: no one twice in a row; everyone at least once among the first turns.
    order = [int(i) for i in rng.permutation(n)]
    placed: list[tuple[int, int, np.ndarray, bool]] = []  # start sample, speaker, audio, short
    position = int(0.5 * SAMPLE_RATE)
    previous: tuple[int, int, int] | None = None  # speaker, start, end of the last main turn
    overlaps = backchannels = 0
    spoken = [0.0] * n  # seconds of main turns per speaker
    while True:
        needy = [i for i in range(n) if spoken[i] < params.min_speech_s]
        if previous is not None and previous[0] in needy:
            needy.remove(previous[0])
        if order:
            speaker = order.pop(0)
        elif needy:
            speaker = needy[0]
        else:
            choices = [i for i in range(n) if previous is None or i != previous[0]]
            p = weights[choices] / weights[choices].sum()
            speaker = int(rng.choice(choices, p=p))
        for _ in range(10):  # a piece may be all pause: take the next one
            piece = cursors[speaker].turn(_turn_length(params, rng))
            first, last = _trim(piece, voices[speaker].pause_db)
            piece = piece[first:last]
            if len(piece) >= 0.5 * SAMPLE_RATE:
                break
        gain = gains[speaker] * 10 ** (rng.uniform(-1, 1) * params.turn_level_db / 20)
        start = position
        if (
            previous is not None
            and len(piece) >= 2 * SAMPLE_RATE
            and previous[2] - previous[1] >= 2 * SAMPLE_RATE
            and rng.random() < params.overlap_probability
        ):
            start = previous[2] - int(rng.uniform(*params.overlap_s) * SAMPLE_RATE)
            overlaps += 1
        placed.append((start, speaker, _fade(piece) * gain, False))
        spoken[speaker] += len(piece) / SAMPLE_RATE
        long_turn = len(piece) >= 4 * SAMPLE_RATE and n > 1
        if long_turn and rng.random() < params.backchannel_probability:
            other = int(rng.choice([i for i in range(n) if i != speaker]))
            fragment = cursors[other].fragment(float(rng.uniform(*params.backchannel_s)), rng)
            at = start + int(rng.uniform(0.3, 0.7) * (len(piece) - len(fragment)))
            placed.append((at, other, _fade(fragment) * gains[other], True))
            backchannels += 1
        end = start + len(piece)
        previous = (speaker, start, end)
        position = end + int(rng.uniform(*params.gap_s) * SAMPLE_RATE)
        if end >= duration * SAMPLE_RATE and min(spoken) >= params.min_speech_s:
            break
    total = max(start + len(audio) for start, _, audio, _ in placed) + int(0.5 * SAMPLE_RATE)
    mix = np.zeros(total, np.float32)
    turns = []
    for start, speaker, audio, _ in placed:
        mix[start : start + len(audio)] += audio
        for first, last in _voiced_runs(audio / np.float32(gains[speaker])):
            span = ((start + first) / SAMPLE_RATE, (start + last) / SAMPLE_RATE)
            turns.append((*span, voices[speaker].name))
    speech_rms = float(np.sqrt(np.mean(np.square(mix[_voiced(mix)]))))
    draw = rng.random()
    bed: dict[str, object] = {"kind": "none"}
    if draw < params.noise_probability:
        snr = float(rng.uniform(*params.noise_snr_db))
        mix += _pink_noise(total, rng) * speech_rms * 10 ** (-snr / 20)
        bed = {"kind": "pink_noise", "snr_db": round(snr, 1)}
    elif draw < params.noise_probability + params.music_probability:
        snr = float(rng.uniform(*params.music_snr_db))
        mix += _music(total, rng) * speech_rms * 10 ** (-snr / 20)
        bed = {"kind": "music", "snr_db": round(snr, 1)}
    peak = float(np.max(np.abs(mix)))
    if peak > 0.9:
        mix *= 0.9 / peak
    info = {
        "name": name,
        "speakers": [voice.name for voice in voices],
        "num_speakers": n,
        "duration_s": round(total / SAMPLE_RATE, 2),
        "turns": sum(1 for *_, short in placed if not short),
        "backchannels": backchannels,
        "overlapping_starts": overlaps,
        "overlap_s": round(_overlap_s(turns), 2),
        "levels_db": [round(20 * float(np.log10(g)), 1) for g in gains],
        "background": bed,
    }
    return mix, turns, info


def _overlap_s(turns: list[tuple[float, float, str]]) -> float:
    edges = sorted([(s, 1) for s, _, _ in turns] + [(e, -1) for _, e, _ in turns])
    active, last, total = 0, 0.0, 0.0
    for time, step in edges:
        if active >= 2:
            total += time - last
        active += step
        last = time
    return total


def write_rttm(path: Path, name: str, turns: list[tuple[float, float, str]]) -> None:
    lines = [
        f"SPEAKER {name} 1 {start:.3f} {end - start:.3f} <NA> <NA> spk{speaker} <NA> <NA>"
        for start, end, speaker in sorted(turns)
    ]
    path.write_text("\n".join(lines) + "\n")


def compose(params: ConversationParams, root: Path = DEFAULT_ROOT) -> Path:
    """Composes the set (unless its index is already there) and returns its ``index.json``."""
    import soundfile

    folder = root / f"conversations-{params.tag}"
    index = folder / "index.json"
    if index.exists():
        return index
    folder.mkdir(parents=True, exist_ok=True)
    voices: dict[str, dict[str, Voice]] = {}
    for half, factors in (("tuning", params.tuning_factors), ("checking", params.checking_factors)):
        voices[half] = {}
        for source in params.sources:
            for factor in (1.0, *factors):
                voice = load_voice(source, factor)
                voices[half][voice.name] = voice
    rng = np.random.default_rng(params.seed)
    low, high = params.speakers
    files = []
    for i in range(params.count):
        half = "tuning" if i < params.count // 2 else "checking"
        n = low + i % (high - low + 1)
        sources = rng.choice(params.sources, size=n, replace=False)
        factors = (1.0, *(params.tuning_factors if half == "tuning" else params.checking_factors))
        chosen = [voices[half][voice_name(s, float(rng.choice(factors)))] for s in sources]
        name = f"conv_{i:03d}"
        mix, turns, info = compose_one(name, chosen, params, rng)
        soundfile.write(folder / f"{name}.wav", mix, SAMPLE_RATE, subtype="PCM_16")
        write_rttm(folder / f"{name}.rttm", name, turns)
        files.append({**info, "half": half, "wav": f"{name}.wav", "rttm": f"{name}.rttm"})
        log.info("composed %s (%s, %d speakers)", name, half, n)
    body = {
        "composer": "benchmarks.devsets.conversations",
        "version": COMPOSER_VERSION,
        "params": asdict(params),
        "halves": {"tuning": params.count // 2, "checking": params.count - params.count // 2},
        "files": files,
    }
    temporary = index.with_suffix(".tmp")
    temporary.write_text(json.dumps(body, indent=1))
    temporary.rename(index)
    return index


def voice_similarity(params: ConversationParams) -> dict[str, object]:
    """How close the speed-perturbed voices are to their sources, against real speaker pairs.

    Cosine similarity of voice embeddings from the engine's encoder (Resemblyzer's GE2E,
    ``embed_utterance`` on each utterance of the voice, averaged and normalised).
    """
    from itertools import combinations

    import soundfile
    from resemblyzer import VoiceEncoder
    from scipy.signal import resample_poly

    encoder = VoiceEncoder("cpu", verbose=False)
    factors = sorted({1.0, *params.tuning_factors, *params.checking_factors})
    centroids: dict[tuple[str, float], np.ndarray] = {}
    for source in params.sources:
        utterances = [
            soundfile.read(path, dtype="float32")[0]
            for path in sorted((SOURCE / source).glob("*.flac"))
        ]
        for factor in factors:
            ratio = Fraction(1 / factor).limit_denominator(100)
            embeddings = [
                encoder.embed_utterance(
                    u if factor == 1.0 else resample_poly(u, ratio.numerator, ratio.denominator)
                )
                for u in utterances
            ]
            mean = np.mean(embeddings, axis=0)
            centroids[(source, factor)] = mean / np.linalg.norm(mean)

    def cosine(a: tuple[str, float], b: tuple[str, float]) -> float:
        return round(float(centroids[a] @ centroids[b]), 3)

    real = {f"{a}-{b}": cosine((a, 1.0), (b, 1.0)) for a, b in combinations(params.sources, 2)}
    variants = {}
    for source in params.sources:
        for factor in factors:
            if factor == 1.0:
                continue
            others = [cosine((source, factor), (o, 1.0)) for o in params.sources if o != source]
            variants[voice_name(source, factor)] = {
                "to_source": cosine((source, factor), (source, 1.0)),
                "to_nearest_other_real": max(others),
            }
    to_source = [v["to_source"] for v in variants.values()]
    return {
        "real_pairs": real,
        "real_pairs_range": [min(real.values()), max(real.values())],
        "variants": variants,
        "variant_to_source_range": [min(to_source), max(to_source)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=ConversationParams.count)
    parser.add_argument("--seed", type=int, default=ConversationParams.seed)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument(
        "--voices", action="store_true", help="print how close the voices are, compose nothing"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    params = ConversationParams(count=args.count, seed=args.seed)
    if args.voices:
        print(json.dumps(voice_similarity(params)))
        return 0
    print(compose(params, args.root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
