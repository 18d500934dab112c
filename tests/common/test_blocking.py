"""Blocking work off the loop: bounded, cancellable, errors re-raised, threads and children gone."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from services.common import ffmpeg
from services.common.blocking import CancelToken, iterate_in_thread, run_in_thread
from services.common.errors import UndecodableMedia


def _counting(limit: int, produced: list[int]):
    def produce(token: CancelToken) -> Iterator[int]:
        for i in range(limit):
            if token.cancelled:
                return
            produced.append(i)
            yield i

    return produce


async def test_items_arrive_in_order_and_the_thread_is_joined() -> None:
    produced: list[int] = []
    items = [i async for i in iterate_in_thread(_counting(100, produced), max_pending=4)]
    assert items == list(range(100))
    assert not [t for t in threading.enumerate() if t.name == "blocking-producer"]


async def test_consumer_stopping_early_stops_the_producer() -> None:
    produced: list[int] = []
    async with contextlib.aclosing(
        iterate_in_thread(_counting(10_000, produced), max_pending=4)
    ) as items:
        async for item in items:
            if item == 10:
                break
    # The producer is bounded by max_pending, so it stopped shortly after the consumer.
    assert len(produced) < 20
    assert not [t for t in threading.enumerate() if t.name == "blocking-producer"]


async def test_producer_errors_are_raised_in_the_consumer() -> None:
    def produce(token: CancelToken) -> Iterator[int]:
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        async for _ in iterate_in_thread(produce):
            pass


async def test_cancelling_the_task_cancels_blocking_work() -> None:
    seen = CancelToken()

    def work(token: CancelToken) -> str:
        while not token.wait(0.01):
            pass
        seen.cancel()
        return "stopped"

    task = asyncio.create_task(run_in_thread(work))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen.cancelled


async def test_stopping_a_decode_kills_ffmpeg(testdata, live_children) -> None:
    video = testdata("video/testvideo.mp4")
    children_before = live_children()

    def produce(token: CancelToken) -> Iterator[object]:
        yield from ffmpeg.iter_frames(video, 64, 36, token=token)

    count = 0
    async with contextlib.aclosing(iterate_in_thread(produce, max_pending=2)) as frames:
        async for _frame in frames:
            count += 1
            if count == 5:
                break
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = live_children() - children_before
        if not alive:
            break
        await asyncio.sleep(0.05)
    assert not alive, f"ffmpeg still running: {alive}"


def test_frames_and_probe_of_a_real_video(testdata) -> None:
    video = testdata("video/counter.mp4")
    info = ffmpeg.probe(video)
    assert (info.width, info.height) == (1920, 1080)
    assert info.avg_fps == pytest.approx(10.0)
    frames = list(ffmpeg.iter_frames(video, 48, 27))
    assert len(frames) == info.frame_count
    assert frames[0].shape == (27, 48, 3)


def test_a_file_that_is_not_media_is_undecodable(tmp_path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(UndecodableMedia):
        ffmpeg.probe(junk)
