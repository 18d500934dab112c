"""Winograd F(4×4, 3×3) vs oneDNN's direct convolution on TransNetV2's spatial layers, in one run.

``python -m benchmarks.winograd [--frames N] [--repeat N]``

For each layer the scene service runs through Winograd (the four branches of a dilated layer as
one convolution, on ``--frames`` frames: 200 is one 2-window batch), times oneDNN's channels-last
direct convolution (the reference, what the model runs without the extension) and the extension
at the layer's own tile size and chunking, and at every tile size and fixed chunk sizes, best of
``--repeat``. Prints one JSON line:
per layer the shapes, milliseconds of each, ``speedup`` (direct / Winograd at the layer's
chunking) and ``max_relative_error`` against a float64 convolution; ``total`` sums the layers.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from torch.nn import functional

from services.common.allocator import retain_freed_memory
from services.scene import winograd

#: (input channels, output channels of the four branches together, height, width).
LAYERS = {
    "stack1.layer2": (64, 128, 27, 48),
    "stack2.layer1": (64, 256, 13, 24),
    "stack2.layer2": (128, 256, 13, 24),
    "stack3.layer1": (128, 512, 6, 12),
    "stack3.layer2": (256, 512, 6, 12),
}
FIXED_CHUNKS = (256, 1024, winograd.ALL_TILES)


def _best_ms(run: Callable[[], object], repeat: int) -> float:
    run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return round(min(times) * 1e3, 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    retain_freed_memory()  # as the scene service does
    extension = winograd.load()
    if extension is None:
        raise SystemExit("the Winograd extension did not build (see the warning above)")
    generator = torch.Generator().manual_seed(0)
    report: dict[str, object] = {"threads": torch.get_num_threads(), "frames": args.frames}
    totals = {"direct_ms": 0.0, "winograd_ms": 0.0}
    for name, (channels, out_channels, height, width) in LAYERS.items():
        # Activations after a ReLU, weights of the trained model's scale.
        x = torch.randn(args.frames, height, width, channels, generator=generator).relu_()
        weight = torch.randn(out_channels, channels, 3, 3, generator=generator) * 0.05
        direct_input = x.permute(0, 3, 1, 2)  # channels-last (N, C, H, W)
        direct_weight = weight.contiguous(memory_format=torch.channels_last)
        tile = winograd.best_tile(height, width)
        by_tile = {t: winograd.transform_weight(weight, t) for t in winograd.TILES}
        transformed = by_tile[tile]
        chunk = winograd.chunk_tiles_for(transformed)

        def run_winograd(tiles: int = chunk, tile: int = tile) -> torch.Tensor:
            return winograd.conv3x3(extension, x, by_tile[tile], tile, 4, tiles)  # noqa: B023

        exact = functional.conv2d(direct_input.double(), weight.double(), padding=1)
        got = run_winograd().permute(1, 2, 3, 0, 4).reshape(*x.shape[:3], out_channels)
        error = (got.permute(0, 3, 1, 2).double() - exact).abs().max() / exact.abs().max()
        direct_ms = _best_ms(
            lambda: functional.conv2d(direct_input, direct_weight, padding=1),  # noqa: B023
            args.repeat,
        )
        winograd_ms = _best_ms(run_winograd, args.repeat)
        report[name] = {
            "input": [args.frames, channels, height, width],
            "out_channels": out_channels,
            "tile": tile,
            "multiplications_per_output": round(
                winograd.multiplications_per_output(tile, height, width), 3
            ),
            "chunk_tiles": "all" if chunk == winograd.ALL_TILES else chunk,
            "direct_ms": direct_ms,
            "winograd_ms": winograd_ms,
            "winograd_ms_by_tile_and_chunk": {
                f"F({t},3) " + ("all" if tiles == winograd.ALL_TILES else str(tiles)): _best_ms(
                    lambda tiles=tiles, t=t: run_winograd(tiles, t), args.repeat
                )
                for t in winograd.TILES
                for tiles in FIXED_CHUNKS
            },
            "speedup": round(direct_ms / winograd_ms, 3),
            "max_relative_error": float(f"{error.item():.2e}"),
        }
        totals["direct_ms"] += direct_ms
        totals["winograd_ms"] += winograd_ms
    report["total"] = {
        **{key: round(value, 2) for key, value in totals.items()},
        "speedup": round(totals["direct_ms"] / totals["winograd_ms"], 3),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
