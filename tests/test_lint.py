"""The code a learner copies is ruff clean."""

import subprocess
import sys

from script_runner import REPO


def test_ruff_check_and_format():
    for command in (["check", "."], ["format", "--check", "."]):
        linted = subprocess.run(
            [sys.executable, "-m", "ruff", *command],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert linted.returncode == 0, linted.stdout + linted.stderr


def test_no_pickle_or_eval_in_what_handles_messages():
    """Messages are JSON or text: nothing a producer sends is unpickled or evaluated."""
    code = [
        path
        for folder in ("rabbit_queues", "hello_world", "work_queue", "task_queue")
        for path in (REPO / folder).glob("*.py")
    ]
    assert len(code) >= 10
    for path in code:
        text = path.read_text()
        for forbidden in ("import pickle", "eval(", "exec(", "import marshal", "import shelve"):
            assert forbidden not in text, f"{path.name} uses {forbidden}"
