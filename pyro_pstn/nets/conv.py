"""Augerino's 5-layer CNN, used by paper 004 as classifier and as pose embedder (A.3.4).

Four 3×3 convolutions of widths c, 2c, 4c, 8c with ReLU (max-pooling by 2 after the second,
third and fourth), a global max-pool and a linear layer: anchors.md §2.4 gives the authors'
sizes, 389,444 parameters for the Mario-Iggy classifier (c = 32, 4 classes, RGB) and 26,608 for
the pose embedder (c = 8, a 32-d embedding). No batch norm, as in flow_inv. The global max-pool
replaces the authors' fixed ``MaxPool2d(4)``, so 28×28 MNIST works without padding to 32×32.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..transforms import apply_flat


class SimpleConv(nn.Module):
    """Images ``[..., C, H, W]`` → ``[..., outputs]`` (logits, or a pose embedding)."""

    def __init__(self, in_channels: int = 3, outputs: int = 10, width: int = 32):
        super().__init__()
        c = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4 * c, 8 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(8 * c, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_flat(lambda images: self.head(self.features(images)), x, event_dim=3)


# ---- paper 003's VAE networks: PyTorch-VAE's VanillaVAE, cut to three blocks ----------------------

#: Channels of the three blocks: the first three of PyTorch-VAE's (32, 64, 128, 256, 512); 003 §3.2
#: "reduced the number of hidden layers in both the encoder and decoder from 5 to 3".
VAE_CONV_CHANNELS = (32, 64, 128)


def _block(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.LeakyReLU()]


class ConvVAETrunk(nn.Module):
    """PyTorch-VAE's encoder: [Conv 3×3 stride 2, BatchNorm, LeakyReLU] per block (28 → 14 → 7 → 4),
    flattened. Images ``[*S, B, C, 28, 28]`` → features ``[*S, B, 128·4·4]``."""

    def __init__(self, image_shape: tuple[int, int, int] = (1, 28, 28), channels: tuple[int, ...] = VAE_CONV_CHANNELS):
        super().__init__()
        self.image_shape = tuple(image_shape)
        layers, c_in, size = [], image_shape[0], image_shape[-1]
        for c in channels:
            layers += _block(nn.Conv2d(c_in, c, 3, stride=2, padding=1), c)
            c_in, size = c, (size + 1) // 2
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_features = c_in * size * size
        self.final_size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_flat(self.net, x, event_dim=3)


class ConvVAEDecoder(nn.Module):
    """PyTorch-VAE's decoder mirrored on 28 × 28: Linear → 128 × 4 × 4, [ConvTranspose 3×3 stride 2,
    BatchNorm, LeakyReLU] per block (4 → 7 → 14 → 28; PyTorch-VAE's last block and its 3×3 output
    convolution), returning logits (``sigmoid`` gives pixels in [0, 1], where PyTorch-VAE's ``tanh``
    gave [−1, 1]). Codes ``[*S, B, D]`` → ``[*S, B, C, 28, 28]``."""

    def __init__(self, in_features: int, image_shape: tuple[int, int, int] = (1, 28, 28),
                 channels: tuple[int, ...] = VAE_CONV_CHANNELS):
        super().__init__()
        self.image_shape = tuple(image_shape)
        sizes = [image_shape[-1]]
        for _ in channels:
            sizes.append((sizes[-1] + 1) // 2)  # 28, 14, 7, 4
        rev = list(reversed(channels))  # 128, 64, 32
        self.start = (rev[0], sizes[-1], sizes[-1])
        self.input = nn.Linear(in_features, rev[0] * sizes[-1] ** 2)
        layers = []
        for i, c_out in enumerate(rev[1:] + [rev[-1]]):
            size_in, size_out = sizes[-1 - i], sizes[-2 - i]
            extra = size_out - (2 * size_in - 1)  # output_padding: 4 → 7 needs 0, 7 → 14 needs 1
            layers += _block(nn.ConvTranspose2d(rev[i], c_out, 3, stride=2, padding=1, output_padding=extra), c_out)
        self.net = nn.Sequential(*layers, nn.Conv2d(rev[-1], image_shape[0], 3, padding=1))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return apply_flat(lambda c: self.net(self.input(c).unflatten(-1, self.start)), code, event_dim=1)
