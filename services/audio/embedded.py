"""The embedded diarization engine: only weights that ship inside PyPI packages, no token, no hub.

Pipeline (16 kHz mono float32 in, speaker turns out):

1. **Speech detection.** Silero VAD (``silero_vad/data/silero_vad.jit``) gives a speech probability
   every 32 ms; hysteresis (onset/offset thresholds), short pauses closed, blips removed. The audio
   is cut into pieces that run as one batch (each with a second of warm-up context), which is ~4x
   faster than Silero's sequential loop.
2. **Speaker embeddings.** Resemblyzer's GE2E encoder (``resemblyzer/pretrained.pt``) on 1.6 s
   windows every ``hop_s`` (0.4 s) whose frames are mostly speech; the log-free mel spectrogram it
   expects is computed once for the whole file with torch (no librosa/numba at run time).
3. **Clustering.** Spectral clustering on a binarised k-nearest-neighbour affinity between
   windows (windows sharing audio are never neighbours), the neighbour count chosen by the
   normalised maximum eigengap of the Laplacian (NME-SC). The speaker count is a calibrated
   stopping rule: from the largest allowed count down, k-means on the spectral embedding, and the
   first count whose clusters all hold ``min_cluster_windows`` windows and whose centroids are
   all less alike than a merge threshold (cosine) wins; the lowest allowed count (one speaker by
   default) when none does. Where a few speakers talk much more than the rest, k-means at the
   true count tends to split a main talker and merge two small ones (centroids 0.85-0.95 alike,
   where the true speakers' stay below 0.80), so a count whose k-means partition fails is also
   tried with an average-linkage partition of the same windows, which must be ``linkage_margin``
   (0.05) further below the threshold (its small clusters are also the shape of an over-split).
   On the 200 files of seeds 15-19 the count went from 177 to 190 right and the mean DER from
   0.053 to 0.047; margins 0.03-0.05 scored alike, 0.08 worse, and no margin split two-speaker
   files under beds into 3-5. The threshold depends on the file's SNR (speech level over the
   background level of step 5): ``speaker_similarity`` (0.80) on clean audio, rising linearly to
   ``noisy_speaker_similarity`` (0.86) at ``noisy_snr_db`` (10 dB), because under a bed the
   embeddings of different voices draw together (0.85-0.89 for close voices at 10-15 dB; distinct
   clean voices mostly stay below 0.80). Tuned on seeds 15 and 16 of the composed set.
   Long files cluster a regular subsample of ``max_cluster_windows`` windows.
4. **Resegmentation.** Every speech frame (10 ms) is scored against each speaker centroid by
   averaging the similarities of all windows that cover it, then centroids are re-estimated and
   the frames re-assigned (``resegment_iterations``). A speaker change therefore lands where the
   evidence of the overlapping windows flips, not on a fixed window grid.
5. **Turn extent.** Silero marks the voiced core of speech and stops short of breaths, soft onsets
   and noisy pauses inside a sentence. Pauses of up to ``energy_bridge_s`` in which the audio
   stays "live" (short-time energy above ``energy_floor_db``, -62 dB, after loudness
   normalisation (-55 dB cut the room tone of quiet talkers' pauses short) and
   ``energy_margin_db`` above the background noise, estimated as the ``noise_percentile``-th
   percentile of the non-speech frames at least ``noise_distance_s`` from speech, so that a
   music or noise bed counts as background, not the room tone of pauses; dips shorter than
   ``energy_close_s`` ignored) are
   filled, and each speech region grows by up to ``energy_extend_s`` on each side while the
   audio is live. Dead air (near digital silence, or audio at the noise floor) always ends a
   turn. Under a bed (SNR below ``bed_snr_db``, and no digital silence between turns) the
   bed's own swells pass that test, so edges grow only while the audio stays
   ``bed_edge_margin_db`` above the bed's ``bed_edge_percentile``-th percentile (false alarms
   on the 160 files of seeds 15-18 0.015 -> 0.008 of the speech, mean DER 0.0585 -> 0.0545).
   Frames added this way take the label of the nearest labelled frame.
6. **Pauses inside a turn.** Most speech the engine still missed on the composed set lay in
   pauses of 0.3-0.5 s inside one speaker's turn, which references count as speech. So a gap
   between two frames of the same speaker is filled (pyannote's ``min_duration_off``) when it
   lasts up to ``speaker_pause_s`` (0.3 s), or up to ``room_pause_s`` (0.45 s) when it is
   louder than the background (``energy_margin_db`` above it): room tone of a recording in
   progress, which the silence between turns is not. A recording whose pauses sit at its own
   background (conv_dev_2, whose reference leaves out its 0.34-0.4 s pauses) keeps them. Under
   a bed (as in step 5) a pause cannot be told from the background by its level, so every
   same-speaker gap of up to ``room_pause_s`` is filled (``bed_room_pauses``; seeds 15-18
   mean DER 0.0545 -> 0.0512, conv_dev unchanged). Gaps
   holding digital silence (an edit between recordings) are never filled. Tuned on all 120
   files of seeds 15-17 of the composed set.

7. **Count constraints.** ``num/min/max_speakers`` bound the clustering and the final turns
   are relabelled by :func:`~services.audio.diarizer.honour_count`, so a request's count holds
   exactly whenever there is speech.

Overlapped speech is not detected: each frame gets exactly one speaker.
"""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from services.audio.diarizer import (
    SAMPLE_RATE,
    ProgressFn,
    SpeakerCount,
    Step,
    Turn,
    honour_count,
    label_turns,
)
from services.common.blocking import CancelToken
from services.common.errors import Unavailable

log = logging.getLogger(__name__)

_VAD_CHUNK = 512  # samples per Silero step at 16 kHz (32 ms)
_VAD_STEP_S = _VAD_CHUNK / SAMPLE_RATE
_FRAME_HOP = 160  # 10 ms mel / label frames
_FRAMES_PER_S = SAMPLE_RATE // _FRAME_HOP
_N_FFT = 400  # 25 ms analysis window, as Resemblyzer's training features
_N_MELS = 40
_WINDOW_FRAMES = 160  # 1.6 s partial utterance, as Resemblyzer was trained
_DIGITAL_SILENCE_DB = -120.0  # 16-bit audio cannot be this quiet unless it is all zeros
_MOST_SILENCE_IN_A_BED = 0.05  # share of the background frames at digital silence
_TARGET_DBFS = -30.0  # Resemblyzer's loudness normalisation (increase only)


@dataclass(frozen=True)
class _Signal:
    """What every later step reads from the audio: the loudness-normalised samples, Silero's
    speech mask and the level (dB) per 10 ms frame, and the background level (None: no speech
    or no background to measure)."""

    audio: np.ndarray
    speech: np.ndarray
    level: np.ndarray
    noise: float | None
    #: Under a bed: the level a turn's edges must stay above to grow (None: the usual floor).
    edge_floor: float | None = None


def _quiet(_step: Step) -> None:
    """A progress callback that reports nothing."""


def _runs(mask: np.ndarray) -> np.ndarray:
    """``[[start, end), ...]`` of the True runs of a 1-D boolean array."""
    padded = np.concatenate(([False], mask.astype(bool), [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return edges.reshape(-1, 2)


def _check(name: str, value: float, low: float, high: float) -> float:
    if not low <= value <= high:
        raise ValueError(f"{name} must be within [{low}, {high}], got {value}")
    return value


class EmbeddedEngine:
    """Silero VAD + Resemblyzer embeddings + spectral clustering + resegmentation.

    Hyper-parameters are one configuration for every input (tuned on the dev conversations and
    pyannote's sample as a whole, then the count rule and the background estimate on the tuning
    half of ``benchmarks.devsets.conversations``; never per file). ``load`` must run once
    before ``diarize``; calls are serialised (the VAD model keeps recurrent state).
    """

    name = "embedded"

    def __init__(
        self,
        *,
        vad_onset: float = 0.5,
        vad_offset: float = 0.2,
        vad_min_off_s: float = 0.3,
        vad_min_on_s: float = 0.2,
        vad_piece_s: float = 8.0,
        hop_s: float = 0.4,
        min_window_speech: float = 0.5,
        max_neighbour_fraction: float = 0.4,
        max_speakers: int = 8,
        max_cluster_windows: int = 600,
        speaker_similarity: float = 0.80,
        noisy_speaker_similarity: float = 0.86,
        clean_snr_db: float = 30.0,
        noisy_snr_db: float = 10.0,
        min_cluster_windows: int = 8,
        resegment_iterations: int = 2,
        energy_floor_db: float = -62.0,
        energy_close_s: float = 0.3,
        energy_extend_s: float = 1.0,
        energy_bridge_s: float = 1.0,
        energy_margin_db: float = 4.5,
        noise_percentile: float = 50.0,
        noise_distance_s: float = 0.5,
        bed_snr_db: float = 30.0,
        bed_edge_percentile: float = 85.0,
        bed_edge_margin_db: float = 2.0,
        bed_room_pauses: bool = True,
        linkage_margin: float | None = 0.05,
        min_turn_s: float = 0.05,
        speaker_pause_s: float = 0.3,
        room_pause_s: float = 0.45,
        batch_size: int = 64,
        threads: int = 1,
        device: str = "cpu",
    ) -> None:
        _check("vad_onset", vad_onset, 0.01, 0.99)
        _check("vad_offset", vad_offset, 0.01, vad_onset)
        _check("vad_min_off_s", vad_min_off_s, 0.0, 5.0)
        _check("vad_min_on_s", vad_min_on_s, 0.0, 5.0)
        _check("vad_piece_s", vad_piece_s, 1.0, 600.0)
        _check("hop_s", hop_s, 0.1, 1.6)
        _check("min_window_speech", min_window_speech, 0.0, 1.0)
        _check("max_neighbour_fraction", max_neighbour_fraction, 0.01, 1.0)
        _check("max_speakers", max_speakers, 1, 20)
        _check("max_cluster_windows", max_cluster_windows, 50, 5000)
        _check("resegment_iterations", resegment_iterations, 0, 10)
        _check("energy_floor_db", energy_floor_db, -120.0, 0.0)
        _check("energy_close_s", energy_close_s, 0.0, 5.0)
        _check("energy_extend_s", energy_extend_s, 0.0, 10.0)
        _check("energy_bridge_s", energy_bridge_s, 0.0, 30.0)
        _check("energy_margin_db", energy_margin_db, 0.0, 60.0)
        _check("noise_percentile", noise_percentile, 0.0, 100.0)
        _check("min_turn_s", min_turn_s, 0.0, 5.0)
        _check("speaker_pause_s", speaker_pause_s, 0.0, 10.0)
        _check("room_pause_s", room_pause_s, 0.0, 10.0)
        _check("batch_size", batch_size, 1, 4096)
        _check("threads", threads, 0, 256)
        self.vad_onset = vad_onset
        self.vad_offset = vad_offset
        self.vad_min_off_s = vad_min_off_s
        self.vad_min_on_s = vad_min_on_s
        self.vad_piece_s = vad_piece_s
        self.hop_frames = max(1, round(hop_s * _FRAMES_PER_S))
        self.min_window_speech = min_window_speech
        self.max_neighbour_fraction = max_neighbour_fraction
        self.max_speakers = int(max_speakers)
        self.max_cluster_windows = int(max_cluster_windows)
        self.speaker_similarity = _check("speaker_similarity", speaker_similarity, -1.0, 1.0)
        self.noisy_speaker_similarity = _check(
            "noisy_speaker_similarity", noisy_speaker_similarity, speaker_similarity, 1.0
        )
        self.clean_snr_db = _check("clean_snr_db", clean_snr_db, -20.0, 100.0)
        self.noisy_snr_db = _check("noisy_snr_db", noisy_snr_db, -20.0, clean_snr_db - 1.0)
        self.min_cluster_windows = int(_check("min_cluster_windows", min_cluster_windows, 1, 100))
        self.resegment_iterations = int(resegment_iterations)
        self.energy_floor_db = energy_floor_db
        self.energy_close_s = energy_close_s
        self.energy_extend_s = energy_extend_s
        self.energy_bridge_s = energy_bridge_s
        self.energy_margin_db = energy_margin_db
        self.noise_percentile = noise_percentile
        self.noise_distance_s = _check("noise_distance_s", noise_distance_s, 0.0, 10.0)
        self.bed_snr_db = _check("bed_snr_db", bed_snr_db, -20.0, 100.0)
        self.bed_edge_percentile = _check("bed_edge_percentile", bed_edge_percentile, 0.0, 100.0)
        self.bed_edge_margin_db = _check("bed_edge_margin_db", bed_edge_margin_db, 0.0, 60.0)
        self.bed_room_pauses = bed_room_pauses
        self.linkage_margin = (
            None if linkage_margin is None else _check("linkage_margin", linkage_margin, 0.0, 1.0)
        )
        self.min_turn_s = min_turn_s
        self.speaker_pause_s = speaker_pause_s
        self.room_pause_s = room_pause_s
        self.batch_size = int(batch_size)
        self.threads = int(threads)
        self.device = device
        self._lock = threading.Lock()
        self._vad: Any = None
        self._encoder: Any = None
        self._mel_basis: Any = None
        self._window: Any = None

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        """Loads Silero VAD and the GE2E encoder from their packages and runs them once."""
        import torch
        from resemblyzer import VoiceEncoder
        from silero_vad import load_silero_vad
        from threadpoolctl import threadpool_limits

        if self.threads:
            # Process-wide: torch's intra-op pool and the BLAS pool numpy/scipy use. On a small
            # shared CPU, multi-threaded OpenBLAS is 10-40x slower on these small matrices.
            torch.set_num_threads(self.threads)
            threadpool_limits(limits=self.threads)
        try:
            self._vad = load_silero_vad()
            weights = resources.files("resemblyzer").joinpath("pretrained.pt")
            self._encoder = VoiceEncoder(self.device, verbose=False, weights_fpath=str(weights))
        except Exception as exc:  # a broken install: the service must not report ready
            raise Unavailable(f"cannot load the embedded diarization models: {exc}") from exc
        self._encoder.eval()
        self._mel_basis = torch.from_numpy(_mel_filterbank()).float()
        self._window = torch.hann_window(_N_FFT)
        # Warm-up: the first call of a TorchScript model and of an LSTM is much slower.
        noise = (np.random.default_rng(0).standard_normal(SAMPLE_RATE * 2) * 0.05).astype(
            np.float32
        )
        self._vad_probs(noise, CancelToken())
        self._embed(self._mel(noise), np.array([0]), CancelToken())
        # ...and so is the first clustering (scipy.linalg and scikit-learn imports, BLAS setup).
        points = np.random.default_rng(0).standard_normal((40, 8))
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        self._cluster(np.arange(40) * _WINDOW_FRAMES, points, SpeakerCount(max=2))
        log.info(
            "embedded diarization engine loaded (%s, %d torch threads)",
            self.device,
            self.threads,
        )

    # ------------------------------------------------------------------ public

    def diarize(
        self, waveform: np.ndarray, count: SpeakerCount, token: CancelToken, progress: ProgressFn
    ) -> tuple[list[Turn], str]:
        if self._encoder is None:
            raise Unavailable("the embedded engine is not loaded yet")
        with token.holding(self._lock):
            return self._diarize(
                waveform.astype(np.float32, copy=False), count, token, progress
            ), self.device

    def merge_threshold(self, waveform: np.ndarray) -> float:
        """The centroid cosine at which two clusters of this file count as one speaker: the
        value :meth:`diarize` uses (it depends on the file's SNR)."""
        if self._vad is None:
            raise Unavailable("the embedded engine is not loaded yet")
        with self._lock:
            signal = self._signal(waveform.astype(np.float32, copy=False), CancelToken(), _quiet)
        return self._merge_similarity(signal.level, signal.speech, signal.noise)

    def _diarize(
        self, waveform: np.ndarray, count: SpeakerCount, token: CancelToken, progress: ProgressFn
    ) -> list[Turn]:
        if waveform.size == 0:
            return []
        signal = self._signal(waveform, token, progress)
        frame_labels = self._frame_labels(signal, count, token, progress)
        return self._turns(self._bridge(frame_labels, signal), count)

    def _signal(self, waveform: np.ndarray, token: CancelToken, progress: ProgressFn) -> _Signal:
        n_frames = int(np.ceil(len(waveform) / _FRAME_HOP))
        speech = self._speech_frames(waveform, n_frames, token, progress)
        audio = _normalise_loudness(waveform)
        level = _frame_levels(audio, n_frames)
        noise = self._noise_level(level, speech) if speech.any() else None
        return _Signal(audio, speech, level, noise, self._edge_floor(level, speech, noise))

    def _frame_labels(
        self, signal: _Signal, count: SpeakerCount, token: CancelToken, progress: ProgressFn
    ) -> np.ndarray:
        """Speaker index per 10 ms frame, -1 where nobody speaks."""
        speech = signal.speech
        if not speech.any():
            return np.full(len(speech), -1)
        mel = self._mel(signal.audio)[: len(speech)]
        starts, embeddings = self._window_embeddings(mel, speech, token, progress)
        token.raise_if_cancelled()
        progress(Step("clustering", 0, 1))
        similarity = self._merge_similarity(signal.level, speech, signal.noise)
        labels = self._cluster(starts, embeddings, count, similarity)
        progress(Step("clustering", 1, 1))
        frame_labels = self._resegment(starts, embeddings, labels, speech, count)
        progress(Step("resegmentation", 1, 1))
        active = self._turn_extent(signal.level, speech, signal.noise, signal.edge_floor)
        return _fill_nearest(frame_labels, active)

    # ------------------------------------------------------------------ speech

    def _vad_probs(
        self, waveform: np.ndarray, token: CancelToken, progress: ProgressFn | None = None
    ) -> np.ndarray:
        """Silero speech probability per 32 ms step, computed as a batch of overlapping pieces."""
        import torch

        piece = max(1, int(self.vad_piece_s * SAMPLE_RATE) // _VAD_CHUNK) * _VAD_CHUNK
        warm = SAMPLE_RATE // _VAD_CHUNK * _VAD_CHUNK  # ~1 s of context before each piece
        steps = int(np.ceil(len(waveform) / _VAD_CHUNK))
        total = steps * _VAD_CHUNK
        padded = np.zeros(warm + total + piece, dtype=np.float32)
        padded[warm : warm + len(waveform)] = waveform
        offsets = list(range(0, total, piece))
        out: list[np.ndarray] = []
        group = 32
        for first in range(0, len(offsets), group):
            token.raise_if_cancelled()
            batch = np.stack([padded[o : o + warm + piece] for o in offsets[first : first + group]])
            with torch.inference_mode():
                probs = self._vad.audio_forward(torch.from_numpy(batch), SAMPLE_RATE).numpy()
            out.append(probs[:, warm // _VAD_CHUNK :].reshape(-1))
            if progress is not None:
                progress(Step("speech", min(first + group, len(offsets)), len(offsets), "pieces"))
        return np.concatenate(out)[:steps]

    def _speech_frames(
        self, waveform: np.ndarray, n_frames: int, token: CancelToken, progress: ProgressFn
    ) -> np.ndarray:
        """Speech mask on the 10 ms frame grid (hysteresis, pauses closed, blips dropped)."""
        probs = self._vad_probs(waveform, token, progress)
        state = False
        voiced = np.zeros(len(probs), dtype=bool)
        for i, p in enumerate(probs.tolist()):
            state = p > (self.vad_offset if state else self.vad_onset)
            voiced[i] = state
        runs = _runs(voiced).astype(float) * _VAD_STEP_S
        merged: list[list[float]] = []
        for start, end in runs:
            if merged and start - merged[-1][1] < self.vad_min_off_s:
                merged[-1][1] = end
            else:
                merged.append([start, end])
        mask = np.zeros(n_frames, dtype=bool)
        for start, end in merged:
            if end - start >= self.vad_min_on_s:
                mask[int(start * _FRAMES_PER_S) : int(np.ceil(end * _FRAMES_PER_S))] = True
        return mask

    def _noise_level(self, level: np.ndarray, speech: np.ndarray) -> float | None:
        """The background level (dB): a percentile of the frames :meth:`_background` picks."""
        background = self._background(speech)
        if not background.any():
            return None
        return float(np.percentile(level[background], self.noise_percentile))

    def _edge_floor(
        self, level: np.ndarray, speech: np.ndarray, noise: float | None
    ) -> float | None:
        """Under a bed (SNR below ``bed_snr_db``) the bed's own swells pass the live test, so a
        turn's edges grow only while the audio stays ``bed_edge_margin_db`` above the bed's
        ``bed_edge_percentile``-th percentile; None on clean audio (the usual floor holds)."""
        if noise is None or float(np.median(level[speech])) - noise >= self.bed_snr_db:
            return None
        background = level[self._background(speech)]
        if np.mean(background <= _DIGITAL_SILENCE_DB) > _MOST_SILENCE_IN_A_BED:
            return None  # silence between turns: no bed, only the room tone of the recordings
        return float(np.percentile(background, self.bed_edge_percentile)) + self.bed_edge_margin_db

    def _merge_similarity(
        self, level: np.ndarray, speech: np.ndarray, noise: float | None
    ) -> float:
        """The centroid cosine at which two clusters count as one speaker, for this file.

        Under a bed the embeddings of different voices draw together (0.85-0.89 for distinct
        voices at 10-15 dB SNR, where clean ones stay below 0.80), so the threshold rises
        linearly from ``speaker_similarity`` at ``clean_snr_db`` to ``noisy_speaker_similarity``
        at ``noisy_snr_db`` and below. SNR: median speech frame level over the background level.
        """
        if noise is None:
            return self.speaker_similarity
        snr = float(np.median(level[speech])) - noise
        share = np.clip((self.clean_snr_db - snr) / (self.clean_snr_db - self.noisy_snr_db), 0, 1)
        return float(
            self.speaker_similarity
            + share * (self.noisy_speaker_similarity - self.speaker_similarity)
        )

    def _turn_extent(
        self,
        level: np.ndarray,
        speech: np.ndarray,
        noise: float | None,
        edge_floor: float | None = None,
    ) -> np.ndarray:
        """Speech grown along live (non-silent) audio: pauses up to ``energy_bridge_s`` that stay
        live are filled, and each region's edges grow by up to ``energy_extend_s`` while live
        (and above ``edge_floor``, under a bed)."""
        n_frames = len(level)
        live = self._live(level, noise)
        active = speech.copy()
        bridge = self.energy_bridge_s * _FRAMES_PER_S
        for start, end in _runs(~speech):
            inner = start > 0 and end < n_frames
            if inner and end - start <= bridge and live[start:end].all():
                active[start:end] = True
        if edge_floor is not None:
            live = self._live(level, noise, edge_floor)
        reach = round(self.energy_extend_s * _FRAMES_PER_S)
        for start, end in _runs(active):  # the runs are computed before the loop
            left = max(0, start - reach)
            dead_left = np.flatnonzero(~live[left:start])
            active[left + (dead_left[-1] + 1 if dead_left.size else 0) : start] = True
            right = min(n_frames, end + reach)
            dead_right = np.flatnonzero(~live[end:right])
            active[end : end + (dead_right[0] if dead_right.size else right - end)] = True
        return active

    def _live(
        self, level: np.ndarray, noise: float | None, at_least: float | None = None
    ) -> np.ndarray:
        """Frames above ``energy_floor_db`` and ``energy_margin_db`` above the background (and
        above ``at_least``), dips shorter than ``energy_close_s`` ignored: audio that is not a
        pause."""
        floor = self.energy_floor_db
        if noise is not None:  # above the background noise too, not just above the fixed floor
            floor = max(floor, noise + self.energy_margin_db)
        if at_least is not None:
            floor = max(floor, at_least)
        live = level > floor
        close = self.energy_close_s * _FRAMES_PER_S
        for start, end in _runs(~live):
            if start > 0 and end < len(level) and end - start < close:
                live[start:end] = True
        return live

    def _bridge(self, frame_labels: np.ndarray, signal: _Signal) -> np.ndarray:
        """Same-speaker gaps filled: up to ``speaker_pause_s``, or ``room_pause_s`` where the gap
        is louder than the background (``energy_margin_db`` above it): room tone of a recording
        in progress, which the silence between turns is not."""
        noise = signal.noise
        background = None if noise is None else noise + self.energy_margin_db
        if self.bed_room_pauses and signal.edge_floor is not None:
            background = None
        return _bridge_pauses(
            frame_labels,
            signal.level,
            round(self.speaker_pause_s * _FRAMES_PER_S),
            round(self.room_pause_s * _FRAMES_PER_S),
            background,
        )

    def _background(self, speech: np.ndarray) -> np.ndarray:
        """Frames that tell the background level: non-speech at least ``noise_distance_s`` away
        from speech (pauses inside a sentence hold breaths and room tone, not the background),
        or all non-speech where there is less than a second of those."""
        reach = round(self.noise_distance_s * _FRAMES_PER_S)
        near = np.convolve(speech.astype(float), np.ones(2 * reach + 1), mode="same") > 0
        far = ~near
        return far if far.sum() >= _FRAMES_PER_S else ~speech

    # ------------------------------------------------------------------ embeddings

    def _mel(self, audio: np.ndarray) -> np.ndarray:
        """Power mel spectrogram (frames x 40): the features Resemblyzer's encoder expects."""
        import torch

        spec = torch.stft(
            torch.from_numpy(np.ascontiguousarray(audio)),
            n_fft=_N_FFT,
            hop_length=_FRAME_HOP,
            win_length=_N_FFT,
            window=self._window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return (self._mel_basis @ spec.abs().pow(2)).T.contiguous().numpy()

    def _embed(
        self,
        mel: np.ndarray,
        starts: np.ndarray,
        token: CancelToken,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Unit GE2E embeddings of the 1.6 s windows of ``mel`` starting at ``starts``.

        Windows are sliced batch by batch, so a long file never holds all of them at once.
        """
        import torch

        out = []
        for first in range(0, len(starts), self.batch_size):
            token.raise_if_cancelled()
            chunk = starts[first : first + self.batch_size]
            windows = np.stack([mel[s : s + _WINDOW_FRAMES] for s in chunk])
            with torch.inference_mode():
                batch = torch.from_numpy(windows).to(self._encoder.device)
                out.append(self._encoder(batch).cpu().numpy())
            if progress is not None:
                done = min(first + self.batch_size, len(starts))
                progress(Step("embeddings", done, len(starts), "windows"))
        return np.concatenate(out).astype(np.float64)

    def _window_embeddings(
        self, mel: np.ndarray, speech: np.ndarray, token: CancelToken, progress: ProgressFn
    ) -> tuple[np.ndarray, np.ndarray]:
        """Start frames and unit embeddings of the mostly-speech 1.6 s windows."""
        if len(mel) < _WINDOW_FRAMES:
            mel = np.pad(mel, ((0, _WINDOW_FRAMES - len(mel)), (0, 0)))
            speech = np.pad(speech, (0, _WINDOW_FRAMES - len(speech)))
        starts = np.arange(0, len(mel) - _WINDOW_FRAMES + 1, self.hop_frames)
        if starts[-1] != len(mel) - _WINDOW_FRAMES:
            starts = np.append(starts, len(mel) - _WINDOW_FRAMES)
        cumulative = np.concatenate(([0], np.cumsum(speech)))
        fraction = (cumulative[starts + _WINDOW_FRAMES] - cumulative[starts]) / _WINDOW_FRAMES
        threshold = min(self.min_window_speech, float(fraction.max()))
        starts = starts[fraction >= threshold]
        return starts, self._embed(mel, starts, token, progress)

    # ------------------------------------------------------------------ clustering

    def _cluster(
        self,
        starts: np.ndarray,
        embeddings: np.ndarray,
        count: SpeakerCount,
        similarity: float | None = None,
    ) -> np.ndarray:
        """Cluster label per window: spectral clustering, the count by centroid similarity
        (below ``similarity``, ``speaker_similarity`` by default)."""
        similarity = self.speaker_similarity if similarity is None else similarity
        low, high = count.bounds(self.max_speakers)
        n = len(embeddings)
        if n < 2 or high == 1:
            return np.zeros(n, dtype=int)
        pick = np.arange(n)
        if n > self.max_cluster_windows:  # long files: cluster a regular subsample, assign the rest
            pick = np.linspace(0, n - 1, self.max_cluster_windows).round().astype(int)
        sample = embeddings[pick]
        high = min(high, len(sample) - 1)
        low = min(low, high)
        # The eigengap picks the affinity; the count is the largest whose clusters are all
        # distinct voices (the eigengap's own count over- and under-counted on the dev set).
        _, vectors = _spectral(sample, starts[pick], self.max_neighbour_fraction, low, high)
        for k in range(max(low, min(high, vectors.shape[1])), low - 1, -1):
            if k == 1:
                labels = np.zeros(len(sample), dtype=int)
                break
            labels = _kmeans(vectors[:, :k], k)
            if self._distinct(sample, labels, similarity):
                break
            if self.linkage_margin is not None:
                linked = _average_linkage(sample, k)
                if self._distinct(sample, linked, similarity - self.linkage_margin):
                    labels = linked
                    break
            if k == low:
                break
        centroids = _centroids(sample, labels)
        return np.argmax(embeddings @ centroids.T, axis=1)

    def _distinct(self, embeddings: np.ndarray, labels: np.ndarray, similarity: float) -> bool:
        """Whether every cluster is big enough and no two centroids are alike enough to be one
        speaker."""
        if np.bincount(labels).min() < self.min_cluster_windows:
            return False
        centroids = _centroids(embeddings, labels)
        between = centroids @ centroids.T
        np.fill_diagonal(between, -1.0)
        return bool(between.max() < similarity)

    def _resegment(
        self,
        starts: np.ndarray,
        embeddings: np.ndarray,
        labels: np.ndarray,
        speech: np.ndarray,
        count: SpeakerCount,
    ) -> np.ndarray:
        """Speaker per 10 ms frame (-1 for non-speech) from the windows that cover it."""
        n_frames = len(speech)
        k = int(labels.max()) + 1
        centroids = _centroids(embeddings, labels)
        # Speech frames inside at least one window: the same in every iteration.
        covered = np.zeros(n_frames + _WINDOW_FRAMES + 1)
        covered[starts] += 1
        covered[starts + _WINDOW_FRAMES] -= 1
        scored = speech & (np.cumsum(covered)[:n_frames] > 0.5)
        frame_labels = np.full(n_frames, -1)
        for _ in range(self.resegment_iterations + 1):
            scores = embeddings @ centroids.T  # windows x speakers
            edges = np.zeros((n_frames + _WINDOW_FRAMES + 1, k))
            edges[starts] += scores  # starts are unique: plain indexing accumulates
            edges[starts + _WINDOW_FRAMES] -= scores
            summed = np.cumsum(edges, axis=0)[:n_frames]
            frame_labels = np.where(scored, np.argmax(summed, axis=1), -1)
            window_labels = np.argmax(scores, axis=1)
            present = np.unique(window_labels)
            if count.bounds(self.max_speakers)[0] <= len(present) < k:
                window_labels = np.searchsorted(present, window_labels)
                k = len(present)
            centroids = _centroids(embeddings, window_labels)
        return _fill_nearest(frame_labels, speech)

    # ------------------------------------------------------------------ output

    def _turns(self, frame_labels: np.ndarray, count: SpeakerCount) -> list[Turn]:
        raw = []
        change = np.flatnonzero(np.diff(frame_labels)) + 1
        bounds = np.concatenate(([0], change, [len(frame_labels)]))
        for start, end in itertools.pairwise(bounds):
            label = int(frame_labels[start])
            if label >= 0 and (end - start) / _FRAMES_PER_S >= self.min_turn_s:
                raw.append((start / _FRAMES_PER_S, end / _FRAMES_PER_S, label))
        return label_turns(honour_count(raw, *count.bounds(self.max_speakers)))


# ---------------------------------------------------------------------- helpers


def _mel_filterbank() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=_N_FFT, n_mels=_N_MELS)


def _frame_levels(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """Short-time level (dB) of 20 ms centred on each 10 ms frame."""
    win = 2 * _FRAME_HOP
    power = np.concatenate(([0.0], np.cumsum(np.square(audio, dtype=np.float64))))
    centres = np.arange(n_frames) * _FRAME_HOP
    low = np.clip(centres - win // 2, 0, len(audio))
    high = np.clip(centres + win // 2, 0, len(audio))
    return 10 * np.log10((power[high] - power[low]) / win + 1e-20)


def _normalise_loudness(waveform: np.ndarray) -> np.ndarray:
    """Raises quiet audio to -30 dBFS RMS (never lowers it), like Resemblyzer's preprocessing."""
    rms = float(np.sqrt(np.mean(np.square(waveform, dtype=np.float64)) + 1e-20))
    gain = 10 ** ((_TARGET_DBFS - 20 * np.log10(rms)) / 20)
    return (waveform * gain).astype(np.float32) if gain > 1 else waveform


def _spectral(
    embeddings: np.ndarray, starts: np.ndarray, max_neighbour_fraction: float, low: int, high: int
) -> tuple[int, np.ndarray]:
    """Speaker count and spectral embedding by auto-tuned spectral clustering (NME-SC).

    Park et al., "Auto-Tuning Spectral Clustering for Speaker Diarization Using Normalized
    Maximum Eigengap" (2019): for each neighbour count p the affinity keeps each window's p most
    similar windows (binarised, symmetrised); the p with the smallest ``p / (max eigengap /
    largest eigenvalue)`` wins and its largest eigengap gives the count. Windows that share
    audio with each other are never neighbours, otherwise overlapping windows of one sentence
    form chains that look like extra speakers.
    """
    from scipy.linalg import eigh

    n = len(embeddings)
    similarity = embeddings @ embeddings.T
    similarity[np.abs(starts[:, None] - starts[None, :]) < _WINDOW_FRAMES] = -np.inf
    order = np.argsort(-similarity, axis=1)
    usable = int(np.isfinite(similarity).sum(axis=1).min())
    p_max = max(2, min(usable, int(max_neighbour_fraction * n)))
    best: tuple[float, int, np.ndarray, np.ndarray] | None = None
    top = min(n - 1, high + 1)
    for p in np.unique(np.linspace(2, p_max, 20).round().astype(int)):
        affinity = np.zeros((n, n))
        np.put_along_axis(affinity, order[:, :p], 1.0, axis=1)
        affinity = (affinity + affinity.T) / 2
        laplacian = np.diag(affinity.sum(axis=1)) - affinity
        values, vectors = eigh(laplacian, subset_by_index=[0, top])
        largest = eigh(laplacian, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0]
        gaps = np.diff(values)
        candidates = np.arange(low, min(high, len(gaps)) + 1)
        if not len(candidates):
            continue
        gap = gaps[candidates - 1]
        ratio = p / (gap.max() / max(largest, 1e-10) + 1e-12)
        if best is None or ratio < best[0]:
            best = (ratio, int(candidates[np.argmax(gap)]), values, vectors)
    if best is None:
        return low, np.ones((n, 1))
    _, k, _, vectors = best
    return k, vectors


def _kmeans(points: np.ndarray, k: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    points = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    return KMeans(n_clusters=k, n_init=5, random_state=0).fit_predict(points)


def _average_linkage(embeddings: np.ndarray, k: int) -> np.ndarray:
    """``k`` clusters by average-linkage agglomeration on cosine distance."""
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(embeddings, method="average", metric="cosine")
    return fcluster(tree, t=k, criterion="maxclust") - 1


def _centroids(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    k = int(labels.max()) + 1
    centroids = np.stack(
        [
            embeddings[labels == j].mean(axis=0)
            if (labels == j).any()
            else np.zeros(embeddings.shape[1])
            for j in range(k)
        ]
    )
    return centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)


def _bridge_pauses(
    frame_labels: np.ndarray,
    level: np.ndarray,
    longest: int,
    room_longest: int = 0,
    background: float | None = None,
) -> np.ndarray:
    """Fills the gaps between two frames of one speaker: up to ``longest`` frames, or up to
    ``room_longest`` where the gap's median level is above ``background`` (None: any level).
    Gaps holding digital silence (an edit between recordings) stay."""
    out = frame_labels.copy()
    for start, end in _runs(frame_labels < 0):
        if start == 0 or end == len(out) or out[start - 1] != out[end]:
            continue
        if level[start:end].min() <= _DIGITAL_SILENCE_DB:
            continue
        above = background is None or float(np.median(level[start:end])) > background
        if end - start <= longest or (above and end - start <= room_longest):
            out[start:end] = out[start - 1]
    return out


def _fill_nearest(frame_labels: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Gives every ``wanted`` frame without a label the label of the nearest labelled frame."""
    out = np.where(wanted, frame_labels, -1)
    known = np.flatnonzero(frame_labels >= 0)
    missing = np.flatnonzero(wanted & (frame_labels < 0))
    if known.size == 0 or missing.size == 0:
        return out
    right = np.clip(np.searchsorted(known, missing), 0, known.size - 1)
    left = np.clip(right - 1, 0, known.size - 1)
    nearest = np.where(
        np.abs(known[left] - missing) <= np.abs(known[right] - missing), known[left], known[right]
    )
    out[missing] = frame_labels[nearest]
    return out
