"""Kill one rank of a running ``videoqa eval`` once its journal holds enough answers.

A crash mid-run must lose nothing that was journaled, and the rerun must answer only what is
missing. This waits until ``OUTPUT/answers.rank<R>.jsonl`` has ``--after`` lines, then sends
SIGKILL to the process whose environment says ``RANK=<R>`` and whose command runs ``videoqa``
(Linux ``/proc``), and prints how many lines each journal held at that moment.

  python benchmarks/multigpu/kill_rank.py --output /tmp/killed --rank 1 --after 4
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def journal_lines(folder: Path, rank: int) -> int:
    path = folder / f"answers.rank{rank}.jsonl"
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.exists() else 0


def rank_pids(rank: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"videoqa" in cmd:
            found.append(int(proc.name))
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--after", type=int, default=4, help="journal lines of that rank before the kill")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args(argv)
    deadline = time.time() + args.timeout
    while journal_lines(args.output, args.rank) < args.after:
        if time.time() > deadline:
            print(f"rank {args.rank} wrote fewer than {args.after} answers in {args.timeout:g} s")
            return 1
        time.sleep(0.2)
    pids = rank_pids(args.rank)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    counts = {r: journal_lines(args.output, r) for r in range(8) if (args.output / f"answers.rank{r}.jsonl").exists()}
    print(f"killed rank {args.rank} (pid {pids}) with journal lines {counts}")
    return 0 if pids else 1


if __name__ == "__main__":
    sys.exit(main())
