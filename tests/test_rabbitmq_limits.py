"""Nothing lost to RabbitMQ's own limits: a quorum queue counts the times a message comes back
unacknowledged, and RabbitMQ 4 drops it after 20 unless something dead-letters it."""

import json
import os
import re

import pika
import pytest
from conftest import REPO, eventually
from script_runner import succeeded

POLICIES = REPO / "rabbitmq-policies.json"
IMPORT_COMMAND = (  # what a packaged broker's user runs (docs/what-happens-when.md)
    "sudo install -m 644 rabbitmq-policies.json /etc/rabbitmq/ && "
    "sudo rabbitmqctl import_definitions /etc/rabbitmq/rabbitmq-policies.json"
)

# Long (RabbitMQ 4's limits, a policy import): python -m pytest -m long (docs/tests.md).
pytestmark = [pytest.mark.long]
RETURNS_PAST_THE_LIMIT = 22  # RabbitMQ 4's default limit is 20 returns


def give_back(probe, queue: str, times: int) -> int:
    """Take the first message of ``queue`` and give it back unacknowledged, by closing the
    channel (as a consumer that dies does), ``times`` times; how many times it was there."""
    taken = 0
    for _ in range(times):
        channel = probe.channel.connection.channel()
        method, _properties, _body = channel.basic_get(queue)
        channel.close()
        if method is None:
            return taken
        taken += 1
    return taken


@pytest.fixture
def lesson_policies(scripts):
    """The policies of rabbitmq-policies.json, imported with the command the docs show (the
    file written where rabbitmqctl runs, which may be in a container); cleared after."""
    definitions = json.loads(POLICIES.read_text())["policies"]
    vhost = pika.URLParameters(scripts.broker.url).virtual_host
    if any(policy["vhost"] != vhost for policy in definitions):
        pytest.skip(
            f"rabbitmq-policies.json is for the vhost '/'; the broker's URL names {vhost!r}"
        )
    names = [policy["name"] for policy in definitions]
    where = f"/tmp/rabbit-queues-policies-{os.getpid()}.json"  # readable by the rabbitmq user
    imported = scripts.rabbitmqctl(
        f"cat > {where} <<'EOF'\n{POLICIES.read_text()}EOF\n"
        f"rabbitmqctl import_definitions {where}; status=$?; rm -f {where}; exit $status"
    )
    succeeded(imported)
    try:  # the import goes on after rabbitmqctl returns
        eventually(
            lambda: (
                set(names) <= set(scripts.rabbitmqctl("rabbitmqctl list_policies").stdout.split())
            ),
            timeout=30,
        )
        yield definitions
    finally:
        for name in names:
            scripts.rabbitmqctl(f"rabbitmqctl clear_policy {name}")


def test_listing_the_dead_letters_again_and_again_keeps_every_one_in_order(scripts, probe):
    """Each listing settles what it reads (a copy to the back of the queue, then the ack): it
    never gives a letter back, so no limit counts it, on any RabbitMQ."""
    probe.declare("task_queue.dlq")
    for number in (1, 2, 3):
        probe.publish(
            "task_queue.dlq",
            f"Failed task {number}.".encode(),
            headers={"x-dead-letter-reason": "ValueError: no", "x-attempts": 3},
        )
    eventually(lambda: probe.depth("task_queue.dlq") == 3)

    listings = [
        scripts.run("python work_queue/dead_letters.py") for _ in range(RETURNS_PAST_THE_LIMIT)
    ]

    assert [listed.returncode for listed in listings] == [0] * RETURNS_PAST_THE_LIMIT
    assert {listed.stdout for listed in listings} == {
        " [x] 1: 'Failed task 1.' failed: ValueError: no (3 attempts)\n"
        " [x] 2: 'Failed task 2.' failed: ValueError: no (3 attempts)\n"
        " [x] 3: 'Failed task 3.' failed: ValueError: no (3 attempts)\n"
        " [*] 3 dead letters in task_queue.dlq\n"
    }
    moved = scripts.run("python work_queue/dead_letters.py --requeue")
    assert moved.stdout.endswith(" [*] 3 dead letters moved back to task_queue\n"), moved.stdout
    assert [body for _properties, body in probe.get_all("task_queue")] == [
        b"Failed task 1.",
        b"Failed task 2.",
        b"Failed task 3.",
    ]


def test_a_count_in_the_headers_of_a_first_delivery_is_not_a_return(scripts, probe):
    """A count copied from another broker (a shovel) or forged is not this queue's: the task
    runs, and lesson 3 sends its result."""
    worker = scripts.start_worker("python task_queue/worker.py")
    body = json.dumps({"id": "counted-1", "type": "add", "args": [2, 3]}).encode()
    counts = {"x-delivery-count": 7, "x-acquired-count": 9}
    probe.publish("tasks", body, message_id="counted-1", headers=counts)

    worker.wait_for(r"^ \[x\] Done: add\(2, 3\) = 5")
    results = scripts.run("python task_queue/results.py --burst")
    assert " [x] Task counted-1: add(2, 3) = 5\n" in results.stdout, results.stdout
    assert worker.matching("came back unacknowledged") == []
    assert probe.depth("tasks.dlq") == 0


def test_the_policies_send_what_rabbitmq_would_drop_to_the_dead_letter_queue(
    scripts, probe, lesson_policies
):
    """With rabbitmq-policies.json, a task that any consumer (the official tutorial's worker,
    killed again and again) gives back past RabbitMQ's limit goes to task_queue.dlq with
    RabbitMQ's reason, on 3.10 (no limit of its own) as on 4.x (which would drop it); a dead
    letter given back as often stays where it is."""
    probe.declare("task_queue")
    probe.declare("task_queue.dlq")
    probe.publish("task_queue", b"A task nobody acks.", delivery_mode=pika.DeliveryMode.Persistent)
    probe.publish("task_queue.dlq", b"A parked task.", delivery_mode=pika.DeliveryMode.Persistent)

    assert give_back(probe, "task_queue", RETURNS_PAST_THE_LIMIT) == 21  # then it is gone
    assert give_back(probe, "task_queue.dlq", RETURNS_PAST_THE_LIMIT) == RETURNS_PAST_THE_LIMIT

    eventually(lambda: probe.depth("task_queue.dlq") == 2)
    for _ in range(2):  # the second listing reads the copies the first one made
        listed = succeeded(scripts.run("python work_queue/dead_letters.py"))
        assert sorted(re.findall(r"'(.+?)' failed: (.+)", listed.stdout)) == [
            ("A parked task.", "?"),
            ("A task nobody acks.", "RabbitMQ dead-lettered it from 'task_queue': delivery_limit"),
        ]
    assert IMPORT_COMMAND in (REPO / "docs" / "what-happens-when.md").read_text()
