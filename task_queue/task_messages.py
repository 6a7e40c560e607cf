"""Lesson 3's messages, JSON only: a task names a registered function, it never carries code.

task:   {"id": "<uuid>", "type": "add", "args": [2, 3]}
result: {"id": "<uuid>", "type": "add", "args": [2, 3], "result": 5}   (or "error": "<why>")

A task in a chain also carries the chain: its id, which step this is, and the steps still to
run, whose first argument will be this step's result:

task:   {..., "chain": {"id": "<uuid>", "step": 1, "then": [{"type": "mul", "args": [4]}]}}
result: {..., "chain": {"id": "<uuid>", "step": 1, "steps": 2}}
"""

from __future__ import annotations

import inspect
import json
import math
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TASK_FIELDS = {"id", "type", "args"}
CHAIN_FIELDS = {"id", "step", "then"}
STEP_FIELDS = {"type", "args"}
MAX_CHAIN_STEPS = 10
MAX_TASK_BYTES = 64 * 1024  # a task names a function and its arguments; bulk data goes elsewhere
MAX_ID_BYTES = 255  # the id travels as the result's correlation_id, an AMQP short string
CONTENT_TYPE = "application/json"  # the content_type property of a task and of a result


class BadTask(Exception):
    """A task that cannot be run as sent (bad JSON, unknown type, wrong arguments)."""


@dataclass(frozen=True)
class Step:
    """A step of a chain still to run: its first argument will be the previous step's result."""

    type: str
    args: list[Any]


@dataclass(frozen=True)
class Chain:
    """Where a task stands in a chain."""

    id: str
    step: int  # this task's place in the chain, from 1
    then: list[Step]  # the steps after it

    @property
    def steps(self) -> int:
        return self.step + len(self.then)


@dataclass(frozen=True)
class Task:
    id: str
    type: str
    args: list[Any]
    chain: Chain | None = None

    @classmethod
    def new(cls, type: str, args: list[Any]) -> Task:
        """A task with a fresh random id."""
        return cls(str(uuid.uuid4()), type, args)

    @classmethod
    def new_chain(cls, first: Step, then: list[Step]) -> Task:
        """The first task of a new chain; ValueError if the chain is too long."""
        if 1 + len(then) > MAX_CHAIN_STEPS:
            raise ValueError(f"a chain may have at most {MAX_CHAIN_STEPS} steps")
        chain = Chain(str(uuid.uuid4()), 1, then)
        return cls(str(uuid.uuid4()), first.type, first.args, chain)

    def next_step(self, result: Any) -> Task | None:
        """The chain's next task, taking ``result`` as its first argument; None at the end."""
        if self.chain is None or not self.chain.then:
            return None
        following, *rest = self.chain.then
        chain = Chain(self.chain.id, self.chain.step + 1, rest)
        return Task(str(uuid.uuid4()), following.type, [result, *following.args], chain)

    def encode(self) -> bytes:
        fields: dict[str, Any] = {"id": self.id, "type": self.type, "args": self.args}
        if self.chain is not None:
            then = [{"type": step.type, "args": step.args} for step in self.chain.then]
            fields["chain"] = {"id": self.chain.id, "step": self.chain.step, "then": then}
        return json.dumps(fields, allow_nan=False).encode()

    @classmethod
    def decode(cls, body: bytes) -> Task:
        """Parse a task message; raise BadTask (and nothing else) saying what is wrong."""
        if len(body) > MAX_TASK_BYTES:
            raise BadTask(f"message body is {len(body)} bytes; a task may be {MAX_TASK_BYTES}")
        try:
            fields = json.loads(
                body.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
            )
        except UnicodeDecodeError:
            raise BadTask("message body is not UTF-8 text") from None
        except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
            raise BadTask(f"message body is not JSON ({error})") from None
        if not isinstance(fields, dict) or set(fields) - {"chain"} != TASK_FIELDS:
            raise BadTask(
                'a task must be a JSON object with "id", "type" and "args" (and maybe "chain")'
            )
        _check_id(fields["id"], '"id"')
        step = _decode_step(fields)
        chain = _decode_chain(fields["chain"]) if "chain" in fields else None
        return cls(fields["id"], step.type, step.args, chain)

    def __str__(self) -> str:
        """The call as a learner would write it: add(2, 3)."""
        return f"{self.type}({', '.join(json.dumps(arg) for arg in self.args)})"


def _check_id(value: Any, name: str) -> None:
    if not isinstance(value, str) or not 0 < len(value.encode()) <= MAX_ID_BYTES:
        raise BadTask(f"{name} must be a string of 1 to {MAX_ID_BYTES} bytes")


def _decode_step(fields: dict[str, Any]) -> Step:
    if not isinstance(fields["type"], str):
        raise BadTask('"type" must be a string')
    if not isinstance(fields["args"], list):
        raise BadTask('"args" must be a list')
    return Step(fields["type"], fields["args"])


def _decode_chain(fields: Any) -> Chain:
    if not isinstance(fields, dict) or set(fields) != CHAIN_FIELDS:
        raise BadTask('"chain" must be an object with exactly "id", "step" and "then"')
    _check_id(fields["id"], "the chain's id")
    then = fields["then"]
    if not isinstance(then, list) or not all(
        isinstance(step, dict) and set(step) == STEP_FIELDS for step in then
    ):
        raise BadTask('the chain\'s "then" must be a list of {"type", "args"} objects')
    step = fields["step"]
    if isinstance(step, bool) or not isinstance(step, int) or not step >= 1:
        raise BadTask("the chain's step must be a whole number from 1")
    chain = Chain(fields["id"], step, [_decode_step(each) for each in then])
    if chain.steps > MAX_CHAIN_STEPS:
        raise BadTask(f"a chain may have at most {MAX_CHAIN_STEPS} steps")
    return chain


def _reject_constant(name: str) -> None:
    """Python's json accepts NaN and Infinity; JSON does not, and neither do we."""
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    """1e400 would be read as infinity, which no result could then carry."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


def result_message(
    task_id: str | None, task: Task | None, *, result: Any = None, error: str | None = None
) -> bytes:
    """The JSON result for a task: its return value, or the error that stopped it.

    ``task`` is None when the message could not even be decoded as a task.
    """
    fields: dict[str, Any] = {"id": task_id}
    if task is not None:
        fields.update(type=task.type, args=task.args)
        if task.chain is not None:
            chain = task.chain
            fields["chain"] = {"id": chain.id, "step": chain.step, "steps": chain.steps}
    fields.update({"error": error} if error is not None else {"result": result})
    return json.dumps(fields, allow_nan=False).encode()


@dataclass(frozen=True)
class Result:
    """A result message, read for people: whose it is, and what came of it."""

    heading: str  # "Task <id>", or "Chain <id>, step 2 of 3"
    outcome: str  # "add(2, 3) = 5", or "nosuch(1) failed: ..."
    final: bool  # False for a chain's step that succeeded and has steps after it

    @classmethod
    def decode(cls, body: bytes) -> Result:
        fields = json.loads(body)
        if "type" in fields:
            call = str(Task(fields["id"], fields["type"], fields["args"]))
        else:
            call = "an undecodable task"
        failed = "error" in fields
        outcome = (
            f"{call} failed: {fields['error']}"
            if failed
            else f"{call} = {json.dumps(fields['result'])}"
        )
        chain = fields.get("chain")
        if chain is None:
            return cls(f"Task {fields['id']}", outcome, final=True)
        heading = f"Chain {chain['id']}, step {chain['step']} of {chain['steps']}"
        if failed and chain["step"] < chain["steps"]:
            outcome += "; the chain stops here"
        return cls(heading, outcome, final=failed or chain["step"] == chain["steps"])


class TaskRegistry:
    """The task types a worker will run, by name. Nothing outside it can run."""

    def __init__(self) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}

    def task(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: register ``function`` under its own name."""
        self._functions[function.__name__] = function
        return function

    @property
    def names(self) -> list[str]:
        """The registered task types, sorted."""
        return sorted(self._functions)

    def run(self, task: Task) -> Any:
        """Run ``task``; raise BadTask if its type is unknown or its arguments do not fit."""
        self.check(task.type, task.args)
        value = self._functions[task.type](*task.args)
        if isinstance(value, float) and not math.isfinite(value):  # no retry makes it fit
            raise BadTask(f"{task} = {value}, which is out of range for a number")
        return value

    def check(self, type: str, args: list[Any], *, after_a_step: bool = False) -> None:
        """Raise BadTask unless ``type`` is registered and takes ``args``. ``after_a_step``:
        a chain's later step, whose first argument will be the previous step's result."""
        function = self._functions.get(type)
        if function is None:
            known = ", ".join(self.names)
            raise BadTask(f"unknown task type {type!r} (known: {known})")
        given = [_PREVIOUS_RESULT, *args] if after_a_step else args
        try:
            arguments = inspect.signature(function).bind(*given).arguments
        except TypeError as error:
            raise BadTask(f"wrong arguments for {type}: {error}") from None
        hints = typing.get_type_hints(function)
        for name, value in arguments.items():
            if value is not _PREVIOUS_RESULT and not _fits(value, hints.get(name, Any)):
                raise BadTask(f"{type}: {name} must be {hints[name].__name__}, got {value!r}")


_PREVIOUS_RESULT = object()  # not known until the step before has run


def _fits(value: Any, hint: Any) -> bool:
    """Does a JSON value fit a parameter's annotation? (An int fits float; a bool fits nothing.)"""
    if hint is Any:
        return True
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)
