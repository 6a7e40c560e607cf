"""Where the broker is, connecting to the first node of a cluster that answers (the one place
that fails over), and every reason it could not in one line, passwords hidden."""

import os
import re
import shutil
import socket
import ssl
import sys
import threading
from typing import Any

import pika
import pika.exceptions as errors
from pika.adapters.utils.connection_workflow import AMQPConnectorException as ConnectorError
from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout


class BrokerError(Exception):
    """A problem with the broker in one line: scripts print it instead of a traceback."""


class Lost(BrokerError):
    """Our connection, channel or subscription went away, or a queue we send to: what RabbitMQ
    had delivered to us went back to its queue. A worker starts again from the top."""


class Refused(Lost):
    """RabbitMQ did not take a message we published (a nack): not the message's fault, so a
    worker starts again (a dead-letter copy refused: that message is dropped, loudly)."""


# "You may not" (a wrong password or vhost) is every node's answer; another failure, this node's.
REFUSALS = (
    errors.ProbableAuthenticationError,
    errors.ProbableAccessDeniedError,
    errors.AuthenticationError,
)
DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
URL_HINT = "check --url or the AMQP_URL environment variable"
EXPECTED = "expected amqp://user:password@host:port/vhost, or amqps:// for TLS"
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"  # where packages put rabbitmq-server: not on users' PATH


def broker_url(cli_url: str | list[str] | None = None) -> str:
    """``--url`` (repeated for a cluster's nodes), else ``AMQP_URL`` (nodes separated by
    commas), else the local default."""
    cli_url = ",".join(cli_url) if isinstance(cli_url, list) else cli_url
    return cli_url or os.environ.get("AMQP_URL") or DEFAULT_URL


def node_urls(url: str) -> list[str]:
    return [node.strip() for node in url.split(",") if node.strip()] or [url]


def redact_url(url: str) -> str:
    """``url`` with its passwords as ``***``; with pika's ssl_options (which may hold the client
    key's password), all after its '?' too."""
    if "ssl_options" in url.lower():
        url = url.split("?", 1)[0] + "?***"
    return ",".join(_redact_one(node) for node in node_urls(url))


def _split_userinfo(url: str) -> tuple[str, str, str]:
    """(scheme://, user:password, the rest), split at '://' and the last '@', not parsed: a
    password holding an unencoded '/', '#' or '?' would end a parsed URL early."""
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
    invalid = f"invalid broker URL {redact_url(url)}"
    if scheme.lower() not in ("amqp://", "amqps://"):
        raise BrokerError(f"{invalid}: not an amqp:// or amqps:// URL ({EXPECTED}); {URL_HINT}")
    if any(character in userinfo for character in "/#?"):  # pika would print the password
        raise BrokerError(
            f"{invalid}: its user or password holds '/', '#' or '?', which must be "
            f"percent-encoded (%2F, %23, %3F); {URL_HINT}"
        )
    try:
        return pika.URLParameters(url)
    except Exception as error:
        if isinstance(error, SyntaxError) or str(error).startswith("malformed node"):
            why = (  # pika's ast.literal_eval says nothing useful
                "ssl_options, client_properties and tcp_options take a Python literal, such "
                "as ssl_options={'ca_certs':'ca.pem'}"
            )
        elif isinstance(error, OSError):
            why = f"a file its ssl_options names: {error.strerror}"
        else:
            why = str(error) if isinstance(error, ValueError) else "not a URL"
        raise BrokerError(f"{invalid}: {why} ({EXPECTED}); {URL_HINT}") from None


def connect(url: str, after: str | None = None) -> tuple[pika.BlockingConnection, str]:
    """The first node of ``url`` that answers, starting after the node ``after`` (a failover
    tries the others first), and its URL; BrokerError with every node's reason if none does.
    ``amqps://`` checks the broker's certificate and name against the system's CAs (or
    ``SSL_CERT_FILE``'s), as a browser does."""
    nodes = node_urls(url)
    if after in nodes:
        nodes = nodes[nodes.index(after) + 1 :] + nodes[: nodes.index(after) + 1]
    failures = []
    for node in nodes:
        parameters = url_parameters(node)
        try:
            return pika.BlockingConnection(parameters), node
        except (errors.AMQPConnectionError, OSError, ConnectorError) as error:
            failure = explain_connection_error(parameters, error)
            if isinstance(error, REFUSALS) or len(nodes) == 1:
                raise failure from None
            failures.append(without_advice(failure))
    raise BrokerError(f"no node of the cluster answers ({'; '.join(failures)}); {URL_HINT}")


BLOCKED = (
    " [!] RabbitMQ is blocking publishers ({reason}: a resource alarm, see `rabbitmqctl "
    "status`); waiting until it lifts, Ctrl+C to stop"
)
BLOCKED_TOO_LONG = "RabbitMQ blocked publishers longer than the URL's blocked_connection_timeout"


def report_blocking(connection: Any) -> threading.Event:
    """Say when a resource alarm (memory or disk low) makes RabbitMQ stop reading what
    ``connection`` (pika's asynchronous one) publishes, and when it reads again; the Event
    returned is set meanwhile. (``?blocked_connection_timeout=SECONDS`` in the URL gives up
    after that long.) On stderr: in a worker this may run on its pump thread while the handler
    prints."""
    blocked = threading.Event()

    def on_blocked(_connection: object, frame: Any) -> None:
        blocked.set()
        print(BLOCKED.format(reason=frame.method.reason), file=sys.stderr)

    def on_unblocked(_connection: object, _frame: object) -> None:
        blocked.clear()
        print(" [*] RabbitMQ accepts publishers again", file=sys.stderr)

    connection.add_on_connection_blocked_callback(on_blocked)
    connection.add_on_connection_unblocked_callback(on_unblocked)
    return blocked


def what_was_lost(error: BaseException | None) -> str:
    """'RabbitMQ closed the channel (its reason)', 'Lost the connection to RabbitMQ (...)'..."""
    if isinstance(error, Lost):
        return str(error)
    if isinstance(error, errors.ChannelClosedByBroker):
        return f"RabbitMQ closed the channel ({error.reply_text})"
    if isinstance(error, errors.ConnectionClosedByBroker):
        return f"RabbitMQ closed the connection ({error.reply_code} {error.reply_text})"
    return "Lost the connection to RabbitMQ" + (f" ({type(error).__name__})" if error else "")


def without_advice(error: BaseException) -> str:
    """'cannot reach RabbitMQ at host:5672 (connection refused)', without what to do about it."""
    return str(error).split(": start the broker")[0] or type(error).__name__


def explain_connection_error(
    parameters: pika.ConnectionParameters, error: BaseException
) -> BrokerError:
    """Why a connection could not be opened, as a BrokerError a learner can act on."""
    where, user = f"{parameters.host}:{parameters.port}", parameters.credentials.username
    tls = f"TLS with RabbitMQ at {where} failed"
    if isinstance(error, errors.ProbableAuthenticationError):
        why = f"RabbitMQ at {where} refused the login of user {user!r}: wrong user or password"
        return BrokerError(f"{why}; {URL_HINT}")
    if isinstance(error, errors.ProbableAccessDeniedError):
        return BrokerError(_access_denied(where, parameters.virtual_host, user, str(error)))
    if isinstance(error, socket.gaierror):
        return BrokerError(f"cannot resolve host {parameters.host!r}; {URL_HINT}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return BrokerError(f"{tls}: certificate verify failed: {error.verify_message}")
    if isinstance(error, ssl.SSLError) and error.reason == "WRONG_VERSION_NUMBER":
        return BrokerError(
            f"{tls}: that port does not speak TLS (it may be a plain amqp:// port; amqps:// is "
            f"usually on 5671); {URL_HINT}"
        )
    if isinstance(error, ssl.SSLError):
        return BrokerError(f"{tls}: {error.reason or error}")
    if isinstance(error, AMQPConnectorStackTimeout):  # a listener that is not RabbitMQ
        return BrokerError(
            f"nothing speaking AMQP answered at {where} within {parameters.stack_timeout:g} s "
            f"(is that RabbitMQ's AMQP port, 5672 by default?); {URL_HINT}"
        )
    return BrokerError(
        f"cannot reach RabbitMQ at {where} ({_root_cause(error)}): start the broker "
        f"({how_to_start_rabbitmq()}) or {URL_HINT}"
    )


def how_to_start_rabbitmq(path: str | None = None) -> str:
    """The installed package's service (Debian's, Homebrew's), else the README's container."""
    path = f"{os.environ.get('PATH', '')}:{SBIN}" if path is None else path
    if shutil.which("rabbitmq-server", path=path) is None:
        return "docker compose up -d"
    if shutil.which("brew", path=path):
        return "brew services start rabbitmq"
    return "systemctl start rabbitmq-server, as root"


def _access_denied(where: str, vhost: str, user: str, error: str) -> str:
    """RabbitMQ's reason (pika keeps it inside its message: "(530) 'NOT_ALLOWED - vhost x not
    found'"), and what to do when a learner can: create the vhost, or grant permissions."""
    said = re.search(r"\(\d+\) (['\"])(.+)\1$", error)
    reason = said[2] if said else "NOT_ALLOWED"
    grant = f"rabbitmqctl set_permissions -p {vhost} {user} '.*' '.*' '.*'"
    advice = ""
    if "not found" in reason:
        advice = f": create it (rabbitmqctl add_vhost {vhost}; {grant}) or {URL_HINT}"
    elif reason.endswith(f"refused for user '{user}'"):
        advice = f": {grant}"
    return f"RabbitMQ at {where} refused virtual host {vhost!r} ({reason}){advice}"


def _root_cause(error: BaseException) -> str:
    """The innermost reason pika wrapped, e.g. 'connection refused'."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    if isinstance(getattr(error, "exception", None), BaseException):  # a pika connector error
        error = error.exception  # type: ignore[attr-defined]
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__
