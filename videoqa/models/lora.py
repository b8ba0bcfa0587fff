"""A tiny LoRA on the frozen language model, applied by forward hooks and kept outside the model.

Why optional LoRA: Qwen2-VL's vision tower encodes each temporal patch (2 frames) on its own, so
everything that compares frames (what moved where, when something appeared) happens in the
language model. A frozen SmolLM2 never saw video tokens; a low-rank update of its attention
projections (rank 8 on q and v: about 0.3M parameters) lets it learn to read them while the
rest of its weights, and so its language, stay as they are.

Why hooks and not a module swap: the model keeps its exact transformers structure (its
``state_dict``, ``save_pretrained`` and UniSparse's attention hooks are untouched); the
adapters live in this ``nn.Module`` and add ``scale * B(A(x))`` to each target's output.
:meth:`LoRA.merge` folds them into the weights for export (``W += scale * B @ A``).
B starts at zero, so attaching a fresh LoRA changes nothing until it is trained.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "v_proj")


def _key(name: str) -> str:
    return name.replace(".", "__")


class LoRA(nn.Module):
    """Low-rank adapters on the language model's ``targets`` Linear layers (all decoder layers)."""

    def __init__(self, model, rank: int = 8, alpha: float = 16.0, targets=DEFAULT_TARGETS, seed: int = 0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.rank, self.alpha, self.targets = int(rank), float(alpha), tuple(targets)
        self.scale = self.alpha / self.rank
        self.A = nn.ParameterDict()
        self.B = nn.ParameterDict()
        self._modules_by_key: dict[str, nn.Linear] = {}  # not registered: the model owns them
        gen = torch.Generator().manual_seed(seed)
        lm = model.model.language_model
        for name, module in lm.named_modules():
            if name.rsplit(".", 1)[-1] in self.targets and isinstance(module, nn.Linear):
                k = _key(name)
                a = torch.randn(self.rank, module.in_features, generator=gen) / math.sqrt(module.in_features)
                self.A[k] = nn.Parameter(a)
                self.B[k] = nn.Parameter(torch.zeros(module.out_features, self.rank))
                self._modules_by_key[k] = module
        if not self._modules_by_key:
            raise ValueError(f"no Linear layers named {self.targets} in the language model")
        self._handles = []

    @property
    def config(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)}

    def _hook(self, key):
        def add_delta(module, args, out):
            x = args[0]
            a, b = self.A[key], self.B[key]
            return out + (x.to(a.dtype) @ a.t() @ b.t() * self.scale).to(out.dtype)
        return add_delta

    def attach(self) -> "LoRA":
        """Start adding the adapters' output (idempotent)."""
        if not self._handles:
            self._handles = [m.register_forward_hook(self._hook(k)) for k, m in self._modules_by_key.items()]
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def delta(self, key: str) -> torch.Tensor:
        """``scale * B @ A`` for one target (float32), the change :meth:`merge` makes to its weight."""
        return (self.B[key].detach().float() @ self.A[key].detach().float()) * self.scale

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapters into the weights and remove the hooks (the model then runs alone)."""
        self.detach()
        for k, m in self._modules_by_key.items():
            m.weight.add_(self.delta(k).to(m.weight.device, m.weight.dtype))

    @torch.no_grad()
    def merge_into(self, model) -> None:
        """Fold the adapters into another model with the same structure (e.g. a copy), by module name."""
        lm = model.model.language_model
        for k in self._modules_by_key:
            m = lm.get_submodule(k.replace("__", "."))
            m._forward_hooks.clear()  # a deep copy carries this LoRA's hooks along
            m.weight.add_(self.delta(k).to(m.weight.device, m.weight.dtype))
