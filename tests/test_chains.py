"""Task chains over the task queue: each step's result is the next step's first argument."""

import re
import signal

from conftest import UUID, send
from readme_output import assert_prints
from script_runner import succeeded


def test_a_three_step_chain_gives_the_final_result(scripts, probe):
    sent = succeeded(scripts.run("python task_queue/new_task.py add 2 3 --then mul 4 --then add 1"))
    assert_prints("chain-sent", sent.stdout)
    chain_id = re.search(rf"chain id ({UUID})", sent.stdout)[1]

    worker = scripts.start("python task_queue/worker.py --burst")
    assert worker.wait() == 0
    results = scripts.start("python task_queue/results.py --burst")
    assert results.wait() == 0

    assert worker.matching("Done") == [
        " [x] Done: add(2, 3) = 5",
        " [x] Done: mul(5, 4) = 20",
        " [x] Done: add(20, 1) = 21",
    ]
    assert results.matching("Chain") == [f" [x] Chain {chain_id}, step 3 of 3: add(20, 1) = 21"]


def test_results_can_show_every_step(scripts, probe):
    _, chain_id = send(scripts, "python task_queue/new_task.py add 2 3 --then mul 4")
    assert scripts.start("python task_queue/worker.py --burst").wait() == 0

    results = scripts.start_worker("python task_queue/results.py --steps")

    results.wait_for("step 2 of 2")
    results.signal(signal.SIGTERM)
    assert results.wait() == 0
    assert results.matching("Chain") == [
        f" [x] Chain {chain_id}, step 1 of 2: add(2, 3) = 5",
        f" [x] Chain {chain_id}, step 2 of 2: mul(5, 4) = 20",
    ]


def test_a_chain_survives_its_worker_being_killed_mid_step(scripts, probe):
    _, chain_id = send(scripts, "python task_queue/new_task.py add 1 2 --then sleep --then add 1")
    first = scripts.start_worker("python task_queue/worker.py")
    first.wait_for(r"Received sleep\(3\)")  # step 2 takes three seconds
    second = scripts.start_worker("python task_queue/worker.py")

    first.signal(signal.SIGKILL)

    second.wait_for(r"Received sleep\(3\), task id \S+, step 2 of chain", timeout=15)
    second.wait_for(r"^ \[x\] Done: add\(3, 1\) = 4$", timeout=15)
    results = scripts.start("python task_queue/results.py --burst")
    assert results.wait() == 0
    assert results.matching("Chain") == [f" [x] Chain {chain_id}, step 3 of 3: add(3, 1) = 4"]
    assert probe.depth("tasks") == 0


def test_a_failing_step_ends_the_chain_with_an_error_result(scripts, probe):
    _, chain_id = send(
        scripts, "python task_queue/new_task.py add 2 3 --then wordcount --then add 1"
    )

    worker = scripts.start("python task_queue/worker.py --burst")
    assert worker.wait() == 0
    results = scripts.start("python task_queue/results.py --burst")
    assert results.wait() == 0

    assert results.matching("Chain") == [
        f" [x] Chain {chain_id}, step 2 of 3: wordcount(5) failed: BadTask: wordcount: text "
        "must be str, got 5; the chain stops here"
    ]
    assert worker.matching("step 3 of chain") == []  # the third step never ran
    ((properties, body),) = probe.get_all("tasks.dlq")
    assert b'"type": "wordcount", "args": [5]' in body
    assert properties.headers["x-dead-letter-reason"].startswith("BadTask: wordcount")


def test_a_malformed_then_is_refused_and_nothing_is_sent(scripts, probe):
    probe.declare("tasks")

    refused = scripts.run("python task_queue/new_task.py add 2 3 --then")

    assert refused.returncode == 2
    assert refused.stdout == ""
    assert_prints("then-without-a-task", refused.stderr)
    assert probe.depth("tasks") == 0


def test_an_absurdly_long_chain_is_refused(scripts, probe):
    probe.declare("tasks")
    command = "python task_queue/new_task.py add 1 1" + " --then add 1" * 10

    refused = scripts.run(command)

    assert refused.returncode == 2
    assert refused.stderr == "error: a chain may have at most 10 steps; nothing was sent\n"
    assert probe.depth("tasks") == 0


def test_chains_from_standard_input(scripts, probe):
    sent = scripts.run(
        r"printf 'add 1 2 --then mul 10\nadd 5 5\n' | python task_queue/new_task.py -"
    )
    succeeded(sent)

    assert scripts.start("python task_queue/worker.py --burst").wait() == 0
    results = scripts.start("python task_queue/results.py --burst")
    assert results.wait() == 0
    assert [line.split(": ", 1)[1] for line in results.matching(r"\[x\] (Task|Chain)")] == [
        "add(5, 5) = 10",
        "mul(3, 10) = 30",
    ]
