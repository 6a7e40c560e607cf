"""How lesson 3's new_task.py reads a task (task_queue/task_command_line.py), in process, with no
broker: numbers and text, values a result could not carry, `--then` chains, a line of standard
input, and what is refused before anything is sent."""

import argparse
import json

import pytest
from task_command_line import (
    add_task_arguments,
    build_task,
    describe,
    encoded,
    looks_like_a_number,
    parse_argument,
    parse_task,
    read_line,
)
from task_messages import MAX_CHAIN_STEPS, MAX_TASK_BYTES, Task

from rabbit_queues.cli import NotSent


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", 2),
        ("-7", -7),
        ("2.5", 2.5),
        ("1e3", 1000.0),
        ("to be", "to be"),
        ("inf", "inf"),  # what JSON cannot carry stays text
        ("-Infinity", "-Infinity"),
        ("nan", "nan"),
        ("0x10", "0x10"),
    ],
)
def test_an_argument_is_a_number_when_it_reads_as_one(text, value):
    parsed = parse_argument(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text", ["1e400", "-1e400", "9" * 4000])
def test_a_number_no_result_could_carry_is_refused(text):
    with pytest.raises(ValueError, match="is out of range for a number"):
        parse_argument(text)


@pytest.mark.parametrize(("text", "number"), [("-1e5", True), ("-x", False), ("-inf", True)])
def test_what_looks_like_a_number(text, number):
    assert looks_like_a_number(text) is number


def parser() -> argparse.ArgumentParser:
    class Raising(argparse.ArgumentParser):
        def error(self, message):
            raise ValueError(message)

    task_parser = Raising(prog="new_task.py")
    add_task_arguments(task_parser)
    return task_parser


def task_from(*arguments: str) -> Task:
    return build_task(parse_task(parser(), list(arguments)))


def test_a_task_from_the_command_line():
    task = task_from("add", "2", "3")
    assert (task.type, task.args, task.chain) == ("add", [2, 3], None)
    assert describe(task) == f"add(2, 3), task id {task.id}"


def test_a_chain_from_the_command_line():
    task = task_from("add", "2", "3", "--then", "mul", "4", "--then", "wordcount")
    assert task.chain is not None and [step.type for step in task.chain.then] == [
        "mul",
        "wordcount",
    ]
    assert describe(task) == f"add(2, 3) | mul(_, 4) | wordcount(_), chain id {task.chain.id}"


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["divide", "1", "2"], "unknown task type 'divide' (known: add, mul, sleep, wordcount)"),
        (["add", "2"], "add"),  # the wrong number of arguments, named by its type
        (["add", "2", "x"], "add"),
        (["add", "2", "3", "--then", "divide"], "unknown task type 'divide'"),
    ],
)
def test_a_task_no_worker_could_run_is_refused_before_sending(arguments, reason):
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        task_from(*arguments)


def test_a_chain_longer_than_a_worker_takes_is_refused():
    steps = ["--then", "add", "1"] * MAX_CHAIN_STEPS
    with pytest.raises(ValueError, match=f"at most {MAX_CHAIN_STEPS} steps"):
        task_from("add", "1", "2", *steps)


def test_a_negative_number_that_argparse_takes_for_an_option_gets_a_hint():
    with pytest.raises(ValueError, match=r"goes after --, as in: add -- -1e5 2"):
        parse_task(parser(), ["add", "-1e5", "2"])
    assert task_from("add", "--", "-1e5", "2").args == [-100000.0, 2]


def test_a_line_of_standard_input_reads_as_a_command_line():
    body, properties = read_line("wordcount 'to be or not'")
    task = json.loads(body)
    assert (task["type"], task["args"]) == ("wordcount", ["to be or not"])
    assert properties == {"message_id": task["id"], "content_type": "application/json"}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("wordcount 'oops", "No closing quotation"),
        ("divide 1 2", "unknown task type 'divide'"),
        ("add 1 2 --bogus", "unrecognized arguments: --bogus"),
    ],
)
def test_a_line_that_cannot_be_a_task_stops_the_send(line, reason):
    with pytest.raises(ValueError, match=reason) as refused:
        read_line(line)
    assert not isinstance(refused.value, NotSent)  # not skipped: the send stops there


def test_a_line_too_long_for_any_task_is_skipped_unread():
    with pytest.raises(NotSent, match=f"a task may be {MAX_TASK_BYTES:,} bytes"):
        read_line("wordcount " + "x" * (2 * MAX_TASK_BYTES))


def test_a_task_larger_than_a_worker_takes_is_not_sent():
    task = task_from("wordcount", "x" * MAX_TASK_BYTES)
    with pytest.raises(NotSent, match=f"a worker takes at most {MAX_TASK_BYTES:,}"):
        encoded(task)
    assert json.loads(encoded(task_from("add", "1", "2")))["args"] == [1, 2]
