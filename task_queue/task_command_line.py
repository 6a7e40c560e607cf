"""How lesson 3's new_task.py reads a task from its command line, or from a line of standard
input (`new_task.py -`): numbers, text, `--then` for a chain; a task no worker could run is
refused here, before anything is sent."""

import argparse
import json
import math
import shlex

from task_messages import CONTENT_TYPE, MAX_CHAIN_STEPS, MAX_TASK_BYTES, BadTask, Step, Task
from tasks import registry

from rabbit_queues.cli import NotSent, shortened


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    known = ", ".join(registry.names)
    parser.add_argument("type", help=f"task type: {known}; or - for stdin")
    parser.add_argument("args", nargs="*", help="its arguments: numbers, or text in quotes")
    parser.add_argument(
        "--then",
        nargs="+",
        action="append",
        default=[],
        metavar=("TYPE", "ARG"),
        help="then run TYPE on the result (the result comes first, then the ARGs); repeat "
        f"it for a chain of up to {MAX_CHAIN_STEPS} steps",
    )


def parse_task(parser: argparse.ArgumentParser, arguments: list[str]) -> argparse.Namespace:
    """``arguments`` read by ``parser``; argparse takes '-inf' or '-1e5' for an option."""
    args, unknown = parser.parse_known_args(arguments)
    if unknown:
        hint = ""
        if any(looks_like_a_number(argument) for argument in unknown):
            hint = " (a value that starts with '-' goes after --, as in: add -- -1e5 2)"
        parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return args


def looks_like_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


NOT_NUMBERS = ("inf", "infinity", "nan")  # what float() reads, and JSON cannot carry: text


def parse_argument(text: str) -> object:
    """'2' -> 2, '2.5' -> 2.5, anything else stays text; ValueError for a number out of a
    double's range (1e400, or a 4,000-digit integer), which no result could carry."""
    try:
        value = float(text)
    except ValueError:
        return text
    if math.isfinite(value):
        try:
            return int(text)
        except ValueError:
            return value
    if text.strip().lstrip("+-").lower() in NOT_NUMBERS:
        return text
    raise ValueError(f"{shortened(text, 20)} is out of range for a number")


def build_task(args: argparse.Namespace) -> Task:
    """A task, or the first task of a chain; ValueError if a worker could not run it (an
    unknown type, the wrong arguments: a typo is caught here, not in the worker's terminal)
    or if the chain is too long."""
    first = Step(args.type, [parse_argument(argument) for argument in args.args])
    then = [Step(type, [parse_argument(a) for a in arguments]) for type, *arguments in args.then]
    try:
        registry.check(first.type, first.args)
        for step in then:
            registry.check(step.type, step.args, after_a_step=True)
    except BadTask as error:
        raise ValueError(str(error)) from None
    return Task.new_chain(first, then) if then else Task.new(first.type, first.args)


def encoded(task: Task) -> bytes:
    """The task's message; NotSent if it is larger than a worker takes."""
    body = task.encode()
    if len(body) > MAX_TASK_BYTES:
        raise NotSent(f"a task of {len(body):,} bytes: a worker takes at most {MAX_TASK_BYTES:,}")
    return body


def describe(task: Task) -> str:
    """'add(2, 3), task id ...' or, for a chain, 'add(2, 3) | mul(_, 4), chain id ...'."""
    if task.chain is None:
        return f"{task}, task id {task.id}"
    later = [
        f"{step.type}({', '.join(['_', *(json.dumps(arg) for arg in step.args)])})"
        for step in task.chain.then
    ]
    return f"{' | '.join([str(task), *later])}, chain id {task.chain.id}"


class _LineParser(argparse.ArgumentParser):
    """Reads a line of standard input as the command line is read; errors raise ValueError."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(message)


def read_line(line: str) -> tuple[bytes, dict[str, str]]:
    """A line of standard input, read as the command line is: the message to send. One far
    longer than any task is refused unread (shlex takes time in the square of its length)."""
    if len(line) > 2 * MAX_TASK_BYTES:
        raise NotSent(f"a line of {len(line):,} characters: a task may be {MAX_TASK_BYTES:,} bytes")
    line_parser = _LineParser(prog="a line of standard input", add_help=False)
    add_task_arguments(line_parser)
    task = build_task(parse_task(line_parser, shlex.split(line)))
    return encoded(task), {"message_id": task.id, "content_type": CONTENT_TYPE}
