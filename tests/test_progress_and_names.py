"""What a learner sees in the terminal: `new_task.py -` shows its progress on a terminal (and
only there), and a worker started with --verbose says its process id (to kill -9 it)."""

import os
import re
import subprocess
import sys

import pytest
from conftest import eventually
from script_runner import REPO

PROGRESS = re.compile(r"\r \[>\] ([\d,]+) tasks confirmed, [\d,]+/s\x1b\[K")


def run_on_a_terminal(command: list[str], stdin_path, env) -> tuple[int, str]:
    """Run ``command`` with its stdout and stderr on a pseudo-terminal; return all it wrote."""
    import pty

    controller, terminal = pty.openpty()
    with open(stdin_path) as stdin:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=stdin, stdout=terminal, stderr=terminal
        )
    os.close(terminal)
    written = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal's other end is closed, the process is done
            break
        if not chunk:
            break
        written += chunk
    os.close(controller)
    return process.wait(timeout=60), written.decode()


@pytest.mark.timeout(60)
def test_new_task_shows_progress_on_a_terminal(scripts, probe, tmp_path):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("".join(f"task {n}\n" for n in range(20000)))
    command = [sys.executable, "work_queue/new_task.py", "-"]
    code, written = run_on_a_terminal(command, tasks, scripts.env)

    assert code == 0, written
    counts = [int(count.replace(",", "")) for count in PROGRESS.findall(written)]
    assert counts, written  # at least the first confirms are shown at once
    assert counts == sorted(counts) and counts[-1] <= 20000
    # The progress line is wiped, then the summary is printed as usual.
    assert re.search(r"\r\x1b\[K \[x\] Sent 20000 tasks in [\d.]+ s, each confirmed", written)
    assert probe.depth("task_queue") == 20000


@pytest.mark.timeout(60)
def test_new_task_is_quiet_when_piped(scripts, probe, tmp_path):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("".join(f"task {n}\n" for n in range(20000)))
    sent = scripts.run(f"python work_queue/new_task.py - < {tasks} | cat")

    assert sent.returncode == 0
    assert sent.stderr == ""
    assert re.fullmatch(
        r" \[x\] Sent 20000 tasks in [\d.]+ s, each confirmed by the broker\n", sent.stdout
    )


@pytest.mark.timeout(60)
def test_a_verbose_worker_says_its_process_id_first(scripts, probe):
    worker = scripts.start("python work_queue/worker.py --verbose")
    worker.wait_for(r"^ \[\*\] Waiting for messages")
    assert worker.lines[0] == f" [*] Process id {worker.process.pid}"


@pytest.mark.timeout(60)
def test_new_task_typed_into_a_terminal_says_how_and_sends_each_line(scripts, probe):
    """`new_task.py -` with the keyboard as its input: a prompt, then a line, a task."""
    import pty

    controller, terminal = pty.openpty()
    command = [sys.executable, "work_queue/new_task.py", "-"]
    process = subprocess.Popen(
        command, cwd=REPO, env=scripts.env, stdin=terminal, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    written = b""

    def read_until(text: bytes) -> None:
        nonlocal written
        while text not in written:
            chunk = os.read(controller, 65536)
            assert chunk, written
            written += chunk

    read_until(b"Ctrl+D to finish.")
    os.write(controller, b"First task.\n")
    eventually(lambda: probe.depth("task_queue") == 1)  # sent as soon as Enter is pressed
    os.write(controller, b"Second task..\n\x04")  # Ctrl+D at the start of a line: the end
    read_until(b"each confirmed by the broker")
    assert process.wait(timeout=30) == 0
    os.close(controller)
    text = written.decode()
    assert " [*] Type one task per line; each is sent when you press Enter. Ctrl+D to finish." in (
        text
    )
    assert re.search(r" \[x\] Sent 2 tasks in [\d.]+ s, each confirmed by the broker", text)
    assert probe.depth("task_queue") == 2
