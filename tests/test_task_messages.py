"""Lesson 3's message format and task registry, on inputs no script sends."""

import importlib.util
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from script_runner import REPO
from task_messages import BadTask, Result, Step, Task, TaskRegistry, result_message


def load_lesson_registry() -> TaskRegistry:
    """task_queue/tasks.py's registry, loaded from its file (it is a script's module)."""
    spec = importlib.util.spec_from_file_location("lesson_tasks", REPO / "task_queue" / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.registry


lesson_registry = load_lesson_registry()

registry = TaskRegistry()


@registry.task
def scale(value: float, label: str) -> str:
    return f"{label}={value * 2}"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b"[1, 2]",
            'a task must be a JSON object with "id", "type" and "args" (and maybe "chain")',
        ),
        (b'{"id": "1", "type": "add"}', 'a task must be a JSON object with "id", "type"'),
        (b'{"id": "1", "type": "add", "args": [], "x": 1}', "a task must be a JSON object with"),
        (b'{"id": 1, "type": "add", "args": []}', '"id" must be a string of 1 to 255 bytes'),
        (b'{"id": "1", "type": 2, "args": []}', '"type" must be a string'),
        (b'{"id": "1", "type": "add", "args": {"a": 1}}', '"args" must be a list'),
        (b"", "message body is not JSON"),
        (b'"\xc3\x28"', "message body is not UTF-8 text"),
    ],
)
def test_decode_says_what_is_wrong(body, reason):
    with pytest.raises(BadTask) as raised:
        Task.decode(body)
    assert str(raised.value).startswith(reason)


@pytest.mark.parametrize(
    ("chain", "reason"),
    [
        ([], '"chain" must be an object with exactly "id", "step" and "then"'),
        ({"id": "c", "step": 1}, '"chain" must be an object with exactly'),
        ({"id": "", "step": 1, "then": []}, "the chain's id must be a string of 1 to 255 bytes"),
        ({"id": "c", "step": 0, "then": []}, "the chain's step must be a whole number from 1"),
        ({"id": "c", "step": True, "then": []}, "the chain's step must be a whole number"),
        ({"id": "c", "step": 1, "then": [{"type": "add"}]}, 'the chain\'s "then" must be a list'),
        ({"id": "c", "step": 1, "then": [{"type": 1, "args": []}]}, '"type" must be a string'),
        (
            {"id": "c", "step": 10, "then": [{"type": "add", "args": []}]},
            "a chain may have at most 10 steps",
        ),
    ],
)
def test_decode_checks_the_chain(chain, reason):
    body = json.dumps({"id": "1", "type": "add", "args": [1, 2], "chain": chain}).encode()
    with pytest.raises(BadTask) as raised:
        Task.decode(body)
    assert str(raised.value).startswith(reason)


def test_a_chain_hands_each_result_to_the_next_step():
    first = Task.new_chain(Step("add", [2, 3]), [Step("mul", [4]), Step("add", [1])])
    assert Task.decode(first.encode()) == first
    second = first.next_step(5)
    assert (second.type, second.args, second.chain.step, second.chain.steps) == (
        "mul",
        [5, 4],
        2,
        3,
    )
    assert second.chain.id == first.chain.id and second.id != first.id
    third = second.next_step(20)
    assert (third.type, third.args, third.chain.then) == ("add", [20, 1], [])
    assert third.next_step(21) is None
    with pytest.raises(ValueError, match="a chain may have at most 10 steps"):
        Task.new_chain(Step("add", [1, 1]), [Step("add", [1])] * 10)


def test_encode_decode_round_trip():
    task = Task.new("wordcount", ["to be"])
    assert Task.decode(task.encode()) == task
    assert str(task) == 'wordcount("to be")'


def test_registry_checks_argument_types_from_annotations():
    assert registry.run(Task("1", "scale", [2, "x"])) == "x=4"
    assert registry.run(Task("1", "scale", [2.5, "x"])) == "x=5.0"
    with pytest.raises(BadTask, match="scale: value must be float, got True"):
        registry.run(Task("1", "scale", [True, "x"]))  # a JSON true is not a number
    with pytest.raises(BadTask, match="scale: label must be str, got 3"):
        registry.run(Task("1", "scale", [1, 3]))


def test_registry_runs_only_registered_names():
    with pytest.raises(BadTask, match=r"unknown task type '__import__' \(known: scale\)"):
        registry.run(Task("1", "__import__", ["os"]))


def test_a_result_that_is_not_json_is_an_error_not_a_bad_message():
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        result_message("1", Task("1", "mul", [1e308, 10]), result=float("inf"))


def test_the_result_of_an_undecodable_task():
    body = result_message(None, None, error="BadTask: message body is not JSON")
    assert json.loads(body) == {"id": None, "error": "BadTask: message body is not JSON"}
    assert Result.decode(body) == Result(
        "Task None", "an undecodable task failed: BadTask: message body is not JSON", final=True
    )


# -- property-based: whatever arrives, the decoding path decides, it never blows up -------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)
well_formed_tasks = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=20),
        "type": st.sampled_from(["add", "mul", "wordcount", "sleep", "nosuch"]),
        "args": st.lists(json_values, max_size=3),
    }
)
odd_tasks = st.fixed_dictionaries(
    {"id": st.text(max_size=300) | json_values, "type": json_values, "args": json_values},
    optional={
        "chain": json_values
        | st.fixed_dictionaries(
            {"id": json_values, "step": json_values, "then": st.lists(json_values, max_size=3)}
        )
    },
)
task_shaped = st.one_of(well_formed_tasks, well_formed_tasks, odd_tasks)
bodies = (
    st.binary(max_size=300)
    | json_values.map(json.dumps).map(str.encode)
    | task_shaped.map(json.dumps).map(str.encode)
)


@settings(max_examples=500)
@given(bodies)
def test_any_bytes_decode_to_a_task_or_a_bad_task(body):
    try:
        task = Task.decode(body)
    except BadTask:
        return
    assert Task.decode(task.encode()) == task


@settings(max_examples=300)
@given(task_shaped.filter(lambda fields: fields["type"] != "sleep"))
def test_running_any_decoded_task_gives_a_result_or_an_error_result(fields):
    try:
        task = Task.decode(json.dumps(fields).encode())
    except BadTask:
        return
    try:
        body = result_message(task.id, task, result=lesson_registry.run(task))
    except Exception as error:  # what the worker turns into an error result
        body = result_message(task.id, task, error=f"{type(error).__name__}: {error}")
    assert Result.decode(body).outcome.startswith(str(task))
