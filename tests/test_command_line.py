"""What every script promises on the command line: --help, and one-line errors, no traceback."""

import re
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pika
import pytest
from conftest import Probe
from rabbitmq_node import free_port
from script_runner import REPO, succeeded

from rabbit_queues.connection import how_to_start_rabbitmq

SCRIPTS = [
    "hello_world/new_task.py",
    "hello_world/worker.py",
    "work_queue/new_task.py",
    "work_queue/worker.py",
    "task_queue/new_task.py",
    "task_queue/worker.py",
    "task_queue/results.py",
    "work_queue/dead_letters.py",
    "work_queue/send_without_confirms.py",
    "queues.py",
    "demo.py",
]
# Arguments that make each script connect (and nothing else).
ARGUMENTS = {
    "new_task.py": "wordcount x",  # a task each producer takes (lesson 3 checks its type)
    "worker.py": "--burst",
    "results.py": "--burst",
    "demo.py": "work_queue",
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_explains_every_option(scripts, script):
    shown = scripts.run(f"python {script} --help")

    succeeded(shown)
    assert shown.stdout.startswith("usage: ")
    assert "--url URL" in shown.stdout
    assert "AMQP_URL" in shown.stdout
    assert "guest:***@localhost:5672" in shown.stdout  # the default, password hidden
    if script.endswith(("worker.py", "results.py")):
        assert "--burst" in shown.stdout
        assert "--verbose" in shown.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_broker_unreachable_is_one_line_naming_host_and_port(scripts, script):
    port = free_port()  # nothing listens there
    arguments = ARGUMENTS.get(script.rsplit("/", 1)[-1], "")
    failed = scripts.run(
        f"python {script} {arguments}",
        env={
            "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{port}/%2F",
            "MANAGEMENT_URL": f"http://127.0.0.1:{port}/",  # for queues.py
        },
    )

    assert failed.returncode == 1
    assert failed.stdout == ""
    assert failed.stderr == (
        f"error: cannot reach RabbitMQ at 127.0.0.1:{port} (connection refused): start the "
        f"broker ({how_to_start_rabbitmq()}) or check --url or the AMQP_URL environment "
        "variable\n"
    )


def test_wrong_password_is_reported_but_never_printed(scripts, broker):
    url = broker.url.replace("guest:guest@", "guest:not-the-Pa55word@")

    failed = scripts.run(f"python work_queue/new_task.py --url '{url}'")

    assert failed.returncode == 1
    assert failed.stderr.startswith("error: RabbitMQ at ")
    assert "refused the login of user 'guest': wrong user or password" in failed.stderr
    assert "not-the-Pa55word" not in failed.stderr + failed.stdout
    assert len(failed.stderr.splitlines()) == 1


def test_a_user_without_permissions_is_told_which_to_get(scripts, broker):
    user = "no-configure"
    for command in (
        f"rabbitmqctl add_user {user} its-Pa55word",
        f"rabbitmqctl set_permissions {user} '^$' '.*' '.*'",  # may not declare a queue
    ):
        succeeded(scripts.rabbitmqctl(command))
    url = broker.url.replace("guest:guest@", f"{user}:its-Pa55word@")
    try:
        failed = scripts.run(f"python work_queue/new_task.py --url '{url}' 'A task.'")
    finally:
        scripts.rabbitmqctl(f"rabbitmqctl delete_user {user}")

    assert failed.returncode == 1
    assert re.fullmatch(  # RabbitMQ 4 says "configure access", 3.10 "access"
        r"error: RabbitMQ refused: ACCESS_REFUSED - (configure )?access to queue 'task_queue' "
        rf"in vhost '/' refused for user '{user}'; the user needs configure, write and read "
        r"permissions on the vhost: rabbitmqctl set_permissions -p VHOST USER '\.\*' '\.\*' "
        r"'\.\*'\n",
        failed.stderr,
    ), failed.stderr


def test_unknown_vhost_is_one_line(scripts, broker):
    url = broker.url.rsplit("/", 1)[0] + "/no-such-vhost"

    failed = scripts.run("python work_queue/worker.py", env={"AMQP_URL": url})

    assert failed.returncode == 1
    assert re.fullmatch(
        r"error: RabbitMQ at [\w.]+:\d+ refused virtual host 'no-such-vhost' \(NOT_ALLOWED - "
        r"vhost no-such-vhost not found\): create it \(rabbitmqctl add_vhost no-such-vhost; "
        r"rabbitmqctl set_permissions -p no-such-vhost guest '\.\*' '\.\*' '\.\*'\) or check "
        r"--url or the AMQP_URL environment variable\n",
        failed.stderr,
    ), failed.stderr


@pytest.fixture
def limited_vhost(scripts, broker):
    """A vhost of its own, guest allowed in it, removed afterwards; its URL."""
    made = scripts.rabbitmqctl(
        "rabbitmqctl add_vhost limited && "
        "rabbitmqctl set_permissions -p limited guest '.*' '.*' '.*'"
    )
    succeeded(made)
    yield broker.url.rsplit("/", 1)[0] + "/limited"
    scripts.rabbitmqctl("rabbitmqctl delete_vhost limited")


def test_a_vhost_connection_limit_is_said_in_rabbitmqs_words(scripts, limited_vhost):
    """It was 'create it or grant the user access to it', which is no help with a limit."""
    limit = scripts.rabbitmqctl(
        """rabbitmqctl set_vhost_limits -p limited '{"max-connections": 0}'"""
    )
    succeeded(limit)

    for command in ("python work_queue/worker.py", 'python work_queue/new_task.py "A task."'):
        failed = scripts.run(command, env={"AMQP_URL": limited_vhost})

        assert failed.returncode == 1
        assert re.fullmatch(
            r"error: RabbitMQ at [\w.]+:\d+ refused virtual host 'limited' \(NOT_ALLOWED - access "
            r"to vhost 'limited' refused for user 'guest': connection limit \(0\) is reached\)\n",
            failed.stderr,
        ), failed.stderr


def test_a_vhost_queue_limit_is_said_in_rabbitmqs_words_and_nothing_is_to_delete(
    scripts, limited_vhost
):
    """It advised deleting task_queue, holding the tasks just sent, for a task_queue.dlq the
    limit kept from being made; and gave blank names for the task producer."""
    succeeded(
        scripts.rabbitmqctl("""rabbitmqctl set_vhost_limits -p limited '{"max-queues": 1}'""")
    )
    succeeded(
        scripts.run('python work_queue/new_task.py "A task."', env={"AMQP_URL": limited_vhost})
    )

    for command, queue in (
        ("python work_queue/worker.py --burst", "task_queue.dlq"),
        ("python task_queue/new_task.py add 1 2", "tasks"),
    ):
        failed = scripts.run(command, env={"AMQP_URL": limited_vhost})

        assert failed.returncode == 1
        assert failed.stderr == (
            f"error: RabbitMQ refused: PRECONDITION_FAILED - cannot declare queue '{queue}': "
            "queue limit in vhost 'limited' (1) is reached\n"
        )
    waiting = Probe(limited_vhost)
    try:
        assert waiting.depth("task_queue") == 1  # the task is still there
    finally:
        waiting.close()


def test_unresolvable_host_is_one_line(scripts):
    failed = scripts.run("python work_queue/new_task.py --url amqp://no-such-host.invalid/")

    assert failed.returncode == 1
    assert failed.stderr == (
        "error: cannot resolve host 'no-such-host.invalid'; check --url or the AMQP_URL "
        "environment variable\n"
    )


def test_malformed_url_is_one_line_without_password(scripts):
    failed = scripts.run("python work_queue/new_task.py --url 'amqp://guest:s3cret@host/?bogus=1'")

    assert failed.returncode == 1
    assert failed.stderr == (
        "error: invalid broker URL amqp://guest:***@host/?bogus=1: Unknown URL parameter: "
        "'bogus' (expected amqp://user:password@host:port/vhost, or amqps:// for TLS); check "
        "--url or the AMQP_URL environment variable\n"
    )


@pytest.mark.parametrize(
    "password", ["hunter2/secret", "hunter2#secret", "hunter2?secret", "p@ss:w/rd#1%?"]
)
def test_a_password_that_breaks_the_url_is_never_printed(scripts, password):
    failed = scripts.run(f"python work_queue/new_task.py --url 'amqp://learner:{password}@host/'")

    assert failed.returncode == 1
    assert failed.stderr == (
        "error: invalid broker URL amqp://learner:***@host/: its user or password holds '/', "
        "'#' or '?', which must be percent-encoded (%2F, %23, %3F); check --url or the "
        "AMQP_URL environment variable\n"
    )
    for piece in ("hunter2", "secret", "ss:w", "rd#1"):
        assert piece not in failed.stdout + failed.stderr


NOT_AMQP = "not an amqp:// or amqps:// URL"


@pytest.mark.parametrize(
    ("url", "shown", "reason"),
    [
        ("localhost", "localhost", NOT_AMQP),
        # The management UI's address, pasted by mistake: said at once, not after a timeout.
        ("http://guest:s3cret@localhost:15672/", "http://guest:***@localhost:15672/", NOT_AMQP),
        # No scheme: pika would call the user name the scheme; the password is still hidden.
        ("learner:s3cret@localhost:5672", "learner:***@localhost:5672", NOT_AMQP),
        ("amqp://@", "amqp://@", "not a URL"),  # pika fails on it with a TypeError
        (  # pika's ast.literal_eval: 'malformed node or string on line 1: <ast.Name object...>'
            "amqps://guest:s3cret@localhost/?ssl_options=zzz",
            "amqps://guest:***@localhost/?***",
            "ssl_options, client_properties and tcp_options take a Python literal, such as "
            "ssl_options={'ca_certs':'ca.pem'}",
        ),
        (  # {'ca_certs':'/no/ca.pem','certfile':'c.pem','password':'s3cret'}: the key's password
            "amqps://localhost/?ssl_options=%7B%27ca_certs%27%3A%27%2Fno%2Fca.pem%27%2C"
            "%27certfile%27%3A%27c.pem%27%2C%27password%27%3A%27s3cret%27%7D",
            "amqps://localhost/?***",
            "a file its ssl_options names: No such file or directory",
        ),
    ],
)
def test_a_url_that_cannot_be_used_is_one_line_that_shows_the_expected_form(
    scripts, url, shown, reason
):
    failed = scripts.run(f"python work_queue/new_task.py --url '{url}'")

    assert failed.returncode == 1
    assert failed.stderr == (
        f"error: invalid broker URL {shown}: {reason} (expected amqp://user:password@host:port/"
        "vhost, or amqps:// for TLS); check --url or the AMQP_URL environment variable\n"
    )
    assert "s3cret" not in failed.stdout + failed.stderr


def test_amqps_against_a_plain_port_is_one_line(scripts, broker):
    url = broker.url.replace("amqp://", "amqps://")

    failed = scripts.run(f"python work_queue/new_task.py --url '{url}'")

    assert failed.returncode == 1
    assert re.fullmatch(
        r"error: TLS with RabbitMQ at 127\.0\.0\.1:\d+ failed: that port does not speak TLS \(it "
        r"may be a plain amqp:// port; amqps:// is usually on 5671\); check --url or the "
        r"AMQP_URL environment variable\n",
        failed.stderr,
    ), failed.stderr


@pytest.mark.timeout(30)
def test_a_listener_that_is_not_rabbitmq_is_one_line(scripts):
    """Something that accepts the connection and never answers (a wrong port)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        url = f"amqp://guest:guest@127.0.0.1:{port}/%2F?stack_timeout=2"

        failed = scripts.run(f"python work_queue/new_task.py --url '{url}' x")

    assert failed.returncode == 1
    assert failed.stderr == (
        f"error: nothing speaking AMQP answered at 127.0.0.1:{port} within 2 s (is that "
        "RabbitMQ's AMQP port, 5672 by default?); check --url or the AMQP_URL environment "
        "variable\n"
    )


def test_unbalanced_quote_on_stdin_stops_with_the_count_sent(scripts, probe):
    failed = scripts.run("printf 'add 1 2\\nwordcount \"oops\\n' | python task_queue/new_task.py -")

    assert failed.returncode == 1
    assert failed.stderr == (
        "error: No closing quotation (1 task was sent and confirmed before that)\n"
    )
    assert probe.depth("tasks") == 1


@pytest.mark.parametrize("folder", ["hello_world", "work_queue", "task_queue"])
@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])  # strict UTF-8 on stdin, or not
def test_a_line_on_stdin_that_is_not_utf8_stops_with_the_count_sent(scripts, probe, folder, locale):
    failed = scripts.run(
        f"printf 'add 1 2\\n\\xff\\xfe add\\nadd 3 4\\n' | python {folder}/new_task.py -",
        env={"LC_ALL": locale, "PYTHONUTF8": "0"},
    )

    noun = "message was" if folder == "hello_world" else "task was"
    assert (failed.returncode, failed.stderr) == (
        1,
        f"error: a line is not UTF-8 text: b'\\xff\\xfe add' (1 {noun} sent and confirmed "
        "before that)\n",
    )
    queue = {"hello_world": "hello", "work_queue": "task_queue", "task_queue": "tasks"}[folder]
    assert probe.depth(queue) == 1


def test_amqps_verifies_the_broker_certificate_and_host_name(scripts, broker, probe):
    if broker.tls_port is None:
        pytest.skip(f"only the throwaway local node has a TLS listener, not {broker.kind}")
    url = f"amqps://guest:guest@localhost:{broker.tls_port}/%2F"
    command = f"python work_queue/new_task.py --url '{url}' 'Over TLS.'"
    trust_test_ca = {"SSL_CERT_FILE": str(broker.ca_file)}

    trusted = succeeded(scripts.run(command, env=trust_test_ca))
    assert trusted.stdout == " [x] Sent 'Over TLS.'\n"
    assert probe.depth("task_queue") == 1

    scripts.env.pop("SSL_CERT_FILE", None)
    untrusted = scripts.run(command)  # the system's CAs do not know the test CA
    assert untrusted.returncode == 1
    assert untrusted.stderr == (
        f"error: TLS with RabbitMQ at localhost:{broker.tls_port} failed: certificate verify "
        "failed: self-signed certificate in certificate chain\n"
    )

    wrong_name = scripts.run(command.replace("@localhost:", "@127.0.0.1:"), env=trust_test_ca)
    assert wrong_name.returncode == 1
    assert wrong_name.stderr == (
        f"error: TLS with RabbitMQ at 127.0.0.1:{broker.tls_port} failed: certificate verify "
        "failed: IP address mismatch, certificate is not valid for '127.0.0.1'.\n"
    )
    assert probe.depth("task_queue") == 1


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_mistake_on_the_command_line_is_one_line(scripts, script):
    arguments = ARGUMENTS.get(script.rsplit("/", 1)[-1], "")
    wrong = scripts.run(f"python {script} {arguments} --bogus")

    assert wrong.returncode == 2
    assert wrong.stdout == ""
    name = script.rsplit("/", 1)[-1]
    assert wrong.stderr == f"error: unrecognized arguments: --bogus (see {name} --help)\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("script", SCRIPTS)
def test_killed_while_it_connects_it_says_so(scripts, script):
    """From run_script()'s first line on, kill (SIGTERM) stops a script as Ctrl+C does: here
    while it waits for a listener that took its connection and says nothing."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        started = scripts.start(
            f"python {script} {ARGUMENTS.get(script.rsplit('/', 1)[-1], '')}",
            env={
                "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{port}/%2F",
                "MANAGEMENT_URL": f"http://127.0.0.1:{port}/",  # for queues.py
            },
        )
        silent.settimeout(30)
        connection, _address = silent.accept()  # the script is inside pika, connecting
        with connection:
            started.signal(signal.SIGTERM)

            assert started.wait() == 1
    assert started.lines == [" [*] Interrupted"]


@pytest.mark.parametrize(
    ("installed", "advice"),
    [
        ((), "docker compose up -d"),  # nothing installed: the README's container
        (("rabbitmq-server",), "systemctl start rabbitmq-server, as root"),  # Debian's package
        (("rabbitmq-server", "brew"), "brew services start rabbitmq"),  # Homebrew's
    ],
)
def test_a_refused_connection_says_how_to_start_rabbitmq_as_it_is_installed(
    tmp_path, installed, advice
):
    for program in installed:
        (tmp_path / program).write_text("#!/bin/sh\n")
        (tmp_path / program).chmod(0o755)

    assert how_to_start_rabbitmq(path=str(tmp_path)) == advice


def test_a_password_belongs_in_amqp_url_not_on_the_command_line(scripts, broker):
    """What docs/command-line.md says: `--url` is in the process list for every user of the
    machine (`ps -ww -o args`); AMQP_URL is in the environment, which only the process's user and
    root may read."""
    password = pika.URLParameters(broker.url).credentials.password
    from_env = scripts.start_worker("python work_queue/worker.py")
    given = scripts.start_worker(f"python work_queue/worker.py --url {broker.url}")
    try:
        for worker, in_ps in ((from_env, False), (given, True)):
            proc = Path(f"/proc/{worker.process.pid}")
            listed = subprocess.run(
                ["ps", "-ww", "-o", "args=", "-p", str(worker.process.pid)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert (f":{password}@" in listed) is in_ps, listed
            assert stat.S_IMODE((proc / "environ").stat().st_mode) == 0o400
    finally:
        for worker in (from_env, given):
            worker.signal(signal.SIGTERM)
            assert worker.wait() == 0, worker.output
    docs = (REPO / "docs" / "command-line.md").read_text()
    assert "is in the process list (`ps -ww -o args`)" in docs
    assert "Put a URL\n  with a password" in docs
