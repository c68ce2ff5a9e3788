"""Transit e-purse load cryptography, in the style of the PBOC e-purse load sequence.

1. INITIALIZE FOR LOAD: the card answers balance, online sequence number, a card random and
   MAC1 = MAC(SESLK, balance || amount || type 02 || terminal id).
2. The operator (host) verifies MAC1 and authorises the load with
   MAC2 = MAC(SESLK, amount || type 02 || terminal id || date-time).
3. CREDIT FOR LOAD: the card verifies MAC2, credits, and proves the load with
   TAC = MAC(DTK, new balance || online seq || amount || type 02 || terminal id || date-time),
   which the operator verifies.

SESLK = TDES(DLK)[random || seq || 8000 , inverted], double length. Differences from PBOC,
on purpose: double-length TDES session and TAC keys and ISO 9797-1 MAC algorithm 3 (PBOC uses
single-DES MACs); the terminal id is the first 6 bytes of SHA-256 of the CardBus terminal id.
Per-card keys (DLK load key, DTK TAC key) come from the operator's master keys by the card
number (EMV option A). Amounts and balances are integer minor units (4 bytes).

Card evidence after MAC2 (``probe_terminal_id``): INITIALIZE FOR LOAD carries no host challenge,
so a terminal could keep an old answer and show it later. A probe names, as its terminal id,
a challenge made of the operator's MAC2 (unknown to anyone before the operator answered); the
card's MAC1 covers it. A probe also starts a new load session on the card (a new random), so the
MAC2 it answers can never be used after it: the balance and sequence number it shows are the
card's state once that load's chance is gone.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from pyemv import kd
from pyemv.mac import mac_iso9797_3
from pyemv.tools import adjust_key_parity, encrypt_tdes_ecb

from cardbus.errors import MacInvalid

LOAD_TYPE = b"\x02"


def _u32(value: int, what: str) -> bytes:
    if not 0 <= value < 2**32:
        raise MacInvalid(f"{what} {value} out of range")
    return value.to_bytes(4, "big")


def _terminal(terminal_id: str) -> bytes:
    return hashlib.sha256(terminal_id.encode()).digest()[:6]


def _when(date_time: str) -> bytes:
    if len(date_time) != 14 or not date_time.isdigit():
        raise MacInvalid("date-time must be YYYYMMDDhhmmss")
    return bytes.fromhex(date_time)


def _mac(key: bytes, data: bytes) -> bytes:
    return mac_iso9797_3(key[:8], key[8:], data, 2, 4)


def card_time(when: datetime) -> str:
    """A load's date and time as the card's field: YYYYMMDDhhmmss, UTC (MAC2 and the TAC cover
    it). Events carry it as an ISO 8601 time: a 14-digit run on the bus looks like a PAN to a
    scanner one time in ten."""
    return when.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def diversifier(card_token: str) -> str:
    """The 16 digits a card's keys are diversified by, from its token (SHA-256, reduced to
    decimal digits): every card gets its own keys and its number is not needed to derive them
    (only the token travels)."""
    return str(int.from_bytes(hashlib.sha256(card_token.encode()).digest()[:8], "big")
               % 10**16).zfill(16)


def derive_card_key(master_key: bytes, card_no: str) -> bytes:
    """Per-card key (DLK or DTK) from an operator master key and the card number."""
    return kd.derive_icc_mk_a(master_key, card_no)


def session_load_key(dlk: bytes, card_random: bytes, online_seq: int) -> bytes:
    """SESLK from the card's load key, its random and its online transaction sequence."""
    if len(card_random) != 4 or not 0 <= online_seq <= 0xFFFF:
        raise MacInvalid("card random must be 4 bytes, online sequence 0..65535")
    r = card_random + online_seq.to_bytes(2, "big") + b"\x80\x00"
    inv = bytes(b ^ 0xFF for b in r)
    return adjust_key_parity(encrypt_tdes_ecb(dlk, r + inv))


def probe_terminal_id(mac2: bytes) -> str:
    """The terminal id a probe INITIALIZE FOR LOAD names: a challenge from the operator's MAC2
    (14 ASCII characters, within the card's 1-32)."""
    if len(mac2) != 4:
        raise MacInvalid("MAC2 must be 4 bytes")
    return "PROBE-" + mac2.hex().upper()


def card_load_mac1(dlk: bytes, card_random: bytes, online_seq: int, balance: int, amount: int,
                   terminal_id: str) -> bytes:
    """Card side: MAC1 over the load request (4 bytes)."""
    sk = session_load_key(dlk, card_random, online_seq)
    return _mac(sk, _u32(balance, "balance") + _u32(amount, "amount") + LOAD_TYPE
                + _terminal(terminal_id))


def verify_card_mac1(dlk: bytes, card_random: bytes, online_seq: int, balance: int,
                     amount: int, terminal_id: str, mac1: bytes) -> None:
    """Operator side: raise ``MacInvalid`` unless MAC1 is the card's."""
    expected = card_load_mac1(dlk, card_random, online_seq, balance, amount, terminal_id)
    if not hmac.compare_digest(expected, mac1):
        raise MacInvalid("load MAC1 does not verify")


def operator_mac2(dlk: bytes, card_random: bytes, online_seq: int, amount: int,
                  terminal_id: str, date_time: str) -> bytes:
    """Operator side: MAC2 authorising the load (4 bytes)."""
    sk = session_load_key(dlk, card_random, online_seq)
    return _mac(sk, _u32(amount, "amount") + LOAD_TYPE + _terminal(terminal_id)
                + _when(date_time))


def verify_operator_mac2(dlk: bytes, card_random: bytes, online_seq: int, amount: int,
                         terminal_id: str, date_time: str, mac2: bytes) -> None:
    """Card side: raise ``MacInvalid`` unless MAC2 is the operator's."""
    expected = operator_mac2(dlk, card_random, online_seq, amount, terminal_id, date_time)
    if not hmac.compare_digest(expected, mac2):
        raise MacInvalid("load MAC2 does not verify")


def card_tac(dtk: bytes, new_balance: int, online_seq: int, amount: int, terminal_id: str,
             date_time: str) -> bytes:
    """Card side: TAC, the proof of load (4 bytes)."""
    data = (_u32(new_balance, "balance") + online_seq.to_bytes(2, "big")
            + _u32(amount, "amount") + LOAD_TYPE + _terminal(terminal_id) + _when(date_time))
    return _mac(dtk, data)


def verify_card_tac(dtk: bytes, new_balance: int, online_seq: int, amount: int,
                    terminal_id: str, date_time: str, tac: bytes) -> None:
    """Operator side: raise ``MacInvalid`` unless the TAC proves this load."""
    expected = card_tac(dtk, new_balance, online_seq, amount, terminal_id, date_time)
    if not hmac.compare_digest(expected, tac):
        raise MacInvalid("load TAC does not verify")
