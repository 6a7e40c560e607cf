"""The README's output blocks (```text NAME), and a comparison that allows only what varies.

Every output block the README shows is named in its fence (```text fair-dispatch), as are some
of docs/; a test runs the command it follows and checks what it printed with
``assert_prints(NAME, output)``. tests/test_readme.py checks that every block of the README has
a name, and every name a test that uses it.

Allowed to differ: task and chain ids, durations ("in 0.01 s"), clock times, which worker of
the demo's three is which, counts of tasks sent and kept when the broker is killed mid-stream,
the number of the reconnect attempt that worked, the reason RabbitMQ 4.3 adds to a
reply such as (541 INTERNAL_ERROR - ...), and the broker's address (the tests' own broker is not
at localhost:5672). A line "..." in a block stands for any number of lines.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from script_runner import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCKS = {
    name: block
    for page in PAGES
    if ".ru." not in page.name  # the Russian twins show the same blocks (test_readme.py)
    for name, block in re.findall(r"^```text ([\w-]+)\n(.*?)^```$", page.read_text(), re.M | re.S)
}

VARIES = [
    (r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<id>"),
    (r"\b\d+\.\d\d s\b", "<duration>"),
    (r"\b\d\d:\d\d:\d\d(\.\d{3})?\b", "<time>"),
    # How far a stream got before the broker was killed, and how many tasks the queue kept
    (r"\b\d+(?= tasks without confirms| tasks were sent and confirmed| more were sent)", "<n>"),
    (r"(?m)^task_queue\t\d+$", "task_queue\t<n>"),
    (r"\bworker-\d\b", "worker-<n>"),
    (r"(?m)\(attempt \d+\)$", "(attempt <n>)"),  # how many reconnects it took
    # RabbitMQ 4.3 follows a reply's code and name with its reason: (541 INTERNAL_ERROR - ...)
    (r"\((\d{3} [A-Z_]+) - [^()]*\)", r"(\1)"),
]


def readme_output(name: str) -> str:
    """The README's output block ``name``, as shown."""
    return BLOCKS[name]


def prints(name: str, output: str, broker: Any = None) -> bool:
    """Does ``output`` match the README's block ``name``? ``broker``: the tests' broker, whose
    AMQP and management API addresses the README shows as localhost:5672 and :15672."""
    if broker is not None:
        output = output.replace(_address(broker.url), "localhost:5672")
        if broker.management_url:
            output = output.replace(_address(broker.management_url), "localhost:15672")
    expected, actual = _normalised(readme_output(name)), _normalised(output)
    pattern = "".join(
        r"(?:.*\n)*?" if line == "..." else re.escape(line) + r"\n"
        for line in expected.splitlines()
    )
    return re.fullmatch(pattern, actual.rstrip("\n") + "\n") is not None


def assert_prints(name: str, output: str, broker: Any = None) -> None:
    assert prints(name, output, broker), (
        f"README block {name!r}:\n{readme_output(name)}\nprinted:\n{output}"
    )


def _address(url: str) -> str:
    """'127.0.0.1:35672' of 'amqp://guest:guest@127.0.0.1:35672/%2F'."""
    return urlsplit(url.split(",")[0]).netloc.rsplit("@", 1)[-1]


def _normalised(text: str) -> str:
    for pattern, replacement in VARIES:
        text = re.sub(pattern, replacement, text)
    return text
