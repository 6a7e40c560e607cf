#!/usr/bin/env python
"""Show the lessons' queues: messages ready, delivered but unacknowledged, and consumers.

The same columns as `rabbitmqctl list_queues name messages_ready messages_unacknowledged
consumers`, without rabbitmqctl (which a broker in Docker does not put on your machine).
Ready and consumers from passive declares over AMQP, exact and at once; unacknowledged from
the management API, when it answers for the broker of the AMQP URL, as RabbitMQ last collected
them (every 5 s by default), else '?'.

python queues.py            once
python queues.py --watch    every second, until Ctrl+C
"""

import signal
import sys
import time
from datetime import datetime

# kill (SIGTERM) stops it as Ctrl+C does, already while it starts: never without a word
signal.signal(signal.SIGTERM, signal.default_int_handler)
try:
    from rabbit_queues import broker_url, redact_url, run_script, script_parser
    from rabbit_queues.inspection import (
        ManagementUnavailable,
        PassiveDeclares,
        QueueFigures,
        management_url,
        unacknowledged,
    )
except ModuleNotFoundError as missing:  # not run in the virtual environment: one line
    raise SystemExit(
        f"error: {missing}; activate the virtual environment (. .venv/bin/activate)"
        " or run pip install -r requirements.txt"
    ) from None
except KeyboardInterrupt:  # Ctrl+C or kill while it starts
    raise SystemExit(" [*] Interrupted") from None

COLUMNS = ("name", "messages_ready", "messages_unacknowledged", "consumers")


def table(figures: list[QueueFigures]) -> str:
    if not figures:
        return "(none of the lessons' queues exists yet: start a worker or send a task)"
    rows = [COLUMNS] + [
        (f.name, str(f.ready), "?" if f.unacked is None else str(f.unacked), str(f.consumers))
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
    parser = script_parser(__doc__)
    parser.add_argument(
        "--management-url",
        help="the management API, http:// or https:// without a user (it is asked with the "
        "broker URL's); default: the MANAGEMENT_URL environment variable, else "
        "http://<broker host>:15672/",
    )
    parser.add_argument("--watch", action="store_true", help="refresh every second")
    args = parser.parse_args()
    url = broker_url(args.url)
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
