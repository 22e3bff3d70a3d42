"""The per-sample training-time softmax of the last epochs, from which methods select samples and
the audit reads its soft labels."""

from __future__ import annotations

import torch


class History:
    """Ring buffer of the last ``window`` epochs of training-time softmax, ``(N, window, K)``.

    ``dtype`` float16 halves it for many samples times many classes (a probability keeps three
    significant digits); means are always computed in float32.
    """

    def __init__(
        self, num_samples: int, num_classes: int, window: int, dtype: torch.dtype = torch.float32
    ) -> None:
        self.buffer = torch.zeros(num_samples, window, num_classes, dtype=dtype)
        self.filled = 0
        self.window = window

    def push(self, probs: torch.Tensor) -> None:
        """Store one epoch's ``(N, K)`` softmax."""
        self.buffer[:, self.filled % self.window] = probs
        self.filled += 1

    def mean(self) -> torch.Tensor:
        """``(N, K)`` float32 mean over the stored epochs (uniform ``1/K`` before the first epoch)."""
        n = min(self.filled, self.window)
        if n == 0:
            return torch.full(self.buffer.shape[::2], 1.0 / self.buffer.shape[2])
        if self.buffer.dtype == torch.float32:
            return self.buffer[:, :n].mean(dim=1)
        out = torch.empty(self.buffer.shape[::2])
        for rows in torch.arange(len(self.buffer)).split(65536):  # no float32 copy of the whole buffer
            out[rows] = self.buffer[rows, :n].float().mean(dim=1)
        return out

    def mean_given(self, labels: torch.Tensor) -> torch.Tensor:
        """``(N,)`` mean probability of each sample's given label."""
        n = min(self.filled, self.window)
        if n == 0:
            return torch.full((len(labels),), 1.0 / self.buffer.shape[2])
        if self.buffer.dtype == torch.float32:
            return self.mean().gather(1, labels[:, None]).squeeze(1)
        given = self.buffer[:, :n].gather(2, labels.cpu()[:, None, None].expand(-1, n, 1))  # (N, n, 1)
        return given.float().mean(dim=1).squeeze(1)
