"""Small pieces shared by the models."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


class Freezable(nn.Module):
    """A module that can be frozen: no gradients, and it stays in eval mode (dropout off,
    norm statistics fixed) even when a trainer calls ``.train()`` on its parent."""

    frozen: bool = False
    #: Where the weights came from (a hub name or a file), None for random initialisation.
    weights_source: str | None = None

    def freeze(self, frozen: bool = True) -> Freezable:
        self.frozen = frozen
        for param in self.parameters():
            param.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> Freezable:
        return super().train(mode and not self.frozen)


def state_hash(module: nn.Module) -> str:
    """SHA-256 of a module's state (names and fp32 values): its weights' identity."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
