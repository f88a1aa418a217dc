"""Small pieces shared by the models."""

from __future__ import annotations

from torch import nn


class Freezable(nn.Module):
    """A module that can be frozen: no gradients, and it stays in eval mode (dropout off,
    norm statistics fixed) even when a trainer calls ``.train()`` on its parent."""

    frozen: bool = False

    def freeze(self, frozen: bool = True) -> Freezable:
        self.frozen = frozen
        for param in self.parameters():
            param.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> Freezable:
        return super().train(mode and not self.frozen)
