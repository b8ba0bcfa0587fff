"""UniSparse configuration: the knobs of the method, validated once at construction.

Defaults follow the paper (sequence factor 8 for q and k, 128x128 blocks, Top-P 0.95).
Choices the paper leaves open, and how we settled them:

* ``sink_blocks``: the first key blocks every query block keeps (attention sinks). Default 1.
* ``local_blocks``: the diagonal block plus ``local_blocks - 1`` blocks before it are always
  kept. The diagonal is never optional (a query always sees itself), so the minimum is 1.
  Default 2: the first rows of a query block attend mostly to the end of the previous block,
  which a score averaged over the whole block under-ranks. On SmolLM2 (4K tokens of code,
  top_p 0.9) forcing it took the perplexity change from +6.6% to +2.4% at the same density
  (0.32 -> 0.33); see benchmarks/fidelity/NOTES.md.
* Forced blocks are taken first and their mass counts toward ``top_p``; the remaining blocks
  are added by descending score until the cumulative share reaches ``top_p``.
* ``variance_correction``: off (0.0) by default. Averaging 8 keys into one composite key drops
  their spread, and with it the mass of a block where one key stands out (a far block that a
  few tokens attend to), because ``mean_j exp(q.k_j) >= exp(q.mean_j k_j)``. With
  ``variance_correction = a > 0`` a second estimate is scored whose composite logits gain the
  second-order term of that gap, ``a * scale^2 / 2 * sum_d q_d^2 var_d(k)`` (the per-feature
  variance of the keys in the group; ``a = 1`` is the Gaussian correction under a diagonal
  covariance), and a block is kept when Top-P keeps it on either estimate. The union, not the
  corrected estimate alone: alone it recalls more mass on average but on SmolLM2 code it starves
  a late-layer head (a group whose spread points away from the query), +2.6% perplexity; the
  union keeps what the plain estimate keeps. On SmolLM2 at 8K tokens ``a = 0.5`` with the union
  is above the default's fidelity-vs-density curve on code and prose (benchmarks/fidelity/NOTES.md).
  Cost: two scoring passes, the second with twice the feature width (selection only).
* ``min_seq_len``: ``sparse_attention`` runs dense attention below this length, where
  selection (about 0.5-0.9 ms, launch-bound) costs more than sparsity can save on every input.
  Default 32768: on an H200 with the Gluon kernel, UniSparse end to end against dense cuDNN on the
  flattest input (Gaussian q/k, 95% of blocks kept) is 0.91x at 16K, 0.94-0.99x at 20K, 0.97x at
  24K and 1.00x at 32K (1.19x at 128K), while video-shaped and structured inputs gain 1.13-1.54x at
  32K; below 32K the sparser inputs still gain (1.3x at 16K) but the flat ones lose, so the default
  keeps the promise of never being slower than dense (benchmarks/attention/families/). Tools that
  measure or show the method at any length (fidelity harness, default-model evaluation, demo,
  benchmarks) set it to 0; callers who know their attention is sparse can lower it.
* ``max_density``: after selection, a call whose kept density is above this runs the dense kernel
  instead (the selection already spent is the only cost), so that UniSparse is never slower than
  dense on inputs whose attention keeps most blocks (video-shaped attention often does). Default
  None: on the Triton backend, the break-even density measured for the GPU and length
  (:mod:`unisparse.breakeven`); on the PyTorch reference backend, no fallback (it defines the
  method). A number applies on every backend; 1.0 never falls back.
* ``calibration_blocks``: 0 (off) by default. One Top-P for every head misjudges heads in both
  directions: the composite estimate is too flat on grid and sink heads (Top-P 0.95 of it keeps
  1.5-2.4x the blocks the exact mass needs) and too sharp on local ones (they recall 0.92-0.97).
  With ``n > 0``, the exact attention of ``calibration_rows`` query rows in each of ``n`` query
  blocks sets each head's threshold: where the recall of those rows' exact mass by its kept blocks
  reaches ``top_p`` (between the :data:`unisparse.calibration.CANDIDATES`, linearly; so ``top_p``
  becomes a recall target rather than a share of the estimate). Cost: ``n * calibration_rows / L`` of one
  dense attention call, plus one small Top-P per candidate (:mod:`unisparse.calibration`). With a
  video layout each head is calibrated in the order it chose, and the probe that chooses compares
  the orders at thresholds calibrated on its rows.
"""

from __future__ import annotations

import dataclasses
import math

BACKENDS = ("auto", "triton", "torch")


def _is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


@dataclasses.dataclass(frozen=True)
class UniSparseConfig:
    """Parameters of UniSparse block selection.

    Attributes:
        block_size: side of the square attention blocks that are kept or skipped.
        q_pool: query tokens averaged into one composite token.
        k_pool: key tokens averaged into one composite token.
        head_pool: query heads averaged so that one selection serves them all. With
            grouped-query attention it must divide the group size (query heads per KV head)
            or be a multiple of it.
        top_p: cumulative share of the (estimated) attention mass each query block keeps.
        sink_blocks: leading key blocks always kept.
        local_blocks: blocks ending at the diagonal that are always kept (>= 1).
        min_seq_len: below this length ``sparse_attention`` computes dense attention.
        max_density: run dense when the selected density is above this (None: the measured
            break-even on the Triton backend, never on the reference backend).
        variance_correction: weight ``a >= 0`` of the key-spread term of the second estimate,
            ``a * scale^2 / 2 * sum_d q_d^2 var_d(k)`` per composite logit; blocks kept by
            Top-P on either estimate are kept. 0 (the default) turns it off.
        video_aware: with a video layout, choose per KV head between the prompt's order and a
            spatial-major order of the video (see the module docstring).
        order_probe: both orders are first scored on every ``order_probe``-th query block only,
            and a KV head moves to the spatial order when there it keeps fewer blocks than in the
            prompt's order on the same rows; each head is then scored in full in its chosen order
            only. 1 scores every row of both orders (the exact choice, about three times the
            selection cost of the frame order alone: the spatial scoring sees keys on both sides
            of the diagonal). At 8 the probes cost 3/8 of one frame-order scoring.
        video_aware_min_len: in a model or :func:`unisparse.sparse_attention`, sequences shorter
            than this keep the prompt's order without scoring another (measured on an H200: at 32K
            tokens the second scoring costs more than it saves unless grid heads dominate; at 128K it
            cuts grid-heavy attention 3x). 0 applies the layout at every length.
        order_cost: a block in the spatial order counts as this many in the prompt's order when
            the orders are compared: the reordered kernel's time per kept block against the plain
            kernel's (every block there needs the element mask of original positions, and the plain
            kernel is the faster one): 1.4 is the Gluon reordered kernel's on an H200 (1.38x the plain
            Gluon kernel's time on the same blocks, ``benchmarks/kernel/ordered_tiles.md``; the
            Triton one's is 1.6-2.2x). 1 compares blocks alone.
        calibration_blocks: query blocks whose exact attention sets each head's Top-P threshold
            (:mod:`unisparse.calibration`); 0 (the default) keeps ``top_p`` for every head.
        calibration_rows: query rows per calibration block (a power of two, at most ``block_size``).
    """

    block_size: int = 128
    q_pool: int = 8
    k_pool: int = 8
    head_pool: int = 1
    top_p: float = 0.95
    sink_blocks: int = 1
    local_blocks: int = 2
    min_seq_len: int = 32768
    variance_correction: float = 0.0
    max_density: float | None = None
    video_aware: bool = True
    order_probe: int = 8
    order_cost: float = 1.4
    video_aware_min_len: int = 65536
    calibration_blocks: int = 0
    calibration_rows: int = 16

    def __post_init__(self) -> None:
        for name in ("block_size", "q_pool", "k_pool", "head_pool", "local_blocks", "order_probe"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("sink_blocks", "min_seq_len", "video_aware_min_len", "calibration_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        r = self.calibration_rows
        if isinstance(r, bool) or not isinstance(r, int) or not _is_power_of_two(r) or r > self.block_size:
            raise ValueError(f"calibration_rows must be a power of two <= block_size={self.block_size}, got {r!r}")
        if self.calibration_blocks and self.variance_correction:
            raise ValueError("calibration_blocks > 0 does not combine with variance_correction > 0 "
                             "(the union of two estimates has no single threshold to calibrate)")
        if not _is_power_of_two(self.block_size) or self.block_size < 16:
            raise ValueError(f"block_size must be a power of two >= 16, got {self.block_size}")
        for name in ("q_pool", "k_pool"):
            value = getattr(self, name)
            if not _is_power_of_two(value) or value > self.block_size:
                raise ValueError(
                    f"{name} must be a power of two that divides block_size={self.block_size}, "
                    f"got {value}"
                )
        if not isinstance(self.top_p, (int, float)) or not (0.0 < float(self.top_p) <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        m = self.max_density
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m <= 1.0):
            raise ValueError(f"max_density must be None or a number in [0, 1], got {m!r}")
        if not isinstance(self.video_aware, bool):
            raise ValueError(f"video_aware must be True or False, got {self.video_aware!r}")
        c = self.order_cost
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0:
            raise ValueError(f"order_cost must be a positive number, got {c!r}")
        a = self.variance_correction
        if (not isinstance(a, (int, float)) or isinstance(a, bool) or not math.isfinite(a) or a < 0):
            raise ValueError(f"variance_correction must be a finite number >= 0, got {a!r}")

    @property
    def q_per_block(self) -> int:
        """Composite query tokens along one block side."""
        return self.block_size // self.q_pool

    @property
    def k_per_block(self) -> int:
        """Composite key tokens along one block side."""
        return self.block_size // self.k_pool

    def replace(self, **changes) -> "UniSparseConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
