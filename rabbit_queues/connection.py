"""Where the broker is, and how to connect to it with an error a learner can act on."""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import (
    AMQPConnectorException,
    AMQPConnectorStackTimeout,
)


class BrokerError(Exception):
    """A problem with the broker, explained in one line; scripts print it instead of a traceback."""


# "You may not" (a wrong password or vhost), the same answer on every node of a cluster; any
# other failure says "this node cannot be reached now", and another node may answer.
REFUSALS = (
    pika.exceptions.ProbableAuthenticationError,
    pika.exceptions.ProbableAccessDeniedError,
    pika.exceptions.AuthenticationError,
)


DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
URL_HINT = "check --url or the AMQP_URL environment variable"
EXPECTED = "expected amqp://user:password@host:port/vhost, or amqps:// for TLS"


def broker_url(cli_url: str | list[str] | None = None) -> str:
    """The broker address: ``--url`` if given, else ``AMQP_URL``, else the local default.

    A cluster's nodes are listed with commas (``--url`` repeated gives the same): the
    scripts connect to the first node that answers, and to another when theirs goes away.
    """
    if isinstance(cli_url, list):
        cli_url = ",".join(cli_url)
    return cli_url or os.environ.get("AMQP_URL") or DEFAULT_URL


def node_urls(url: str) -> list[str]:
    """The nodes an address lists: 'amqp://a:5672,amqp://b:5672' names two."""
    return [node.strip() for node in url.split(",") if node.strip()] or [url]


SSL_OPTIONS = re.compile(r"(ssl_options=)([^&]*)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its password(s) replaced by ``***``, safe to print or log."""
    url = SSL_OPTIONS.sub(_hide_key_password, url)
    return ",".join(_redact_one(node) for node in node_urls(url))


def _hide_key_password(option: re.Match[str]) -> str:
    """pika's ?ssl_options={...} may hold the client key's 'password': then all of it is
    hidden, up to the next '&' (past any comma: a list of nodes would split it there)."""
    value = option[2]
    return option[1] + ("***" if "password" in unquote(value).lower() else value)


def _split_userinfo(url: str) -> tuple[str, str, str]:
    """(scheme and '://', user and password, host and the rest) of ``url``; the middle is ''
    if it has none. Split at '://' and at the last '@', not parsed as a URL: a password holding
    an unencoded '/', '#' or '?' would end a parsed one early, and show the rest. Without a
    '://' (user:password@host), all before the last '@' is the user and password."""
    scheme, separator, rest = url.partition("://") if "://" in url else ("", "", url)
    userinfo, at, host_and_path = rest.rpartition("@")
    return scheme + separator, userinfo if at else "", host_and_path if at else rest


def _redact_one(url: str) -> str:
    scheme, userinfo, host_and_path = _split_userinfo(url)
    if ":" not in userinfo:
        return url
    return f"{scheme}{userinfo.split(':', 1)[0]}:***@{host_and_path}"


def url_parameters(url: str) -> pika.URLParameters:
    """pika's parameters for ``url``; BrokerError (password hidden) if it is malformed."""
    scheme, userinfo, _ = _split_userinfo(url)
    if scheme.lower() not in ("amqp://", "amqps://"):
        raise BrokerError(
            f"invalid broker URL {redact_url(url)}: not an amqp:// or amqps:// URL ({EXPECTED}); "
            f"{URL_HINT}"
        )
    if any(character in userinfo for character in "/#?"):
        # pika would read part of the password as the port, and say so, password and all.
        raise BrokerError(
            f"invalid broker URL {redact_url(url)}: its user or password holds '/', '#' or "
            f"'?', which must be percent-encoded (%2F, %23, %3F); {URL_HINT}"
        )
    try:
        return pika.URLParameters(url)
    except Exception as error:
        raise BrokerError(
            f"invalid broker URL {redact_url(url)}: {_why_pika_refused(error)} ({EXPECTED}); "
            f"{URL_HINT}"
        ) from None


def _why_pika_refused(error: Exception) -> str:
    if isinstance(error, SyntaxError) or str(error).startswith("malformed node"):
        # pika reads these three with ast.literal_eval, whose messages say nothing useful.
        return (
            "ssl_options, client_properties and tcp_options take a Python literal, such as "
            "ssl_options={'ca_certs':'ca.pem'}"
        )
    if isinstance(error, OSError):  # a file ssl_options names
        return f"a file its ssl_options names: {error.strerror}"
    return str(error) if isinstance(error, ValueError) else "not a URL"  # an IndexError...


def open_connection(url: str) -> pika.BlockingConnection:
    """Connect to ``url`` (``amqp://`` or ``amqps://``, or several of them: the first node
    that answers); raise BrokerError on any failure."""
    return connect_to_a_node(url)[0]


def connect_to_a_node(url: str, after: str | None = None) -> tuple[pika.BlockingConnection, str]:
    """Connect to the first node of ``url`` that answers, starting with the one listed
    ``after`` the given node (so a failover tries the others first); return the connection
    and that node's URL. Raise BrokerError, with every node's reason, if none answers.

    ``amqps://`` verifies the broker's certificate and host name against the system's trusted
    CAs (or the bundle named by ``SSL_CERT_FILE``), as a browser would.
    """
    nodes = node_urls(url)
    if after in nodes:
        start = nodes.index(after) + 1
        nodes = nodes[start:] + nodes[:start]
    failures: list[BrokerError] = []
    for node in nodes:
        parameters = url_parameters(node)
        try:
            return pika.BlockingConnection(parameters), node
        except (pika.exceptions.AMQPConnectionError, OSError, AMQPConnectorException) as error:
            failure = explain_connection_error(parameters, error)
            if isinstance(error, REFUSALS) or len(nodes) == 1:
                raise failure from None
            failures.append(failure)
    reasons = "; ".join(without_advice(failure) for failure in failures)
    raise BrokerError(f"no node of the cluster answers ({reasons}); {URL_HINT}")


BLOCKED = (
    " [!] RabbitMQ is blocking publishers ({reason}: a resource alarm, see `rabbitmqctl "
    "status`); waiting until it lifts, Ctrl+C to stop"
)
UNBLOCKED = " [*] RabbitMQ accepts publishers again"
BLOCKED_TOO_LONG = "RabbitMQ blocked publishers longer than the URL's blocked_connection_timeout"


def report_blocking(connection: Any, blocked: Callable[[bool], None] = lambda _: None) -> None:
    """Say so when RabbitMQ blocks this connection's publishes, and when it lets them go.

    Under a resource alarm (memory or disk running low) RabbitMQ stops reading from every
    connection that publishes: a publish then waits, silently, until the alarm lifts. Give
    ``?blocked_connection_timeout=SECONDS`` in the URL to give up after that long instead.
    ``connection`` is pika's asynchronous connection; ``blocked`` is told each change.
    """

    # On stderr: in a worker these may run on its pump thread (staying_up.py) while the
    # handler prints to stdout, and a print is two writes that a line of stdout could split.
    def on_blocked(_connection: object, frame: Any) -> None:
        blocked(True)
        print(BLOCKED.format(reason=frame.method.reason), file=sys.stderr)

    def on_unblocked(_connection: object, _frame: object) -> None:
        blocked(False)
        print(UNBLOCKED, file=sys.stderr)

    connection.add_on_connection_blocked_callback(on_blocked)
    connection.add_on_connection_unblocked_callback(on_unblocked)


def without_advice(error: BaseException) -> str:
    """'cannot reach RabbitMQ at host:5672 (connection refused)', without what to do about it."""
    return str(error).split(": start the broker")[0] or type(error).__name__


def explain_connection_error(
    parameters: pika.ConnectionParameters, error: BaseException
) -> BrokerError:
    """Why a connection could not be opened, in one line a learner can act on."""
    where = f"{parameters.host}:{parameters.port}"
    if isinstance(error, pika.exceptions.ProbableAuthenticationError):
        user = parameters.credentials.username
        return BrokerError(
            f"RabbitMQ at {where} refused the login of user {user!r}: wrong user or password; "
            f"{URL_HINT}"
        )
    if isinstance(error, pika.exceptions.ProbableAccessDeniedError):
        return _access_denied(where, parameters, error)
    if isinstance(error, socket.gaierror):
        return BrokerError(f"cannot resolve host {parameters.host!r}; {URL_HINT}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return BrokerError(
            f"TLS with RabbitMQ at {where} failed: certificate verify failed: "
            f"{error.verify_message}"
        )
    if isinstance(error, ssl.SSLError) and error.reason == "WRONG_VERSION_NUMBER":
        return BrokerError(
            f"TLS with RabbitMQ at {where} failed: that port does not speak TLS (it may be a "
            f"plain amqp:// port; amqps:// is usually on 5671); {URL_HINT}"
        )
    if isinstance(error, ssl.SSLError):
        return BrokerError(f"TLS with RabbitMQ at {where} failed: {error.reason or error}")
    if isinstance(error, AMQPConnectorStackTimeout):  # a listener that is not RabbitMQ
        return BrokerError(
            f"nothing speaking AMQP answered at {where} within {parameters.stack_timeout:g} s "
            f"(is that RabbitMQ's AMQP port, 5672 by default?); {URL_HINT}"
        )
    return BrokerError(
        f"cannot reach RabbitMQ at {where} ({_root_cause(error)}): start the broker "
        f"({how_to_start_rabbitmq()}) or {URL_HINT}"
    )


SBIN = "/usr/local/sbin:/usr/sbin:/sbin"  # where packages put rabbitmq-server: not on users' PATH


def how_to_start_rabbitmq(path: str | None = None) -> str:
    """How RabbitMQ starts on this machine: the service of an installed package (Debian's,
    Homebrew's), else the README's Docker container. ``path``: where to look (PATH and SBIN)."""
    path = f"{os.environ.get('PATH', '')}:{SBIN}" if path is None else path
    if shutil.which("rabbitmq-server", path=path) is None:
        return "docker compose up -d"
    if shutil.which("brew", path=path):
        return "brew services start rabbitmq"
    return "systemctl start rabbitmq-server, as root"


def _access_denied(
    where: str, parameters: pika.ConnectionParameters, error: BaseException
) -> BrokerError:
    """RabbitMQ's own reason for refusing the virtual host (pika keeps it only inside its
    message: "ConnectionClosedByBroker: (530) 'NOT_ALLOWED - vhost x not found'"), and what
    to do about the two causes a learner can fix: a missing vhost, or missing permissions.
    Any other reason (a vhost's connection limit...) is RabbitMQ's alone."""
    vhost, user = parameters.virtual_host, parameters.credentials.username
    said = re.search(r"\(\d+\) (['\"])(.+)\1$", str(error))
    reason = said[2] if said else "NOT_ALLOWED"
    if "not found" in reason:
        advice = (
            f": create it (rabbitmqctl add_vhost {vhost}; rabbitmqctl set_permissions -p "
            f"{vhost} {user} '.*' '.*' '.*') or {URL_HINT}"
        )
    elif reason.endswith(f"refused for user '{user}'"):
        advice = f": rabbitmqctl set_permissions -p {vhost} {user} '.*' '.*' '.*'"
    else:
        advice = ""
    return BrokerError(f"RabbitMQ at {where} refused virtual host {vhost!r} ({reason}){advice}")


def _root_cause(error: BaseException) -> str:
    """The innermost reason pika wrapped, e.g. 'Connection refused'."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    inner = getattr(error, "exception", None)  # pika's AMQPConnectorSocketConnectError
    if isinstance(inner, BaseException):
        error = inner
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__
