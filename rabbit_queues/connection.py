"""Where the broker is, connecting to the first node of a cluster that answers (the one place
that fails over), and every reason it could not in one line, passwords hidden."""

import ast
import os
import re
import shutil
import socket
import ssl
import struct
import sys
import threading
import urllib.parse
from typing import Any

import pika
import pika.exceptions as errors
import pika.frame
from pika.adapters.utils.connection_workflow import AMQPConnectorException as ConnectorError
from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout
from pika.spec import FRAME_END_SIZE, FRAME_HEADER, FRAME_HEADER_SIZE, BasicProperties


class BrokerError(Exception):
    """A problem with the broker in one line: scripts print it instead of a traceback. Its
    ``what`` is what happened, without the ``advice`` (what to do) that may follow it."""

    def __init__(self, what: str, advice: str = "") -> None:
        super().__init__(what + advice)
        self.what = what


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
    if why := _client_key_problem(url):
        raise BrokerError(f"{invalid}: {why}; {URL_HINT}")
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


def _client_key_problem(url: str) -> str | None:
    """Why the client key that ``url``'s ssl_options name cannot be read for want of its
    password, else None. (pika would leave OpenSSL to ask for it on the terminal.) The
    options are read as pika reads them: a Python literal, never run as code."""
    options = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("ssl_options")
    try:
        options = ast.literal_eval(options[0]) if options else None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None  # pika's turn to say what is wrong with them
    if not isinstance(options, dict) or not options.get("certfile"):
        return None
    password, asked = options.get("password"), []

    def give_password() -> Any:  # called by OpenSSL only if the key is encrypted
        asked.append(True)
        return password or b""

    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_cert_chain(options["certfile"], options.get("keyfile"), give_password)
    except (ssl.SSLError, OSError, TypeError, ValueError):
        if asked and password is None:
            return "its client key (keyfile) is encrypted, and ssl_options give no 'password'"
        if asked:
            return "the 'password' in ssl_options does not decrypt the client key (keyfile)"
    return None  # loaded, or failed for another reason, which pika says


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
            return pika.BlockingConnection(parameters, _impl_class=_ReadsEveryMessage), node
        except (errors.AMQPConnectionError, OSError, ConnectorError) as error:
            failure = explain_connection_error(parameters, error)
            if isinstance(error, REFUSALS) or len(nodes) == 1:
                raise failure from None
            failures.append(without_advice(failure))
    raise BrokerError(f"no node of the cluster answers ({'; '.join(failures)}); {URL_HINT}")


UNREADABLE = "x-unreadable-headers"  # replaces headers pika could not read, saying why


class _ReadsEveryMessage(pika.SelectConnection):
    """pika's connection, but a message whose headers pika cannot read (a table nested deeper
    than Python's recursion limit, a field type pika lacks) arrives with only UNREADABLE in
    them, its body and other properties as sent: pika would drop the connection, and RabbitMQ
    deliver the message again, for ever (3.10) or until its delivery limit drops it (4.x)."""

    def _read_frame(self) -> tuple[int, Any]:  # pika's own body, called for every frame
        try:
            return pika.frame.decode_frame(self._frame_buffer)
        except Exception as error:  # not a frame we can mend: pika closes the connection
            return without_headers(self._frame_buffer, error)


def without_headers(data: bytes, error: Exception) -> tuple[int, pika.frame.Header]:
    """The content header frame at the start of ``data`` (which pika failed to read with
    ``error``) and its length, its headers table replaced by UNREADABLE; else ``error``."""
    kind, channel, size = struct.unpack_from(">BHL", data)
    if isinstance(error, errors.InvalidFrameError) or kind != FRAME_HEADER:
        raise error
    (body_size,) = struct.unpack_from(">Q", data, FRAME_HEADER_SIZE + 4)
    encoded = data[FRAME_HEADER_SIZE + 12 : FRAME_HEADER_SIZE + size]  # the properties
    (flags,) = struct.unpack_from(">H", encoded)
    if flags & 1 or not flags & BasicProperties.FLAG_HEADERS:  # 1: more flags (none in Basic)
        raise error
    start = 2  # the headers come after content_type and content_encoding, two short strings
    for flag in (BasicProperties.FLAG_CONTENT_TYPE, BasicProperties.FLAG_CONTENT_ENCODING):
        start += 1 + encoded[start] if flags & flag else 0
    end = start + 4 + struct.unpack_from(">I", encoded, start)[0]
    properties = BasicProperties()
    try:
        properties.decode(
            struct.pack(">H", flags & ~BasicProperties.FLAG_HEADERS)
            + encoded[2:start]
            + encoded[end:]
        )
    except Exception:
        raise error from None
    properties.headers = {UNREADABLE: f"{type(error).__name__}: {error}"[:1000]}
    return FRAME_HEADER_SIZE + size + FRAME_END_SIZE, pika.frame.Header(
        channel, body_size, properties
    )


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
    """'RabbitMQ closed the channel (its reason)', 'lost the connection to RabbitMQ (...)'...:
    the one place that says what went, for a worker's line and a script's last."""
    if isinstance(error, Lost):
        return str(error)
    if isinstance(error, errors.ChannelClosedByBroker):
        return f"RabbitMQ closed the channel ({error.reply_text})"
    if isinstance(error, errors.ConnectionClosedByBroker):
        return f"RabbitMQ closed the connection ({error.reply_code} {error.reply_text})"
    return "lost the connection to RabbitMQ" + (f" ({type(error).__name__})" if error else "")


def without_advice(error: BaseException) -> str:
    """'cannot reach RabbitMQ at host:5672 (connection refused)', without what to do about it."""
    return getattr(error, "what", None) or str(error) or type(error).__name__


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
    if isinstance(error, ssl.SSLError):  # (TLS 1.2 tells an alert here, in the handshake)
        return BrokerError(f"{tls}: {TLS_ALERTS.get(error.reason, error.reason or error)}")
    if isinstance(error, AMQPConnectorStackTimeout):  # a listener that is not RabbitMQ
        return BrokerError(
            f"nothing speaking AMQP answered at {where} within {parameters.stack_timeout:g} s "
            f"(is that RabbitMQ's AMQP port, 5672 by default?); {URL_HINT}"
        )
    # pika keeps only the text of OpenSSL's reason when the broker ends the TLS handshake.
    # (Closed at once, the socket may lose the alert: then OpenSSL saw only an EOF.)
    alert = re.search(r"\[SSL: (\w+)\]", str(error))
    if alert or re.search(r"SSL\w*Error", str(error)):
        name = alert[1] if alert else "EOF"
        return BrokerError(f"{tls}: {TLS_ALERTS.get(name, name.lower())}")
    if isinstance(error, (errors.StreamLostError, errors.IncompatibleProtocolError)):
        cause = [type(error).__name__, *re.findall(r"'([^']+)'", str(error))][-1].lower()
        why = f"{where} took the connection, then closed it before AMQP began ({cause})"
        return BrokerError(why, f"; {URL_HINT}")
    return BrokerError(
        f"cannot reach RabbitMQ at {where} ({_root_cause(error)})",
        f": start the broker ({how_to_start_rabbitmq()}) or {URL_HINT}",
    )


# What RabbitMQ's TLS alert means when it checks our client certificate (ssl_options.verify =
# verify_peer on the broker); pika's ssl_options give one with 'certfile' and 'keyfile'.
NO_CLIENT_CERTIFICATE = (
    "RabbitMQ asks for a client certificate, and the URL gives none ('certfile' and "
    "'keyfile' in ssl_options)"
)
TLS_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": NO_CLIENT_CERTIFICATE,
    "SSLV3_ALERT_HANDSHAKE_FAILURE": NO_CLIENT_CERTIFICATE + ", or shares no cipher with us",
    "TLSV1_ALERT_UNKNOWN_CA": "RabbitMQ does not trust our client certificate (its CA is not "
    "one in RabbitMQ's ssl_options.cacertfile)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "RabbitMQ refused our client certificate as bad",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "RabbitMQ says our client certificate has expired (or "
    "is not valid yet)",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "RabbitMQ says our client certificate was revoked",
    "EOF": "RabbitMQ closed the connection in the TLS handshake without a reason we could read "
    "(does it ask for a client certificate, and the URL gives none or one it does not trust?)",
}


def how_to_start_rabbitmq(path: str | None = None) -> str:
    """The installed package's service (Debian's, Homebrew's), else the README's container."""
    path = f"{os.environ.get('PATH', '')}:{SBIN}" if path is None else path
    if shutil.which("rabbitmq-server", path=path) is None:
        return "docker compose up -d"
    if shutil.which("brew", path=path):
        return "brew services start rabbitmq"
    return "systemctl start rabbitmq-server, as root"


def grant_command(vhost: str, user: str) -> str:
    """What gives ``user`` every permission on ``vhost``."""
    return f"rabbitmqctl set_permissions -p {vhost} {user} '.*' '.*' '.*'"


def _access_denied(where: str, vhost: str, user: str, error: str) -> str:
    """RabbitMQ's reason (pika keeps it inside its message: "(530) 'NOT_ALLOWED - vhost x not
    found'"), and what to do when a learner can: create the vhost, or grant permissions."""
    said = re.search(r"\(\d+\) (['\"])(.+)\1$", error)
    reason = said[2] if said else "NOT_ALLOWED"
    grant = grant_command(vhost, user)
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
