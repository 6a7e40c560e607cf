"""Where the broker is, and how to connect to it with an error a learner can act on."""

from __future__ import annotations

import os
import socket
import ssl
from urllib.parse import urlsplit, urlunsplit

import pika
import pika.exceptions


class BrokerError(Exception):
    """A problem with the broker, explained in one line; scripts print it instead of a traceback."""


class ConnectionLost(Exception):
    """The connection a message came on went away before the worker could settle it."""


DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
URL_HINT = "check --url or the AMQP_URL environment variable"


def broker_url(cli_url: str | None = None) -> str:
    """The broker address: ``--url`` if given, else ``AMQP_URL``, else the local default."""
    return cli_url or os.environ.get("AMQP_URL") or DEFAULT_URL


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe to print or log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))


def url_parameters(url: str) -> pika.URLParameters:
    """pika's parameters for ``url``; BrokerError (password hidden) if it is malformed."""
    try:
        return pika.URLParameters(url)
    except ValueError as error:
        raise BrokerError(f"invalid broker URL {redact_url(url)}: {error}; {URL_HINT}") from None


def open_connection(url: str) -> pika.BlockingConnection:
    """Connect to ``url`` (``amqp://`` or ``amqps://``); raise BrokerError on any failure.

    ``amqps://`` verifies the broker's certificate and host name against the system's trusted
    CAs (or the bundle named by ``SSL_CERT_FILE``), as a browser would.
    """
    parameters = url_parameters(url)
    try:
        return pika.BlockingConnection(parameters)
    except (pika.exceptions.AMQPConnectionError, OSError) as error:
        raise explain_connection_error(parameters, error) from None


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
        return BrokerError(
            f"RabbitMQ at {where} denied access to virtual host {parameters.virtual_host!r}: "
            f"create it or grant the user access to it, or {URL_HINT}"
        )
    if isinstance(error, socket.gaierror):
        return BrokerError(f"cannot resolve host {parameters.host!r}; {URL_HINT}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return BrokerError(
            f"TLS with RabbitMQ at {where} failed: certificate verify failed: "
            f"{error.verify_message}"
        )
    if isinstance(error, ssl.SSLError):
        return BrokerError(f"TLS with RabbitMQ at {where} failed: {error.reason or error}")
    return BrokerError(
        f"cannot reach RabbitMQ at {where} ({_root_cause(error)}): start the broker "
        f"(docker compose up -d) or {URL_HINT}"
    )


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
