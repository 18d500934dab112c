"""Winograd F(m×m, 3×3) for the 3×3 spatial convolutions of TransNetV2 on the CPU.

TransNetV2 spends about 85 % of a CPU pass in its (1×3×3) spatial convolutions, which oneDNN
already runs near this CPU's peak, so the only way to make them much faster is fewer
multiplications: Winograd's F(6×6, 3×3) needs 64 per 6×6 output tile and channel pair instead of
324 (F(4×4, 3×3): 36 instead of 144). The transforms are in ``winograd.cpp`` (compiled once per
machine with torch's extension builder, cached under the project cache); the channel products
are one grouped 1×1 convolution that oneDNN runs. Outputs differ from the direct convolution by
float rounding only (about 1e-5 relative per layer; the probabilities stay within 1e-6 of the
reference).

:func:`load` returns None where the extension cannot be built (no C++ compiler, not x86/ARM, ...);
callers then keep the direct convolution.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("winograd.cpp")
#: Tiles transformed per step where the layer's weights are small: the step's transformed input
#: and products then stay in cache between the three steps.
DEFAULT_CHUNK_TILES = 256
#: All tiles in one step.
ALL_TILES = 2**40


def chunk_tiles_for(weight: torch.Tensor) -> int:
    """Tiles per step for a layer, given its :func:`transform_weight` output.

    Every step re-reads the transformed weights ((tile+2)²·C·Cout floats, up to 34 MB in
    TransNetV2's last stack). Beyond twice a core's 2 MB L2 that costs more than keeping the
    step's data in cache saves, and one step over all tiles (a single large matrix product) is
    fastest, while the first stack's layer (1.2 MB of weights) is fastest in steps of 256 tiles
    (37 ms against 46 ms in one step per 200 frames on the dev machine).
    ``python -m benchmarks.winograd`` measures every choice.
    """
    return ALL_TILES if weight.numel() * weight.element_size() > 4 * 2**20 else DEFAULT_CHUNK_TILES


#: G of F(m, 3) by output tile side m, the kernel transform (the input (Bᵀ) and output (Aᵀ)
#: transforms are written out in winograd.cpp). Interpolation points 0, ±1, ±2 (and ±1/2 for
#: m = 6) and ∞ (Lavin & Gray, 2016).
_G = {
    4: (
        (1 / 4, 0.0, 0.0),
        (-1 / 6, -1 / 6, -1 / 6),
        (-1 / 6, 1 / 6, -1 / 6),
        (1 / 24, 1 / 12, 1 / 6),
        (1 / 24, -1 / 12, 1 / 6),
        (0.0, 0.0, 1.0),
    ),
    6: (
        (1.0, 0.0, 0.0),
        (-2 / 9, -2 / 9, -2 / 9),
        (-2 / 9, 2 / 9, -2 / 9),
        (1 / 90, 1 / 45, 2 / 45),
        (1 / 90, -1 / 45, 2 / 45),
        (32 / 45, 16 / 45, 8 / 45),
        (32 / 45, -16 / 45, 8 / 45),
        (0.0, 0.0, 1.0),
    ),
}
TILES = tuple(_G)


def multiplications_per_output(tile: int, height: int, width: int) -> float:
    """Multiplications per output pixel and channel pair, counting the padding that fills the
    last row and column of tiles (direct convolution: 9)."""
    padded = -(-height // tile) * tile * -(-width // tile) * tile
    return (tile + 2) ** 2 / tile**2 * padded / (height * width)


def best_tile(height: int, width: int) -> int:
    """The output tile side with the fewest multiplications for an image of this size."""
    return min(TILES, key=lambda tile: multiplications_per_output(tile, height, width))


def _build_directory() -> Path:
    import torch

    cache = Path(os.environ.get("VIDEOANALYSIS_CACHE", Path.home() / ".cache" / "videoanalysis"))
    version = torch.__version__.replace("+", "_")
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache / "torch_extensions" / f"{platform.machine()}-{python}-torch{version}"


def _compiler_flags() -> list[str]:
    import torch

    # -fopenmp without -lgomp: at::parallel_for's OpenMP calls bind to the runtime torch already
    # loaded, so the transforms share torch's threads instead of starting a second pool.
    flags = ["-O3", "-fopenmp"]
    # Vectorise the transforms for the CPU torch itself dispatches to (never -march=native: the
    # build directory may be shared by machines of the same architecture).
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return flags


@functools.cache
def load() -> Any | None:
    """The compiled extension (built on first use, 15-60 s; then loaded from the cache in well
    under a second), or None where it cannot be built."""
    # Importing the builder warns when there is no CUDA toolkit, which a CPU extension never needs.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    flags = _compiler_flags()
    name = "videoanalysis_winograd_" + "_".join(f.strip("-") for f in flags[1:])
    directory = _build_directory() / name
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return cpp_extension.load(
            name=name,
            sources=[str(_SOURCE)],
            extra_cflags=flags,
            build_directory=str(directory),
            verbose=False,
        )
    except (OSError, RuntimeError, ImportError, subprocess.CalledProcessError) as exc:
        # No compiler or ninja, a read-only cache, a failed build: keep the direct convolution.
        log.warning("Winograd convolution unavailable (%s); using oneDNN's direct convolution", exc)
        return None


def transform_weight(weight: torch.Tensor, tile: int) -> torch.Tensor:
    """(Cout, C, 3, 3) kernel → ((tile+2)²·Cout, C, 1, 1), the grouped 1×1 weight of
    :func:`conv3x3` (computed in float64, then rounded once)."""
    import torch

    g = torch.tensor(_G[tile], dtype=torch.float64)
    transformed = torch.einsum("ak,oikl,bl->aboi", g, weight.double(), g)
    return transformed.reshape(-1, weight.shape[1], 1, 1).float().contiguous()


def conv3x3(
    extension: Any,
    x: torch.Tensor,
    weight: torch.Tensor,
    tile: int,
    groups: int = 1,
    chunk_tiles: int = DEFAULT_CHUNK_TILES,
) -> torch.Tensor:
    """3×3 convolution (stride 1, zero padding 1) of channels-last ``x`` (N, H, W, C).

    ``weight`` comes from :func:`transform_weight` with the same ``tile``. Returns
    (groups, N, H, W, Cout/groups): the output channels split into ``groups`` channels-last
    tensors.
    """
    return extension.conv3x3(x, weight, groups, chunk_tiles, tile)


if __name__ == "__main__":
    # ``python -m services.scene.winograd``: build (or find) the extension ahead of the first
    # request; scripts/install.sh runs it.
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    extension = load()
    print(f"winograd extension: {extension.__file__ if extension else 'unavailable'}")
    sys.exit(0 if extension else 1)
