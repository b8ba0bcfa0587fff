"""Where the pipeline's time goes: the end of prefill (first token) and a module's share of it.

Both read :func:`unisparse.recording.device_clock`, the project's one synchronising clock, so the
numbers are device time, not launch time.
"""

from __future__ import annotations

from typing import Callable

import torch
from unisparse.recording import device_clock


class FirstTokenClock:
    """A logits processor that notes when the first new token's logits exist (the end of prefill).

    Set ``start`` to the clock reading at the start of generation; ``on_first`` is then called
    once with the prefill's duration in seconds."""

    def __init__(self, device: torch.device, on_first: Callable[[float], None] | None = None):
        self.device, self.time, self.start, self.on_first = device, None, None, on_first

    def __call__(self, input_ids, scores):
        if self.time is None:
            self.time = device_clock(self.device)
            if self.on_first is not None and self.start is not None:
                self.on_first(self.time - self.start)
        return scores


class ModuleTimer:
    """Accumulated device time (seconds) of a module's forward calls, through forward pre/post hooks."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.total, self.device, self._t = 0.0, device, None
        self.handles = [module.register_forward_pre_hook(self._start), module.register_forward_hook(self._stop)]

    def _start(self, *args):
        self._t = device_clock(self.device)

    def _stop(self, *args):
        self.total += device_clock(self.device) - self._t

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
