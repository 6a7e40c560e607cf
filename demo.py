#!/usr/bin/env python
"""See a lesson work in one terminal: three workers, a producer, one worker killed mid-task.

python demo.py hello_world     auto-ack: what the killed worker held is lost
python demo.py work_queue      manual acks: its task goes to another worker, nothing is lost
python demo.py task_queue      the same with JSON tasks, and results.py printing the results

It runs the README's own commands as separate processes on the broker the scripts use
(--url or AMQP_URL), shows their lines interleaved, one colour per process, sends a mix of
short and long tasks, kills (kill -9) the worker that takes the first long task a second into
it, and ends with a table: tasks per worker, redelivered, lost. Ctrl+C stops everything.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rabbit_queues.cli import counted, run_script, script_parser
from rabbit_queues.connection import BrokerError, connect, redact_url
from rabbit_queues.queues import HELLO, RESULTS, TASK_QUEUE, TASKS, QueueCounts, QueueSpec

REPO = Path(__file__).resolve().parent
WORKERS = 3
KILL_AFTER_SECONDS = 1  # into the first long task
SETTLE_SECONDS = 2  # hello_world: how long the surviving workers must be idle to be done
COLOURS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m"]


@dataclass(frozen=True)
class Lesson:
    folder: str
    queue: QueueSpec
    tasks: list[str]  # lines for `new_task.py -`
    received: re.Pattern[str]  # a worker's line when it takes a task; group 1: the task
    is_long: re.Pattern[str]  # which tasks are long
    acks: bool  # manual acks (work_queue, task_queue) or auto-ack (hello_world)
    reads_results: bool = False  # task_queue: results.py runs too

    def label(self, task: str) -> str:
        """How a worker names ``task`` when it takes it: 'Task 1 .', or add(1, 1)."""
        if not self.reads_results:
            return task
        type_, *arguments = task.split()
        return f"{type_}({', '.join(arguments)})"


# Lessons 1 and 2 take the same text tasks: each '.' a second of work, every fourth one long.
TEXT_TASKS = [f"Task {n} {'....' if n % 4 == 3 else '.'}" for n in range(1, 13)]
TEXT_RECEIVED = re.compile(r"^ \[x\] Received '(.*)'$")
LONG_TEXT_TASK = re.compile(r"\.{4}")
LESSONS = {
    "hello_world": Lesson(
        "hello_world", HELLO, TEXT_TASKS, TEXT_RECEIVED, LONG_TEXT_TASK, acks=False
    ),
    "work_queue": Lesson(
        "work_queue", TASK_QUEUE, TEXT_TASKS, TEXT_RECEIVED, LONG_TEXT_TASK, acks=True
    ),
    "task_queue": Lesson(
        "task_queue",
        TASKS,
        [f"sleep {n}" if n in (3, 4) else f"add {n} {n}" for n in range(1, 13)],
        re.compile(r"^ \[x\] Received (\w+\(.*?\)), task id "),
        re.compile(r"^sleep"),
        acks=True,
        reads_results=True,
    ),
}
DONE = re.compile(r"^ \[x\] Done")
RESULT = re.compile(r"^ \[x\] Task \S+: ")
WAITING = re.compile(r"^ \[\*\] Waiting for")


@dataclass
class Process:
    """A script the demo runs, its output read line by line onto the shared event queue."""

    name: str
    command: str
    colour: str
    popen: subprocess.Popen[str] = field(init=False)
    reader: threading.Thread = field(init=False)  # puts its output lines on the event queue
    took: list[str] = field(default_factory=list)  # tasks it printed as received
    done: list[str] = field(default_factory=list)  # of those, the ones it finished
    ready: bool = False
    killed_during: str | None = None

    @property
    def current(self) -> str | None:
        """The task it is working on, if any."""
        return self.took[-1] if len(self.took) > len(self.done) else None


class Demo:
    def __init__(self, lesson: Lesson, url: str, colour: bool) -> None:
        self.lesson = lesson
        self.url = url
        self.colour = colour
        self.events: queue.Queue[tuple[Process, str | None]] = queue.Queue()
        self.processes: list[Process] = []
        self.results = 0
        self.last_change = time.monotonic()

    # -- output ----------------------------------------------------------------------

    def show(self, name: str, text: str, colour: str = "") -> None:
        label = f"{name:<9}|"
        if self.colour and colour:
            label = f"{colour}{label}\033[0m"
        print(f"{label}{text if text.startswith(' ') else ' ' + text}")

    def say(self, text: str) -> None:
        self.show("demo", text, "\033[1m")

    # -- processes -------------------------------------------------------------------

    def start(self, name: str, command: str, stdin: str | None = None) -> Process:
        process = Process(name, command, COLOURS[len(self.processes) % len(COLOURS)])
        program, *arguments = shlex.split(command)
        assert program == "python"
        process.popen = subprocess.Popen(
            [sys.executable, *arguments],  # the demo's own Python (its venv), as `python`
            cwd=REPO,
            env={**os.environ, "AMQP_URL": self.url},
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl+C reaches the demo only; it stops them itself
        )
        self.say(f"$ {command}   (pid {process.popen.pid})")
        if stdin is not None:
            assert process.popen.stdin is not None
            process.popen.stdin.write(stdin)
            process.popen.stdin.close()
        process.reader = threading.Thread(target=self._read, args=(process,), daemon=True)
        process.reader.start()
        self.processes.append(process)
        return process

    def _read(self, process: Process) -> None:
        assert process.popen.stdout is not None
        for line in process.popen.stdout:
            self.events.put((process, line.rstrip("\n")))
        self.events.put((process, None))

    @property
    def workers(self) -> list[Process]:
        return [p for p in self.processes if p.name.startswith("worker")]

    def handle(self, process: Process, line: str) -> None:
        """Show a line, and note what it says about the tasks."""
        text, note = line, ""
        self.last_change = time.monotonic()
        if WAITING.match(text):
            process.ready = True
        elif taken := self.lesson.received.match(text):
            task = taken.group(1)
            if any(task in worker.took for worker in self.workers):
                note = "   <- redelivered: its first worker died without acknowledging it"
            process.took.append(task)
        elif DONE.match(text) and process.current is not None:
            process.done.append(process.current)
        elif RESULT.match(text):
            self.results += 1
        self.show(process.name, text + note, process.colour)

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Show output until ``condition()`` holds; BrokerError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise BrokerError(f"the demo gave up waiting for {what} after {timeout:.0f} s")
            try:
                process, line = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is not None:
                self.handle(process, line)
            elif process.killed_during is None and process.popen.wait() != 0:
                raise BrokerError(f"{process.command} exited with {process.popen.returncode}")

    def stop_all(self) -> None:
        """SIGTERM: each script finishes its current task and exits; SIGKILL what is left."""
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
        for process in self.processes:  # a process can exit before its last lines are read
            process.reader.join(timeout=max(0.1, deadline + 5 - time.monotonic()))
        while not self.events.empty():  # their last lines (" [x] Done", "Exiting")
            process, line = self.events.get()
            if line is not None:
                self.handle(process, line)

    # -- the demo ----------------------------------------------------------------------

    def check_queues_are_free(self) -> None:
        """The demo counts every task: no old messages, no other workers on its queues."""
        watched = {self.lesson.queue.name: self.lesson.folder + "/worker.py"}
        if self.lesson.reads_results:
            watched[RESULTS.name] = "task_queue/results.py"
        with counts_of(self.url) as counts:
            found = {name: counts.of(name) for name in watched}
        for name, held in found.items():
            if held is not None and held.message_count:
                raise BrokerError(
                    f"queue {name!r} holds {counted(held.message_count, 'messages')} from "
                    f"before, and the demo counts every task: do them first (python "
                    f"{watched[name]} --burst) or drop them (rabbitmqctl purge_queue {name})"
                )
            if held is not None and held.consumer_count:
                raise BrokerError(
                    f"{held.consumer_count} consumer(s) already take from {name!r} (a worker "
                    "in another terminal?): stop them, so the demo can count every task"
                )

    def run(self) -> int:
        lesson = self.lesson
        self.check_queues_are_free()
        self.say(f"lesson {lesson.folder} on {redact_url(self.url)}")
        for number in range(1, WORKERS + 1):
            self.start(f"worker-{number}", f"python {lesson.folder}/worker.py")
        if lesson.reads_results:
            self.start("results", "python task_queue/results.py")
        self.wait_until(lambda: all(p.ready for p in self.processes), 30, "the workers")
        self.start("producer", f"python {lesson.folder}/new_task.py -", "\n".join(lesson.tasks))
        self.kill_a_worker_mid_task()
        self.wait_until(self.finished, 60, "the tasks to be done")
        self.say("no task left to do; stopping the workers (SIGTERM: each finishes and exits)")
        self.stop_all()
        return self.report()

    def kill_a_worker_mid_task(self) -> None:
        """kill -9 the worker that takes the first long task, a second into it."""

        def on_long_task() -> Process | None:
            for worker in self.workers:
                if worker.current is not None and self.lesson.is_long.search(worker.current):
                    return worker
            return None

        self.wait_until(lambda: on_long_task() is not None, 60, "a worker to take a long task")
        victim = on_long_task()
        assert victim is not None and victim.current is not None
        task, kill_at = victim.current, time.monotonic() + KILL_AFTER_SECONDS
        self.wait_until(lambda: time.monotonic() >= kill_at, KILL_AFTER_SECONDS + 1, "a second")
        if victim.current != task:
            return  # it finished already (the machine is slow): nothing to show
        self.say(f"kill -9 {victim.popen.pid}: {victim.name} dies in the middle of {task!r}")
        victim.killed_during = task
        victim.popen.kill()

    def lost_tasks(self) -> list[str]:
        done = {task for worker in self.workers for task in worker.done}
        return [task for task in self.lesson.tasks if self.lesson.label(task) not in done]

    def finished(self) -> bool:
        if not self.lost_tasks():
            return not self.lesson.reads_results or self.results >= len(self.lesson.tasks)
        if self.lesson.acks:
            return False  # every task will be done: wait for it
        # Auto-ack: the killed worker's tasks will never come. Done once the queue is empty
        # and the other workers have been idle for a while.
        idle = all(w.current is None for w in self.workers if w.killed_during is None)
        quiet = time.monotonic() - self.last_change > SETTLE_SECONDS
        return idle and quiet and self.depth() == 0

    def depth(self, *, once_unconsumed: bool = False) -> int:
        """Messages ready in the lesson's queue. ``once_unconsumed``: read when it has no
        consumer left (5 s at most), since RabbitMQ puts back what a worker held when its
        connection goes, and a killed worker's goes a moment after the worker."""
        deadline = time.monotonic() + 5
        with counts_of(self.url) as counts:
            while True:
                held = counts.of(self.lesson.queue.name)
                if held is None:
                    return 0
                unconsumed = held.consumer_count == 0
                if not once_unconsumed or unconsumed or time.monotonic() > deadline:
                    return held.message_count
                time.sleep(0.1)

    def report(self, *, interrupted: bool = False) -> int:
        """The table: tasks per worker, redelivered, lost; 1 if a task was lost with acks."""
        taken = [task for worker in self.workers for task in worker.took]
        redelivered = {task for task in taken if taken.count(task) > 1}
        not_done = self.lost_tasks()
        left = self.depth(once_unconsumed=True)
        print(f"\n{'worker':<10}{'took':>6}{'done':>6}")
        for worker in self.workers:
            killed = f"   killed during {worker.killed_during!r}" if worker.killed_during else ""
            print(f"{worker.name:<10}{len(worker.took):>6}{len(worker.done):>6}{killed}")
        sent, queue_name = len(self.lesson.tasks), self.lesson.queue.name
        if interrupted:
            print(
                f"{sent} tasks sent, {sent - len(not_done)} done, {len(redelivered)} redelivered; "
                f"interrupted: {left} left in {queue_name!r} for the next worker"
            )
            return 130
        print(
            f"{sent} tasks sent, {sent - len(not_done)} done, {len(redelivered)} redelivered, "
            f"{len(not_done)} lost, {left} left in {queue_name!r}"
        )
        if not_done:
            print("lost: " + ", ".join(repr(task) for task in not_done))
        victim = next((worker for worker in self.workers if worker.killed_during), None)
        if victim is None:
            return 0
        if not self.lesson.acks:
            print(
                f"Auto-ack: RabbitMQ forgot each message as it sent it, so what {victim.name} "
                "held when it died is gone. Lesson 2 loses nothing: python demo.py work_queue"
            )
            return 0
        if not_done:
            print(f"{len(not_done)} task(s) lost despite manual acks: a bug, please report it")
            return 1
        print(
            f"Nothing lost: {victim.name} never acknowledged {victim.killed_during!r}, so "
            "RabbitMQ gave it to another worker."
        )
        return 0


@contextmanager
def counts_of(url: str) -> Iterator[QueueCounts]:
    """The queues' counts (passive declares), on a connection of their own."""
    connection, _node = connect(url)
    try:
        yield QueueCounts(connection)
    finally:
        connection.close()


def main() -> None:
    parser = script_parser(__doc__, queue_type=False)
    parser.add_argument("lesson", choices=LESSONS, help="which lesson to run")
    args = parser.parse_args()
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    demo = Demo(LESSONS[args.lesson], args.url, colour)
    try:
        code = demo.run()
    except KeyboardInterrupt:
        if not demo.processes:  # before any started: nothing to stop or count
            raise
        demo.say("Ctrl+C: stopping the workers (each finishes its task; Ctrl+C again to kill)")
        demo.stop_all()
        code = demo.report(interrupted=True)
    finally:
        for process in demo.processes:  # never leave one behind, whatever happened
            if process.popen.poll() is None:
                process.popen.kill()
                process.popen.wait()
    sys.exit(code)


if __name__ == "__main__":
    run_script(main)
