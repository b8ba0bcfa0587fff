"""When sparse attention pays: the kept density above which the dense kernel is faster.

After selection the only question left is whether the block-sparse kernel over the kept blocks
beats a dense causal kernel over all of them; the selection is already spent either way. That
break-even density depends on the GPU and the length (the dense kernel's efficiency against
ours), so it is measured, not guessed: ``benchmarks/breakeven/measure_breakeven.py`` times our
kernel at densities up to 1 against the best dense SDPA backend on the device and writes
``breakeven.json`` (package data beside this module): per GPU name, a list of
``[seq_len, density]`` points. Between points the density is interpolated linearly in
``log(seq_len)``; outside them the nearest point holds. A GPU the table does not name takes the
entry of a GPU of the same architecture (the entry's ``"capability"``, e.g. ``"9.0"``: the same
kernels run there, and the ratio of our kernel to cuDNN's follows the architecture, not the memory
size; on an H100 the frame-order kernel ran at 0.74-0.79 of cuDNN's time at densities 0.78-0.84,
32K-64K, where the H200's table has 0.76-0.79 at 0.8: ``benchmarks/attention/ordered_host/``; below
32K, under the default ``min_seq_len``, that was not checked on an H100), the lowest of them where
several match; a GPU of an architecture never measured gets
:data:`SAFE_DENSITY`, low enough that an unmeasured device never runs a slow sparse call (it may
miss some speed-up). CPU tensors never consult the table (see ``UniSparseConfig.max_density``).
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
    capability: str | None = None  # "major.minor" of the GPU measured (e.g. "9.0"), where the entry says

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
        capability = entry.get("capability")
        if capability is not None and not (isinstance(capability, str) and _is_capability(capability)):
            raise ValueError(f"{source}: device {name!r} has capability {capability!r}; expected \"major.minor\", e.g. \"9.0\"")
        out[name] = BreakEven(name, tuple(n for n, _ in pts), tuple(d for _, d in pts), capability)
    return out


def _is_capability(text: str) -> bool:
    major, dot, minor = text.partition(".")
    return bool(dot) and major.isdigit() and minor.isdigit()


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


def device_capability(device) -> str | None:
    """``"major.minor"`` of a CUDA device (what a table entry's ``"capability"`` names), else None."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return "{}.{}".format(*torch.cuda.get_device_capability(device))


def break_even_density(device, seq_len: int, table: dict[str, BreakEven] | None = None,
                       capability: str | None = None) -> tuple[float, str]:
    """``(density, where it came from)`` for a call of ``seq_len`` tokens on ``device`` (a name or torch device).

    ``where`` is the device name when the table has it; for a GPU it does not name, the entry of
    the same architecture it took (``"NVIDIA H200 (same architecture, 9.0)"``; ``capability``
    gives it for a device given by name), else ``"default"`` (:data:`SAFE_DENSITY`)."""
    name = device if isinstance(device, str) else device_name(device)
    entries = load_table() if table is None else table
    entry = entries.get(name)
    if entry is not None:
        return entry.at(seq_len), name
    if capability is None and not isinstance(device, str):
        capability = device_capability(device)
    siblings = [e for e in entries.values() if capability is not None and e.capability == capability]
    if not siblings:
        return SAFE_DENSITY, "default"
    density, source = min((e.at(seq_len), e.device) for e in siblings)
    return density, f"{source} (same architecture, {capability})"
