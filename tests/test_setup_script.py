"""scripts/setup_env.sh speaks one line per step and shows pip's output only when a step fails."""

import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for python3: `-m venv DIR` makes DIR/bin/python, a stand-in whose pip prints a lot, then fails
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin"
  cat > "$3/bin/python" <<'INNER'
#!/usr/bin/env bash
if [ "$1" = "-c" ]; then exit 1; fi
for i in $(seq 1 90); do echo "WARNING: Location 'file:///opt/pypi/simple/pkg$i/' is ignored"; done
echo "ERROR: no matching distribution for boom"
exit 1
INNER
  chmod +x "$3/bin/python"
  exit 0
fi
exit 1
"""


def test_a_failing_step_prints_its_log_tail_and_nothing_else_is_noisy(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PYTHON": str(fake), "UNISPARSE_VENV": str(tmp_path / "venv"),
           "PATH": "/usr/bin:/bin"}  # no nvidia-smi: the CPU path
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup_env.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert done.stdout.splitlines()[:2] == [f"[setup] creating virtual environment in {tmp_path / 'venv'}",
                                            "[setup] installing PyTorch 2.13.0 (CPU build)"]
    assert all(line.startswith("[setup] ") for line in done.stdout.splitlines())  # one line per step
    assert "WARNING" not in done.stdout
    assert "[setup] FAILED: installing PyTorch" in done.stderr and "ERROR: no matching distribution" in done.stderr
    log = (tmp_path / "venv" / "setup.log").read_text()
    assert log.count("WARNING: Location") >= 90  # everything pip said is in the log
