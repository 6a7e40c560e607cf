"""Ctrl+C or SIGTERM may arrive while a worker is in the middle of printing a line."""

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import eventually
from script_runner import REPO, with_ctrl_c

WHOLE_LINE = re.compile(
    r" \[[x*]\] (Received 'task \d+'|Done|Exiting|Waiting for messages\. .+"
    r"|Finishing the current message first .+)"
)

# Long (signals aimed inside a print, many times): python -m pytest -m long (docs/tests.md).
pytestmark = [pytest.mark.long]


def blocked_writing(pid: int) -> bool:
    """Is the process's main thread blocked writing to a full pipe?"""
    return "pipe_write" in Path(f"/proc/{pid}/wchan").read_text()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_inside_a_print_stops_the_worker_cleanly(scripts, probe, signum):
    """A worker writes its lines through its stream's lock. A signal whose handler printed too
    would wait for that lock, held by the very print it interrupted: the worker froze, never
    acked its task, and had to be killed (seen in the demo, one run in ten). Here the worker's
    output pipe is left full, so that it is surely blocked inside a print of its handler's
    when the signal comes; then the pipe is read again."""
    assert (
        scripts.run(
            'for i in $(seq 3000); do echo "task $i"; done | python work_queue/new_task.py -'
        ).returncode
        == 0
    )
    worker = subprocess.Popen(
        [sys.executable, "work_queue/worker.py"],
        cwd=REPO,
        env=scripts.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=with_ctrl_c,
    )
    try:
        eventually(lambda: blocked_writing(worker.pid), timeout=30)  # nobody reads: it fills

        worker.send_signal(signum)
        output, _ = worker.communicate(timeout=15)  # read the pipe; it must finish and exit

        assert worker.returncode == 0, output[-2000:]
        lines = output.splitlines()
        assert lines[-1] == " [*] Exiting"
        # Every line whole: the pump thread's "Finishing..." once landed inside the handler's
        # " [x] Done" (a print is two writes), and that Done went uncounted.
        assert [line for line in lines if not WHOLE_LINE.fullmatch(line)] == []
        done = output.count(" [x] Done\n")
        # Each task done once, or back in the queue (the one prefetched but not started is
        # requeued as the worker's channel closes: the broker may take a moment).
        eventually(lambda: probe.depth("task_queue") == 3000 - done)
        assert probe.consumers("task_queue") == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
