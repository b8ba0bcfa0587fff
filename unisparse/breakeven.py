"""When sparse attention pays: the kept density above which the dense kernel is faster.

After selection the only question left is whether the block-sparse kernel over the kept blocks
beats a dense causal kernel over all of them; the selection is already spent either way. That
break-even density depends on the GPU and the length (the dense kernel's efficiency against
ours), so it is measured, not guessed: ``benchmarks/breakeven/measure_breakeven.py`` times our
kernel at densities up to 1 against the best dense SDPA backend on the device and writes
``breakeven.json`` (package data beside this module): per GPU name, a list of
``[seq_len, density]`` points. Between points the density is interpolated linearly in
``log(seq_len)``; outside them the nearest point holds. A GPU the table does not name gets
:data:`SAFE_DENSITY`, low enough that an unmeasured device never runs a slow sparse call
(it may miss some speed-up). CPU tensors never consult the table (see ``UniSparseConfig.max_density``).
"""

from __future__ import annotations

import bisect
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

TABLE_FILE = Path(__file__).with_name("breakeven.json")
# For a GPU the table does not name: at half the blocks any competent block-sparse kernel beats
# a dense one, while above it an unmeasured kernel may lose.
SAFE_DENSITY = 0.5


@dataclass(frozen=True)
class BreakEven:
    """Measured break-even densities of one GPU, by sequence length (ascending)."""

    device: str
    lengths: tuple[int, ...]
    densities: tuple[float, ...]

    def at(self, seq_len: int) -> float:
        """The break-even density at ``seq_len`` (log-linear between points, clamped outside)."""
        lengths, dens = self.lengths, self.densities
        if seq_len <= lengths[0]:
            return dens[0]
        if seq_len >= lengths[-1]:
            return dens[-1]
        i = bisect.bisect_right(lengths, seq_len)
        x0, x1 = math.log(lengths[i - 1]), math.log(lengths[i])
        w = (math.log(seq_len) - x0) / (x1 - x0)
        return dens[i - 1] + w * (dens[i] - dens[i - 1])


def parse_table(data: dict, source: str = "table") -> dict[str, BreakEven]:
    """``{"devices": {name: {"points": [[seq_len, density], ...], ...}}}`` -> ``{name: BreakEven}``.

    Raises ValueError, naming ``source`` and the entry, on anything malformed."""
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, dict):
        raise ValueError(f"{source}: expected an object with a 'devices' mapping")
    out = {}
    for name, entry in devices.items():
        points = entry.get("points") if isinstance(entry, dict) else None
        try:
            pts = sorted((int(n), float(d)) for n, d in points)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: device {name!r} needs 'points' as [[seq_len, density], ...]") from None
        if not pts or any(n <= 0 or not 0.0 <= d <= 1.0 for n, d in pts) or len({n for n, _ in pts}) != len(pts):
            raise ValueError(f"{source}: device {name!r} has bad points {points!r} "
                             "(distinct positive lengths, densities in [0, 1])")
        out[name] = BreakEven(name, tuple(n for n, _ in pts), tuple(d for _, d in pts))
    return out


@functools.lru_cache(maxsize=4)
def load_table(path: str | Path = TABLE_FILE) -> dict[str, BreakEven]:
    """The break-even table at ``path`` (default: the one shipped with the package); {} when the file is missing."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return parse_table(data, str(path))


def device_name(device) -> str:
    """The name the table is keyed by: ``torch.cuda.get_device_name`` for CUDA devices, else the type."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def break_even_density(device, seq_len: int, table: dict[str, BreakEven] | None = None) -> tuple[float, str]:
    """``(density, where it came from)`` for a call of ``seq_len`` tokens on ``device`` (a name or torch device).

    ``where`` is the device name when the table has it, else ``"default"`` (:data:`SAFE_DENSITY`)."""
    name = device if isinstance(device, str) else device_name(device)
    entries = load_table() if table is None else table
    entry = entries.get(name)
    if entry is None:
        return SAFE_DENSITY, "default"
    return entry.at(seq_len), name
