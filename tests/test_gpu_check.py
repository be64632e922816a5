"""benchmarks/gpu_check.sh gets one short GPU lease: its step limits must fit its deadline, the
deadline must hold even when a step ignores SIGTERM, and every step must run (a smoke run on the
CPU, with the real scripts)."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
LEASE_S = 15 * 60    # device time of one session, the machine's start included
START_S = 3 * 60     # what a start and the transfers have taken, with room to spare
PER_CALL_S = 600     # the device tool's limit on one command
MAX_FILES = 8        # what comes back from the device machine


def default(name: str) -> int:
    return int(re.search(rf"^{name}=\${{{name}:-(\d+)}}$", SCRIPT.read_text(), re.M).group(1))


def test_step_limits_fit_the_deadline_and_the_lease():
    text = SCRIPT.read_text()
    limits = {m[0]: int(m[1]) for m in re.findall(r"^\s*run (\w+) (\d+) ", text, re.M)}
    deadline, kill_after = default("DEADLINE_S"), default("KILL_AFTER")
    assert {"machine", "cuda_tests", "step_bf16", "train_check", "data"} <= set(limits)
    # each step may run its limit, then KILL_AFTER more before SIGKILL
    assert sum(limit + kill_after for limit in limits.values()) <= deadline <= 7 * 60
    assert deadline + START_S <= min(LEASE_S, PER_CALL_S + START_S)
    order = list(limits)
    assert order.index("cuda_tests") < order.index("step_fp32")  # what matters most runs first
    assert order.index("train_check") < order.index("step_fp32")
    files = set(re.findall(r'"\$OUT/([\w.]+)"', text))
    assert {"summary.txt", "log.txt"} <= files
    if '--out "$OUT"' in text:  # gpu_train_check.py writes its training log there
        files.add("train_log.jsonl")
    assert len(files) <= MAX_FILES, files


def test_a_step_that_ignores_sigterm_is_killed_and_the_deadline_holds(tmp_path):
    """Every Python the script runs is a stub that ignores SIGTERM and sleeps: the first step is
    killed KILL_AFTER seconds past its limit, and the steps after it are skipped, not started."""
    stub = tmp_path / "python"
    stub.write_text("#!/usr/bin/env bash\ntrap '' TERM\nsleep 60\n")
    stub.chmod(0o755)
    env = {**os.environ, "PYTHON": str(stub), "DEADLINE_S": "10", "KILL_AFTER": "1", "SMOKE": "1", "DEVICE": "cpu"}
    out = tmp_path / "out"
    start = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=SCRIPT.parents[1], env=env,
                          capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - start
    summary = (out / "summary.txt").read_text()
    assert done.returncode == 1
    assert seconds < 10 + 5, seconds
    assert "FAILED (137): machine" in summary  # killed, not left running
    assert "SKIPPED (deadline of 10 s reached): cuda_tests" in summary and "SKIPPED" in summary.split("data")[-2]
    assert len([p for p in out.rglob("*") if p.is_file()]) <= MAX_FILES


def test_a_smoke_run_on_the_cpu_runs_every_step_and_prints_its_figures(tmp_path):
    """SMOKE=1 DEVICE=cpu: the same steps with tiny sizes, through the real benchmark scripts, so
    that a script the check calls cannot rot unseen before a GPU is lent (the train-step benchmark
    once failed on a field train.gan_step had gained). Limits scaled by 20 and a long deadline:
    the verdict is whether each step ran, not how fast this machine was."""
    env = {**os.environ, "PYTHON": sys.executable, "SMOKE": "1", "DEVICE": "cpu", "LIMIT_SCALE": "20",
           "DEADLINE_S": "3600", "TMPDIR": str(tmp_path)}
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=SCRIPT.parents[1], env=env,
                          capture_output=True, text=True, timeout=1800)
    summary = (out / "summary.txt").read_text()
    assert done.returncode == 0, summary + (out / "log.txt").read_text()[-3000:]
    assert "FAILED" not in summary and "SKIPPED" not in summary
    for figure in ("train_step_img_per_s=", "l1_first_quarter=", "test_py_fps=", "full_samples_per_s="):
        assert summary.count(figure) >= 1, figure
    assert summary.count("train_step_img_per_s=") == 2  # the bf16 and fp32 rows (the other two: not in a smoke run)
    assert len([p for p in out.rglob("*") if p.is_file()]) <= MAX_FILES
