"""Run the lesson scripts as a learner does: separate processes, the README's own commands."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WAITING = " [*] Waiting for"  # what every consumer prints once it is subscribed


def succeeded(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """``done``, once it is known to have exited 0; else the test fails with what it said."""
    assert done.returncode == 0, f"{done.args} exited {done.returncode}: {done.stderr}"
    return done


def with_ctrl_c() -> None:
    """In a child, before exec: Ctrl+C (SIGINT) as in a terminal. A command started in the
    background by a shell without job control (`pytest &`, some CI runners) inherits SIGINT
    ignored, and Python then never turns it into KeyboardInterrupt: a test sending it would
    fail for a reason of the runner, not of the script."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def python_on_path(bin_dir: Path) -> str:
    """A PATH whose `python` is the interpreter running the tests (venv and all)."""
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


class RunningScript:
    """A long-running command (a worker), its stdout and stderr read line by line."""

    def __init__(self, command: str, env: dict[str, str], *, stdin: bool = False) -> None:
        self.command = command
        self.process = subprocess.Popen(
            shlex.split(command),
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            preexec_fn=with_ctrl_c,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30, count: int = 1) -> list[re.Match[str]]:
        """Wait until ``count`` output lines match the regex ``pattern``; return the matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matches = [m for m in map(regex.search, self.lines) if m]
                if len(matches) >= count:
                    return matches
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise AssertionError(
                        f"{self.command!r}: expected {count} line(s) matching {pattern!r}; "
                        f"exit code {self.process.poll()}, output:\n" + "\n".join(self.lines)
                    )
                self._changed.wait(min(remaining, 0.5))

    def wait_for_count(self, pattern: str, count: int, timeout: float) -> int:
        """Wait up to ``timeout`` for ``count`` lines matching ``pattern``; return how many."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = sum(1 for line in self.lines if regex.search(line))
                remaining = deadline - time.monotonic()
                if found >= count or remaining <= 0 or not self._reader.is_alive():
                    return found
                self._changed.wait(remaining)

    def matching(self, pattern: str) -> list[str]:
        """The output lines so far that match ``pattern``."""
        with self._changed:
            return [line for line in self.lines if re.search(pattern, line)]

    def write(self, text: str) -> None:
        """Type ``text`` into the script's standard input (started with ``stdin=True``)."""
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        """Wait for the process to exit and its output to be read; return its exit code."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return code

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
