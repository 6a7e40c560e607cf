#!/usr/bin/env python
"""Show the lessons' queues: messages ready, delivered but unacknowledged, and consumers.

The same columns as `rabbitmqctl list_queues name messages_ready messages_unacknowledged
consumers`, without rabbitmqctl (which a broker in Docker does not put on your machine).
Ready and consumers from passive declares over AMQP, exact and at once; unacknowledged from
the management API, when it answers for the broker of the AMQP URL, as RabbitMQ last collected
them (every 5 s by default), else '?'. A quorum queue whose leader does not answer shows '?'
for ready and consumers too: RabbitMQ then says 0 and 0, which is not what it holds.

python queues.py            once
python queues.py --watch    every second, until Ctrl+C
"""

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from rabbit_queues.cli import run_script, script_parser
from rabbit_queues.connection import (
    BrokerError,
    connect,
    node_urls,
    redact_url,
    url_parameters,
)
from rabbit_queues.queues import ALL_QUEUES, QueueCounts

HTTP_TIMEOUT_SECONDS = 3
UNACKED = "messages_unacknowledged"


@dataclass(frozen=True)
class QueueFigures:
    """One line of `rabbitmqctl list_queues name messages_ready messages_unacknowledged
    consumers`. None where it is not known: ``unacked`` where the management API cannot tell
    it, ``ready`` and ``consumers`` where RabbitMQ could not ask a quorum queue's leader."""

    name: str
    ready: int | None
    unacked: int | None
    consumers: int | None


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
        self.connection, _node = connect(amqp_url)
        self.counts = QueueCounts(self.connection)
        # The broker's own name for its cluster (a node's: rabbit@host), told on connecting.
        self.cluster_name = self.connection._impl.server_properties.get("cluster_name")

    def figures(self, unacked: dict[str, int] | None = None) -> list[QueueFigures]:
        """Ready and consumers, now; ``unacked`` from elsewhere (the management API)."""
        found = []
        for spec in ALL_QUEUES:
            counts = self.counts.of(spec.name)
            if counts is not None:
                unacked_now = (unacked or {}).get(spec.name)
                found.append(
                    QueueFigures(
                        spec.name, counts.message_count, unacked_now, counts.consumer_count
                    )
                )
        return found

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


COLUMNS = ("name", "messages_ready", "messages_unacknowledged", "consumers")


def table(figures: list[QueueFigures]) -> str:
    if not figures:
        return "(none of the lessons' queues exists yet: start a worker or send a task)"
    rows = [COLUMNS] + [
        (f.name, *("?" if n is None else str(n) for n in (f.ready, f.unacked, f.consumers)))
        for f in figures
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def main() -> None:
    parser = script_parser(__doc__, queue_type=False)
    parser.add_argument(
        "--management-url",
        help="the management API, http:// or https:// without a user (it is asked with the "
        "broker URL's); default: the MANAGEMENT_URL environment variable, else "
        "http://<broker host>:15672/",
    )
    parser.add_argument("--watch", action="store_true", help="refresh every second")
    args = parser.parse_args()
    url = args.url
    api_url = management_url(url, args.management_url)

    amqp = PassiveDeclares(url)
    try:
        while True:
            try:
                unacked = unacknowledged(url, api_url, amqp.cluster_name)
                lag = (
                    f"unacknowledged as RabbitMQ last collected them, every 5 s by default "
                    f"(the management API at {api_url})"
                )
            except ManagementUnavailable as why:
                unacked, lag = None, f"unacknowledged '?': the management API at {api_url} {why}"
            figures = amqp.figures(unacked)
            if unacked is not None and any(f.unacked is None for f in figures):
                lag += "; '?': not collected yet, or its metrics collection is off"
            if any(f.ready is None for f in figures):
                lag += (
                    "\nready and consumers '?': RabbitMQ could not ask the queue's leader now "
                    "(its node stalled or down, or no majority of its members)"
                )
            if args.watch and sys.stdout.isatty():
                print("\033[H\033[2J", end="")  # clear the terminal, draw from the top
            when = datetime.now().strftime("%H:%M:%S")
            print(f"{when} {redact_url(url)}, ready and consumers now (passive declares)")
            print(f"{lag}\n{table(figures)}")
            if not args.watch:
                return
            print()
            time.sleep(1)
    except KeyboardInterrupt:
        return  # Ctrl+C is how --watch ends
    finally:
        amqp.close()


if __name__ == "__main__":
    run_script(main)
