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
