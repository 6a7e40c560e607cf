"""The one-line explanations and the options every script shares, in process, with no broker:
each connection failure as a learner reads it, what was lost, a queue declared otherwise, and
how --url, AMQP_URL and --queue-type are read."""

import socket
import ssl

import pika.exceptions
import pytest
from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout

from rabbit_queues.cli import PERMISSIONS, counted, script_parser, shortened
from rabbit_queues.connection import (
    DEFAULT_URL,
    URL_HINT,
    BrokerError,
    Lost,
    explain_connection_error,
    grant_command,
    how_to_start_rabbitmq,
    url_parameters,
    what_was_lost,
    without_advice,
)
from rabbit_queues.queues import TASK_QUEUE, dead_letter_queue, explain_clash, retry_queue

PARAMETERS = url_parameters("amqp://ann:s3cret@rabbit.example:5672/lessons")


def told(error: BaseException) -> str:
    explained = explain_connection_error(PARAMETERS, error)
    assert "s3cret" not in str(explained)
    return str(explained)


def test_a_wrong_password_names_the_user_and_never_the_password():
    assert told(pika.exceptions.ProbableAuthenticationError("ACCESS_REFUSED")) == (
        "RabbitMQ at rabbit.example:5672 refused the login of user 'ann': wrong user or "
        f"password; {URL_HINT}"
    )


def test_a_missing_vhost_says_how_to_make_it():
    # pika keeps RabbitMQ's reason only inside its message, as "(530) 'NOT_ALLOWED - ...'"
    error = pika.exceptions.ProbableAccessDeniedError(
        "(530) 'NOT_ALLOWED - vhost lessons not found'"
    )
    grant = grant_command("lessons", "ann")
    assert told(error) == (
        "RabbitMQ at rabbit.example:5672 refused virtual host 'lessons' (NOT_ALLOWED - vhost "
        f"lessons not found): create it (rabbitmqctl add_vhost lessons; {grant}) or {URL_HINT}"
    )


def test_a_vhost_the_user_may_not_use_says_which_permissions_to_grant():
    error = pika.exceptions.ProbableAccessDeniedError(
        "(530) \"NOT_ALLOWED - access to vhost 'lessons' refused for user 'ann'\""
    )
    assert told(error).endswith(f": {grant_command('lessons', 'ann')}")


def test_an_unknown_host_is_one_line():
    assert told(socket.gaierror(-2, "Name or service not known")) == (
        f"cannot resolve host 'rabbit.example'; {URL_HINT}"
    )


def test_tls_on_a_plain_port_says_which_port_speaks_tls():
    wrong = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    wrong.reason = "WRONG_VERSION_NUMBER"
    assert "that port does not speak TLS" in told(wrong)
    assert "5671" in told(wrong)


def test_a_listener_that_never_speaks_amqp_is_named_by_its_port():
    assert told(AMQPConnectorStackTimeout("timeout")).startswith(
        "nothing speaking AMQP answered at rabbit.example:5672 within 15 s"
    )


def test_a_refused_connection_keeps_what_happened_apart_from_the_advice():
    refused = pika.exceptions.AMQPConnectionError(ConnectionRefusedError(111, "Connection refused"))
    error = explain_connection_error(PARAMETERS, refused)
    assert error.what == "cannot reach RabbitMQ at rabbit.example:5672 (connection refused)"
    assert without_advice(error) == error.what
    assert str(error) == f"{error.what}: start the broker ({how_to_start_rabbitmq()}) or {URL_HINT}"


@pytest.mark.parametrize(
    ("installed", "advice"),
    [
        ("", "docker compose up -d"),
        ("rabbitmq-server", "systemctl start rabbitmq-server, as root"),
        ("rabbitmq-server brew", "brew services start rabbitmq"),
    ],
)
def test_how_to_start_rabbitmq_follows_what_is_installed(tmp_path, installed, advice):
    for program in installed.split():
        (tmp_path / program).write_text("#!/bin/sh\n")
        (tmp_path / program).chmod(0o755)
    assert how_to_start_rabbitmq(str(tmp_path)) == advice


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (None, "lost the connection to RabbitMQ"),
        (
            pika.exceptions.StreamLostError("gone"),
            "lost the connection to RabbitMQ (StreamLostError)",
        ),
        (
            pika.exceptions.ConnectionClosedByBroker(320, "CONNECTION_FORCED - shutdown"),
            "RabbitMQ closed the connection (320 CONNECTION_FORCED - shutdown)",
        ),
        (
            pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no queue 'x'"),
            "RabbitMQ closed the channel (NOT_FOUND - no queue 'x')",
        ),
        (Lost("queue 'tasks' was deleted"), "queue 'tasks' was deleted"),
    ],
)
def test_what_was_lost_is_said_one_way_wherever_it_is_said(error, said):
    assert what_was_lost(error) == said


def test_a_queue_declared_otherwise_gets_rabbitmqs_reason_and_both_ways_out():
    reason = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'task_queue'"
    explained = explain_clash(TASK_QUEUE, reason)
    assert reason in explained
    assert "another --queue-type?" in explained
    assert explained.endswith("rabbitmqctl delete_queue task_queue")


def test_the_permissions_hint_is_the_grant_command():
    assert PERMISSIONS.endswith(grant_command("VHOST", "USER"))


def test_a_quorum_queue_has_quorum_retry_and_dead_letter_queues():
    quorum = TASK_QUEUE.of_type("quorum")
    assert (quorum.queue_type, TASK_QUEUE.queue_type) == ("quorum", "classic")
    assert dead_letter_queue(quorum).arguments == {"x-queue-type": "quorum"}
    retry = retry_queue(quorum).arguments
    assert retry["x-dead-letter-routing-key"] == "task_queue"
    assert retry["x-dead-letter-strategy"] == "at-least-once"  # never lost on its way back
    assert dead_letter_queue(TASK_QUEUE).arguments == {}


def test_url_option_then_amqp_url_then_the_default(monkeypatch):
    parser = script_parser("doc", worker=True)
    monkeypatch.delenv("AMQP_URL", raising=False)
    assert parser.parse_args([]).url == DEFAULT_URL
    monkeypatch.setenv("AMQP_URL", "amqp://a/,amqp://b/")
    assert parser.parse_args([]).url == "amqp://a/,amqp://b/"
    both = parser.parse_args(["--url", "amqp://x/", "--url", "amqp://y/"])
    assert both.url == "amqp://x/,amqp://y/"  # a cluster's nodes
    assert (both.burst, both.queue_type) == (False, "quorum")


def test_a_queue_type_from_the_environment_is_checked_too(monkeypatch, capsys):
    monkeypatch.setenv("QUEUE_TYPE", "stream")
    with pytest.raises(SystemExit) as exited:
        script_parser("doc").parse_args([])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "error: argument --queue-type: 'stream' is not a queue type: quorum or classic (from "
        f"--queue-type or QUEUE_TYPE) (see {script_parser('doc').prog} --help)\n"
    )


def test_a_script_without_queues_of_its_own_takes_no_queue_type():
    args = script_parser("doc", queue_type=False).parse_args([])
    assert not hasattr(args, "queue_type") and not hasattr(args, "burst")


@pytest.mark.parametrize(
    ("count", "noun", "said"),
    [(1, "tasks", "1 task"), (0, "tasks", "0 tasks"), (2, "lines", "2 lines")],
)
def test_counts_are_said_in_the_singular_or_plural(count, noun, said):
    assert counted(count, noun) == said


def test_a_long_message_is_shortened_with_its_length():
    assert shortened("x" * 10, 20) == "x" * 10
    assert shortened("x" * 30, 20) == "x" * 20 + "... (30 characters)"


def test_a_broker_error_keeps_what_happened_and_the_advice_apart():
    error = BrokerError("the queue went", "; declare it again")
    assert (str(error), error.what, without_advice(error)) == (
        "the queue went; declare it again",
        "the queue went",
        "the queue went",
    )
