"""Where the scripts look for the broker, and how they keep its password out of sight."""

import pytest

from rabbit_queues.connection import DEFAULT_URL, broker_url, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:guest@localhost:5672/%2F", "amqp://guest:***@localhost:5672/%2F"),
        ("amqps://app:p%40ss@broker.example:5671/prod", "amqps://app:***@broker.example:5671/prod"),
        ("amqp://user:a@b@host/", "amqp://user:***@host/"),
        ("amqp://localhost/", "amqp://localhost/"),
        ("amqp://only-user@localhost/", "amqp://only-user@localhost/"),
        # Unencoded '/', '#', '?' or '@' in the password: still all of it hidden.
        ("amqp://learner2:hunter2/secret@host/", "amqp://learner2:***@host/"),
        ("amqp://u:p@ss:w/rd#1%?@host:5672/%2F", "amqp://u:***@host:5672/%2F"),
        ("amqp://u:p://x@host/", "amqp://u:***@host/"),
        # No scheme (a malformed URL, refused, but its error message shows it): hidden too.
        ("learner:s3cret@localhost:5672", "learner:***@localhost:5672"),
        # The client key's password may be in pika's ssl_options: all after '?' is hidden.
        (
            "amqps://h/?ssl_options={'keyfile':'k.pem','Password':'s3cret'}&heartbeat=5",
            "amqps://h/?***",
        ),
        (
            "amqps://learner:s3cret@h/?ssl_options={'ca_certs':'ca.pem'},amqps://h2/",
            "amqps://learner:***@h/?***",
        ),
    ],
)
def test_redact_url_hides_the_password(url, shown):
    assert redact_url(url) == shown


def test_url_option_beats_environment_beats_default(monkeypatch):
    monkeypatch.delenv("AMQP_URL", raising=False)
    assert broker_url(None) == DEFAULT_URL
    monkeypatch.setenv("AMQP_URL", "amqp://from-env/")
    assert broker_url(None) == "amqp://from-env/"
    assert broker_url("amqp://from-option/") == "amqp://from-option/"
