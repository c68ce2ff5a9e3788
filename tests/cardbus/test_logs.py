"""The one logging configuration: PANs masked, PIN blocks and keys dropped, correlation bound."""

from __future__ import annotations

import json

import structlog
from structlog.testing import capture_logs

from cardbus.logs import REDACTED, bind_correlation, configure, redact

PAN = "4111111111111111"  # the well-known public test PAN


def test_pan_masked_anywhere() -> None:
    with capture_logs(processors=[redact]) as logs:
        structlog.get_logger().info(f"tap of {PAN}", card={"pan": PAN, "nested": [PAN]},
                                    raw=int(PAN))
    line = logs[0]
    assert line["event"] == "tap of 411111******1111"
    assert line["card"] == {"pan": "411111******1111", "nested": ["411111******1111"]}
    assert line["raw"] == "411111******1111"
    assert PAN not in json.dumps(line)


def test_secrets_dropped_whatever_the_key_name() -> None:
    secret = "0123456789ABCDEF0123456789ABCDEF"
    with capture_logs(processors=[redact]) as logs:
        structlog.get_logger().info(
            "keys", pin_block="041234FFFFFFFFFF", PinBlock="x", terminalPinKey=secret,
            kbpk=secret, private_key_pem="-----BEGIN", pin="1234", key_id="pin-key-1",
            kcv="A1B2C3", note=f"material {secret} inline", blob=b"\x00" * 16,
        )
    line = logs[0]
    for name in ("pin_block", "PinBlock", "terminalPinKey", "kbpk", "private_key_pem", "pin"):
        assert line[name] == REDACTED, name
    assert line["key_id"] == "pin-key-1"
    assert line["kcv"] == "A1B2C3"
    assert secret not in line["note"]
    assert line["blob"] == "<16 bytes>"


def test_non_luhn_digits_left_alone() -> None:
    with capture_logs(processors=[redact]) as logs:
        structlog.get_logger().info("order 1234567890123", amount=1500)
    assert logs[0]["event"] == "order 1234567890123"
    assert logs[0]["amount"] == 1500


def test_correlation_id_bound_and_json_lines(capsys: object) -> None:
    configure("INFO", json=True)
    try:
        with bind_correlation("pay-42"):
            structlog.get_logger().info("authorized", pan=PAN)
        structlog.get_logger().info("outside")
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err.strip().splitlines()  # type: ignore[attr-defined]
    first, second = (json.loads(x) for x in err[-2:])
    assert first["correlation_id"] == "pay-42"
    assert first["pan"] == "411111******1111"
    assert "correlation_id" not in second


# -- issue 22, low: what the redaction missed ------------------------------------------------

def test_pans_written_with_spaces_or_dashes_and_12_digit_pans_are_masked() -> None:
    twelve = "123456789015"  # 12 digits, Luhn-valid (ISO/IEC 7812 allows 12-19)
    with capture_logs(processors=[redact]) as logs:
        structlog.get_logger().info(f"spaced 4111 1111 1111 1111, dashed 4111-1111-1111-1111, "
                                    f"short {twelve}", n=int(twelve))
    line = logs[0]
    assert line["event"] == ("spaced 411111******1111, dashed 411111******1111, "
                             "short 123456**9015")
    assert line["n"] == "123456**9015"


def test_an_object_logged_by_repr_loses_its_secrets() -> None:
    from reader_agent.dialogue import Checkout

    class Sale:  # a repr with a PIN, as any dataclass would write it
        def __repr__(self) -> str:
            return f"Sale(amount=1250, pin='4321', pan='{PAN}', pin_block=041234FFFFFFFFFF)"

    with capture_logs(processors=[redact]) as logs:
        structlog.get_logger().info("armed", sale=Sale(), checkout=Checkout(amount=5))
    text = logs[0]["sale"]
    assert "4321" not in text and "041234" not in text and PAN not in text
    assert text == (f"Sale(amount=1250, pin={REDACTED}, pan='411111******1111', "
                    f"pin_block={REDACTED})")
    assert logs[0]["checkout"].startswith("Checkout(amount=5")


def test_stdlib_loggers_go_through_the_same_redaction(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import logging

    log_file = tmp_path / "worker.log"
    configure(path=log_file)
    try:
        logging.getLogger("aiokafka.producer").warning("retrying %s with pin=%s", PAN, "4321")
    finally:
        configure()
    (line,) = [json.loads(raw) for raw in log_file.read_text().splitlines()]
    assert PAN not in json.dumps(line) and "4321" not in json.dumps(line)
    assert line["event"] == f"retrying 411111******1111 with pin={REDACTED}"
    assert line["logger"] == "aiokafka.producer" and line["level"] == "warning"
