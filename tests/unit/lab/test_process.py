"""Lab processes end by pid: SIGTERM, then SIGKILL, and `stop` says when one will not end."""

from __future__ import annotations

import subprocess
import sys

from pylium.lab import process

_IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print(1, flush=True); time.sleep(60)"
)


def test_a_process_that_ignores_sigterm_is_killed() -> None:
    with subprocess.Popen([sys.executable, "-c", _IGNORES_TERM], stdout=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline()  # its handler is set
            assert process.alive(proc.pid)
            assert process.stop(proc.pid, timeout=0.2) == ""
            assert proc.wait(timeout=5) == -9
        finally:
            proc.kill()


def test_stopping_a_gone_or_foreign_process_is_a_no_op() -> None:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as proc:
        proc.wait()
    assert process.state(proc.pid) == ""
    assert process.stop(proc.pid) == ""
    with subprocess.Popen(["sleep", "30"]) as sleeper:
        try:
            assert process.stop(sleeper.pid, match=lambda argv: argv[:1] == ["other"]) == ""
            assert process.alive(sleeper.pid)  # not ours by argv: left alone
        finally:
            sleeper.kill()
