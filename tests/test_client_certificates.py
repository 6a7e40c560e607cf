"""A broker that checks client certificates (ssl_options.verify = verify_peer): each way ours
can fail is one line naming TLS and the cause, and never "start the broker"; an encrypted
client key without its password, or with a wrong one, is one line too, and never a prompt."""

import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator

import pytest
from rabbitmq_node import LocalNode
from script_runner import REPO

from rabbit_queues.connection import SBIN, TLS_ALERTS

# Long (a node of its own that checks client certificates): python -m pytest -m long.
pytestmark = [pytest.mark.long, pytest.mark.broker]

CHECKS_CLIENTS = "ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n"
OPENSSL_CA = """[ca]
default_ca = test
[test]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
[any]
commonName = supplied
"""


def openssl(directory, command: str) -> None:
    subprocess.run(command.split(), cwd=directory, check=True, capture_output=True, timeout=60)


def make_client_files(node: LocalNode) -> None:
    """Signed by the node's CA: client.pem; by another CA: foreign.pem; by the node's CA but
    valid only in 2020: expired.pem. All for client.key; encrypted.key is it encrypted."""
    directory = node.directory
    (directory / "ca.cnf").write_text(OPENSSL_CA)
    (directory / "index.txt").write_text("")
    (directory / "serial").write_text("1000\n")
    for command in (
        "openssl req -newkey rsa:2048 -nodes -subj /CN=learner -keyout client.key -out client.csr",
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-out client.pem",
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=another-CA "
        "-keyout another.key -out another.pem",
        "openssl x509 -req -in client.csr -CA another.pem -CAkey another.key -CAcreateserial "
        "-days 2 -out foreign.pem",
        "openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in client.csr "
        "-out expired.pem -startdate 20200101000000Z -enddate 20200102000000Z -notext",
        "openssl rsa -in client.key -aes256 -passout pass:s3cret -out encrypted.key",
    ):
        openssl(directory, command)


@pytest.fixture(scope="module")
def checking_node() -> Iterator[LocalNode]:
    path = f"{os.environ.get('PATH', '')}:{SBIN}"
    if shutil.which("rabbitmq-server", path=path) is None or shutil.which("openssl") is None:
        pytest.skip("needs a local rabbitmq-server and openssl: it starts a node of its own")
    node = LocalNode(extra_config=CHECKS_CLIENTS)
    try:
        make_client_files(node)
        node.start()
        yield node
    finally:
        node.remove()


def send(node: LocalNode, **ssl_options: str) -> subprocess.CompletedProcess[str]:
    """work_queue/new_task.py over TLS with these ssl_options (paths in the node's directory),
    as a learner would run it: no terminal to type a password on."""
    options = {"ca_certs": "ca.pem", **ssl_options}
    options = {k: str(node.directory / v) if k != "password" else v for k, v in options.items()}
    query = urllib.parse.quote(repr(options))
    url = f"amqps://guest:guest@localhost:{node.tls_port}/%2F?ssl_options={query}"
    return subprocess.run(
        ["python", "work_queue/new_task.py", "--queue-type", "classic", "Over TLS."],
        cwd=REPO,
        env={**os.environ, "AMQP_URL": url},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def fails_with(done: subprocess.CompletedProcess[str], *reasons: str) -> None:
    assert (done.returncode, done.stdout) == (1, ""), done
    assert done.stderr.count("\n") == 1, done.stderr
    assert any(reason in done.stderr for reason in reasons), done.stderr
    for wrong in ("start the broker", "Error(", "Traceback", "s3cret", "PEM pass phrase"):
        assert wrong not in done.stderr


def test_a_trusted_client_certificate_is_let_in(checking_node):
    done = send(checking_node, certfile="client.pem", keyfile="client.key")
    assert (done.returncode, done.stdout, done.stderr) == (0, " [x] Sent 'Over TLS.'\n", "")


@pytest.mark.parametrize(
    ("certificate", "reason"),
    [
        (
            None,
            "TLS with RabbitMQ at localhost:{port} failed: RabbitMQ asks for a client "
            "certificate, and the URL gives none ('certfile' and 'keyfile' in ssl_options)",
        ),
        (
            "foreign.pem",
            "TLS with RabbitMQ at localhost:{port} failed: RabbitMQ does not trust our client "
            "certificate (its CA is not one in RabbitMQ's ssl_options.cacertfile)",
        ),
        (
            "expired.pem",
            "TLS with RabbitMQ at localhost:{port} failed: RabbitMQ says our client "
            "certificate has expired (or is not valid yet)",
        ),
    ],
    ids=["none", "another CA", "expired"],
)
def test_a_refused_client_certificate_is_one_line_naming_tls_and_why(
    checking_node, certificate, reason
):
    """RabbitMQ's alert says why; but it closes the socket at once, which may lose the alert
    (seen here: then OpenSSL reads only an end of file, and the line says what it may be)."""
    files = {"certfile": certificate, "keyfile": "client.key"} if certificate else {}
    where = f"TLS with RabbitMQ at localhost:{checking_node.tls_port} failed: "
    alert_lost = where + TLS_ALERTS["EOF"]
    fails_with(send(checking_node, **files), reason.format(port=checking_node.tls_port), alert_lost)


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ({}, "its client key (keyfile) is encrypted, and ssl_options give no 'password'"),
        (
            {"password": "wrong"},
            "the 'password' in ssl_options does not decrypt the client key (keyfile)",
        ),
    ],
    ids=["missing", "wrong"],
)
def test_an_encrypted_client_key_needs_its_password_and_never_prompts(
    checking_node, password, reason
):
    files = {"certfile": "client.pem", "keyfile": "encrypted.key"}
    fails_with(send(checking_node, **files, **password), reason)
    right = send(checking_node, **files, password="s3cret")
    assert (right.returncode, right.stderr) == (0, ""), right
