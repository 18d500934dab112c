"""Debug visual: a contact sheet (or a short video) of a clip with every face's box and track id.

``python -m services.tracking.overlay --video clip.mp4 --out sheet.jpg [--frames 100-160:4]``

Runs the same pipeline as the service (worker processes, chunks, tracker) in this process, then
draws the tracks on the chosen frames: each id keeps one colour, the label is ``id confidence``,
and each tile shows its frame number. Frames are drawn at the display size the service reports
(square pixels, upright), the pixels its boxes are in. ``--out x.mp4`` writes an annotated video
of the chosen frames instead. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import colorsys
import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from services.common import ffmpeg, files
from services.common.blocking import CancelToken
from services.tracking.config import (
    TrackingSettings,
    available_cores,
    mesh_options_of,
    tracking_options_of,
)
from services.tracking.pipeline import FrameFaces, Summary, collect, track_video
from services.tracking.pool import WorkerPool


def parse_frames(spec: str, frame_count: int) -> list[int]:
    """``"a-b"``, ``"a-b:step"``, ``"a,b,c"`` (mixable with commas) → sorted frame indices."""
    chosen: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        step = 1
        if ":" in part:
            part, step_text = part.split(":", 1)
            step = max(1, int(step_text))
        if "-" in part:
            first, last = (int(v) for v in part.split("-", 1))
        else:
            first = last = int(part)
        chosen.update(range(first, last + 1, step))
    return sorted(i for i in chosen if 0 <= i < frame_count)


def colour(track_id: str) -> tuple[int, int, int]:
    """A stable, saturated BGR colour per track id."""
    hue = int(hashlib.md5(track_id.encode()).hexdigest()[:4], 16) / 0xFFFF
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw(frame_bgr: np.ndarray, faces: FrameFaces, scale: float) -> np.ndarray:
    """``frame_bgr`` resized by ``scale`` with boxes, ids and the frame number drawn on it."""
    import cv2

    height, width = frame_bgr.shape[:2]
    tile = cv2.resize(frame_bgr, (max(1, round(width * scale)), max(1, round(height * scale))))
    for face in faces.faces:
        x0, y0, x1, y1 = (round(v * scale) for v in face.bbox)
        bgr = colour(face.track_id)
        cv2.rectangle(tile, (x0, y0), (x1, y1), bgr, 2)
        label = f"{face.track_id} {face.confidence:.2f}"
        cv2.putText(
            tile, label, (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3
        )
        cv2.putText(tile, label, (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, bgr, 1)
    text = f"#{faces.frame_index}"
    cv2.putText(tile, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3)
    cv2.putText(tile, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1)
    return tile


def contact_sheet(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    rows = math.ceil(len(tiles) / columns)
    height, width = tiles[0].shape[:2]
    sheet = np.zeros((rows * height, columns * width, 3), np.uint8)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, columns)
        sheet[
            row * height : row * height + tile.shape[0], col * width : col * width + tile.shape[1]
        ] = tile
    return sheet


def _write_image(path: Path, image: np.ndarray) -> None:
    import cv2

    with files.replacing(path) as temp:
        if not cv2.imwrite(str(temp), image):
            raise RuntimeError(f"cannot write {path.suffix} images")


def _write_video(path: Path, tiles: list[np.ndarray], fps: float) -> None:
    height, width = tiles[0].shape[:2]
    with files.replacing(path) as temp:
        command = [
            ffmpeg.require_binary("ffmpeg"), "-nostdin", "-v", "error", "-y", "-f", "rawvideo",
            "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-r", f"{fps or 25:g}", "-i", "pipe:0",
            "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
            str(temp),
        ]  # fmt: skip
        done = subprocess.run(
            command, input=b"".join(t.tobytes() for t in tiles), capture_output=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg failed: {done.stderr.decode(errors='replace')[-500:]}")


def track(
    video: Path, settings: TrackingSettings, workers: int
) -> tuple[list[FrameFaces], Summary]:
    """Every frame's tracked faces, computed exactly as the service would."""
    mesh = mesh_options_of(settings)
    options = tracking_options_of(
        settings, mesh, workers=workers, batch_frames=settings.batch_frames
    )
    pool = WorkerPool(workers, mesh, model_root=settings.model_root)
    try:
        pool.start()
        return collect(track_video(video, options, pool, CancelToken()))
    finally:
        pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True, type=Path, help="a video or image file")
    parser.add_argument(
        "--out", required=True, type=Path, help="sheet.jpg / sheet.png, or clip.mp4"
    )
    parser.add_argument("--frames", help="e.g. 100-160:4,200,210 (default: evenly spread frames)")
    parser.add_argument("--tiles", type=int, default=48, help="tiles when --frames is not given")
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--tile-width", type=int, default=320)
    parser.add_argument("--workers", type=int, default=0, help="0: every available core")
    args = parser.parse_args(argv)

    import cv2

    frames, summary = track(args.video, TrackingSettings(), args.workers or available_cores())
    if args.frames:
        chosen = parse_frames(args.frames, len(frames))
    else:
        step = max(1, math.ceil(len(frames) / max(1, args.tiles)))
        chosen = list(range(0, len(frames), step))
    if not chosen:
        parser.error("no frame of the video is in --frames")
    wanted = set(chosen)
    scale = args.tile_width / summary.width
    tiles = []
    for index, rgb in enumerate(ffmpeg.iter_frames(args.video, summary.width, summary.height)):
        if index in wanted:
            tiles.append(draw(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), frames[index], scale))
        if index >= chosen[-1]:
            break
    if args.out.suffix.lower() in (".mp4", ".mkv", ".mov"):
        _write_video(args.out, tiles, summary.fps)
    else:
        _write_image(args.out, contact_sheet(tiles, max(1, args.columns)))
    tracks = ", ".join(
        f"{t.track_id} {t.first_frame}-{t.last_frame} ({t.frames_seen})" for t in summary.tracks
    )
    sys.stderr.write(f"{args.out}: {len(tiles)} frames; {len(summary.tracks)} tracks: {tracks}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
