"""The task types lesson 3's worker runs, by name. To add one, write a function here and
decorate it with @registry.task; its type annotations are checked against the JSON arguments.
"""

import time

from task_messages import TaskRegistry  # lesson 3's messages: task_messages.py, beside this file

registry = TaskRegistry()

MAX_SLEEP_SECONDS = 60


@registry.task
def add(a: float, b: float) -> float:
    return a + b


@registry.task
def mul(a: float, b: float) -> float:
    return a * b


@registry.task
def sleep(seconds: float) -> float:
    if not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise ValueError(f"sleep takes 0 to {MAX_SLEEP_SECONDS} seconds")
    time.sleep(seconds)
    return seconds


@registry.task
def wordcount(text: str) -> int:
    return len(text.split())
