"""Winograd F(4x4, 3x3): the same convolution as oneDNN's, on awkward shapes and on the model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional

from services.scene import winograd
from services.scene.detector import iter_decoded_frames, iter_windows
from services.scene.model import build_model, uses_winograd

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = REPO_ROOT.parent / "shared" / "testdata"


@pytest.fixture(scope="module")
def extension():
    built = winograd.load()
    assert built is not None, "the extension must build where a C++ compiler is installed"
    return built


@pytest.mark.parametrize("tile", winograd.TILES)
@pytest.mark.parametrize(
    ("batch", "height", "width", "channels", "out_channels", "groups", "chunk"),
    [
        (3, 27, 48, 64, 32, 4, 256),  # the first stack's size, several chunks
        (2, 13, 24, 8, 12, 3, 5),  # height not a multiple of 4, a chunk that splits a frame
        (1, 6, 12, 5, 7, 1, 1),  # odd channel counts, one tile per chunk
        (4, 1, 1, 3, 2, 2, 1000),  # a single pixel: every tap but the centre is padding
        (1, 9, 5, 16, 16, 1, 7),
    ],
)
def test_matches_the_direct_convolution(
    extension, batch, height, width, channels, out_channels, groups, chunk, tile
) -> None:
    generator = torch.Generator().manual_seed(batch * 100 + height)
    x = torch.randn(batch, height, width, channels, generator=generator)
    weight = torch.randn(out_channels, channels, 3, 3, generator=generator)
    expected = functional.conv2d(x.permute(0, 3, 1, 2).double(), weight.double(), padding=1)
    transformed = winograd.transform_weight(weight, tile)
    got = winograd.conv3x3(extension, x, transformed, tile, groups, chunk)
    assert got.shape == (groups, batch, height, width, out_channels // groups)
    # (groups, N, H, W, Cout/groups) → (N, Cout, H, W)
    joined = got.permute(1, 2, 3, 0, 4).reshape(batch, height, width, out_channels)
    error = (joined.permute(0, 3, 1, 2).double() - expected).abs().max().item()
    # Larger tiles trade accuracy for fewer multiplications (F(6,3) interpolates at ±1/2 and ±2).
    assert error <= {4: 1e-5, 6: 4e-5}[tile] * expected.abs().max().item()


def test_bad_input_is_refused_with_a_reason(extension) -> None:
    weight = winograd.transform_weight(torch.randn(8, 4, 3, 3), 6)
    with pytest.raises(RuntimeError, match="contiguous float"):
        extension.conv3x3(torch.randn(1, 5, 5, 4).double(), weight, 1, 16, 6)
    with pytest.raises(RuntimeError, match="weight must be"):
        extension.conv3x3(torch.randn(1, 5, 5, 3), weight, 1, 16, 6)
    with pytest.raises(RuntimeError, match="weight must be"):  # transformed for F(6,3), not F(4,3)
        extension.conv3x3(torch.randn(1, 5, 5, 4), weight, 1, 16, 4)
    with pytest.raises(RuntimeError, match="groups"):
        extension.conv3x3(torch.randn(1, 5, 5, 4), weight, 3, 16, 6)
    with pytest.raises(RuntimeError, match="tile must be 4 or 6"):
        extension.conv3x3(torch.randn(1, 5, 5, 4), weight, 1, 16, 2)


def test_the_tile_with_fewest_multiplications_is_chosen() -> None:
    assert winograd.multiplications_per_output(4, 8, 8) == 36 / 16
    assert winograd.multiplications_per_output(6, 6, 12) == 64 / 36
    # 13 rows: F(4,3) pads to 16, F(6,3) to 18, and F(6,3) still multiplies less.
    assert winograd.best_tile(13, 24) == 6
    assert winograd.best_tile(4, 4) == 4


@pytest.mark.slow
def test_the_model_gives_the_direct_convolutions_probabilities_on_real_cuts() -> None:
    frames = iter_decoded_frames(TESTDATA / "scenes" / "cuts_dev_1.mp4")
    windows = torch.from_numpy(
        np.stack([w for _, group, _ in iter_windows(frames, 1) for w in group][:6])
    )
    fast, direct = build_model(winograd=True), build_model(winograd=False)
    assert uses_winograd(fast) and not uses_winograd(direct)
    with torch.inference_mode():
        for head_fast, head_direct in zip(fast(windows), direct(windows), strict=True):
            assert not torch.equal(head_fast, head_direct)  # really a different computation
            difference = (torch.sigmoid(head_fast) - torch.sigmoid(head_direct)).abs().max()
            assert difference <= 1e-5


@pytest.mark.slow
def test_without_a_compiler_the_direct_convolution_is_kept(tmp_path) -> None:
    probe = (
        "import json, logging; logging.basicConfig()\n"
        "from services.scene import winograd\n"
        "print(json.dumps(winograd.load() is None))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "CXX": str(tmp_path / "no-such-compiler"),
        "VIDEOANALYSIS_CACHE": str(tmp_path),  # an empty cache: it must try to build
        "PYTHONPATH": str(REPO_ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) is True
    assert "using oneDNN's direct convolution" in done.stderr
