"""How many messages the lessons' queues hold: what `queues.py` prints.

A passive declare over AMQP tells a queue's ready messages and consumers exactly, at once; it
cannot tell those delivered but not yet acknowledged. The management HTTP API (the
rabbitmq_management plugin, in the `-management` images) knows those too, but as RabbitMQ last
collected them: every 5 s on a default broker (``collect_statistics_interval``).
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from rabbit_queues.connection import (
    BrokerError,
    node_urls,
    open_connection,
    redact_url,
    url_parameters,
)
from rabbit_queues.queues import ALL_QUEUES, passive_declare

HTTP_TIMEOUT_SECONDS = 3
UNACKED = "messages_unacknowledged"


@dataclass(frozen=True)
class QueueFigures:
    """One line of `rabbitmqctl list_queues name messages_ready messages_unacknowledged
    consumers`. ``unacked`` is None where the management API cannot tell it."""

    name: str
    ready: int
    unacked: int | None
    consumers: int


def management_url(amqp_url: str, given: str | None = None) -> str:
    """The management API: ``given``, else ``MANAGEMENT_URL``, else port 15672 of the broker's
    host (its first node's; https on 15671 for amqps://)."""
    if given or os.environ.get("MANAGEMENT_URL"):
        return _checked((given or os.environ["MANAGEMENT_URL"]).rstrip("/") + "/")
    parameters = url_parameters(node_urls(amqp_url)[0])
    scheme, port = ("https", 15671) if parameters.ssl_options else ("http", 15672)
    return f"{scheme}://{parameters.host}:{port}/"


def _checked(api_url: str) -> str:
    """``api_url``, or BrokerError (password hidden) if it cannot be the management API's."""
    problem = None
    try:
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.port == 0:
            problem = "expected http://host:15672/, or https://"
        elif parts.username is not None:
            problem = "it must not hold a user (the API is asked with the AMQP URL's)"
    except ValueError as error:  # a port that is not a number, a broken IPv6 address
        problem = str(error)
    if problem is not None:
        raise BrokerError(
            f"invalid management API URL {redact_url(api_url)}: {problem}; check "
            "--management-url or the MANAGEMENT_URL environment variable"
        )
    return api_url


class ManagementUnavailable(Exception):
    """The management API did not answer, or not usefully; the message says why, as the end
    of a sentence that starts with 'the management API'."""


def unacknowledged(amqp_url: str, api_url: str, cluster_name: str) -> dict[str, int]:
    """Each lesson queue's messages delivered and not yet acknowledged, as the management API
    last collected them (with the AMQP URL's user), if it is the API of the broker ``amqp_url``
    reaches, whose cluster is ``cluster_name``."""
    parameters = url_parameters(node_urls(amqp_url)[0])
    credentials = parameters.credentials
    token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
    # Another broker's API (a second RabbitMQ on the same host, its 15672) must not stand in.
    theirs = _get_json(f"{api_url}api/overview?columns=cluster_name", token).get("cluster_name")
    if theirs != cluster_name:
        raise ManagementUnavailable(
            f"belongs to another broker: its cluster is {theirs!r}, the AMQP URL's {cluster_name!r}"
        )
    vhost = quote(parameters.virtual_host, safe="")
    listed = _get_json(f"{api_url}api/queues/{vhost}?columns=name,{UNACKED}", token)
    # A queue it lists without the figure (not collected yet, or metrics collection is off) is
    # left out: unknown, never 0.
    return {queue["name"]: queue[UNACKED] for queue in listed if UNACKED in queue}


def _get_json(url: str, token: str) -> Any:
    """What the management API answers at ``url``; ManagementUnavailable saying why not."""
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        raise ManagementUnavailable(f"answered HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        why = str(getattr(reason, "strerror", None) or reason).lower()
        raise ManagementUnavailable(f"did not answer: {why}") from None
    except ValueError:
        raise ManagementUnavailable("answered with something other than JSON") from None


class PassiveDeclares:
    """The lessons' queues over AMQP: a passive declare per queue, on one connection."""

    def __init__(self, amqp_url: str) -> None:
        self.connection = open_connection(amqp_url)
        self.channel = self.connection.channel()
        # The broker's own name for its cluster (a node's: rabbit@host), told on connecting.
        self.cluster_name = self.connection._impl.server_properties.get("cluster_name")

    def figures(self, unacked: dict[str, int] | None = None) -> list[QueueFigures]:
        """Ready and consumers, now; ``unacked`` from elsewhere (the management API)."""
        found = []
        for spec in ALL_QUEUES:
            declared = passive_declare(self.channel, spec.name)
            if declared is None:
                self.channel = self.connection.channel()  # a 404 closes the channel
                continue
            found.append(
                QueueFigures(
                    spec.name,
                    declared.message_count,
                    (unacked or {}).get(spec.name),
                    declared.consumer_count,
                )
            )
        return found

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()
