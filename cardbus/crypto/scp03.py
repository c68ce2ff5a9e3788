"""GlobalPlatform Secure Channel Protocol '03' (Card Specification v2.3, Amendment D v1.1.1).

AES-128 only (the static key set Key-ENC, Key-MAC, Key-DEK of one key version). Both ends of
a channel use this module: the card (``cards``) and the card manager (``cardbus.gp``).

- ``kdf``: the data derivation scheme of Amendment D 4.1.5, NIST SP 800-108 counter mode with
  AES-CMAC as PRF, counter in the middle of the fixed data (``KBKDFCMAC`` of ``cryptography``):
  label (11 x '00' || constant) || '00' || L (2) || i (1) || context.
- ``session_keys``, ``card_challenge`` (pseudo-random, from the sequence counter), the card and
  host cryptograms (6.2.1, 6.2.2).
- ``Channel``: the state of an open channel, the same on both ends (security level, MAC
  chaining value, encryption counter), and the pure functions that move it: the host wraps a
  command (C-DECRYPTION then C-MAC) and unwraps the response (R-MAC then R-ENCRYPTION); the card
  does the reverse. Each returns the next ``Channel``: nothing mutates.
- Key-DEK: sensitive data and keys travel AES-CBC encrypted with a zero ICV under the static
  Key-DEK (6.2.8: SCP03 has no session DEK), keys as the PUT KEY key data of Table 7-10 with the
  AES key check value of 7.2.2.
- ``diversify_kdf3``: per-card static keys from an issuer master key and the card's key
  diversification data, the ``kdf3`` scheme of GlobalPlatformPro (``PlaintextKeys``).

Short APDUs only (Lc up to 255 with the MAC and padding), basic logical channel.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field, replace
from enum import IntEnum

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFCMAC, CounterLocation, Mode

from cardbus.errors import KeyUsageError, SecureChannelError

BLOCK = 16
MAC_LEN = 8
CHALLENGE_LEN = 8
CLA_SM = 0x04  # GlobalPlatform proprietary secure messaging indication in the class byte


class Derivation(IntEnum):
    """Derivation constants (Amendment D Table 4-1)."""

    CARD_CRYPTOGRAM = 0x00
    HOST_CRYPTOGRAM = 0x01
    CARD_CHALLENGE = 0x02
    S_ENC = 0x04
    S_MAC = 0x06
    S_RMAC = 0x07


class Level(IntEnum):
    """Security level bits (EXTERNAL AUTHENTICATE P1, Amendment D Table 7-3)."""

    C_MAC = 0x01
    C_DECRYPTION = 0x02
    R_MAC = 0x10
    R_ENCRYPTION = 0x20


# The security levels Table 7-3 defines (no secure messaging, '00', is not offered here).
LEVELS = frozenset({0x01, 0x03, 0x11, 0x13, 0x33})

# "i" parameter bits (Table 5-1).
I_PSEUDO_RANDOM = 0x10
I_RMAC = 0x20
I_RENC = 0x40


# -- primitives ---------------------------------------------------------------------------

def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-CMAC (NIST SP 800-38B), the full 16 bytes."""
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def kbkdf_cmac(key: bytes, before: bytes, after: bytes, length: int) -> bytes:
    """NIST SP 800-108 counter-mode KDF, AES-CMAC PRF, one-byte counter between ``before``
    and ``after`` (the CAVP ``MIDDLE_FIXED``, ``RLEN=8_BITS`` profile); ``length`` bytes."""
    return KBKDFCMAC(algorithms.AES, Mode.CounterMode, length, 1, None,
                     CounterLocation.MiddleFixed, None, None, before + after,
                     break_location=len(before)).derive(key)


def kdf(key: bytes, constant: int, context: bytes, bits: int) -> bytes:
    """Amendment D 4.1.5: ``bits`` of derived data for ``constant`` over ``context``."""
    before = bytes(11) + bytes([constant]) + b"\x00" + bits.to_bytes(2, "big")
    return kbkdf_cmac(key, before, context, bits // 8)


def _aes_cbc(key: bytes, iv: bytes, data: bytes, *, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


def _aes_block(key: bytes, block: bytes) -> bytes:
    return _aes_cbc(key, bytes(BLOCK), block, encrypt=True)


def pad80(data: bytes) -> bytes:
    """Amendment D 4.1.4: '80', then zeros up to a multiple of 16 (always at least '80')."""
    data += b"\x80"
    return data + bytes(-len(data) % BLOCK)


def unpad80(data: bytes) -> bytes:
    """Strip ``pad80`` padding; ``SecureChannelError`` when there is none."""
    stripped = data.rstrip(b"\x00")
    if not stripped or stripped[-1] != 0x80 or len(data) - len(stripped) >= BLOCK:
        raise SecureChannelError("bad padding in decrypted data")
    return stripped[:-1]


def kcv_aes(key: bytes) -> bytes:
    """Key check value of an AES key: AES of one block of '01', first 3 bytes (7.2.2)."""
    return _aes_block(key, b"\x01" * BLOCK)[:3]


# -- keys ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class StaticKeys:
    """One SCP03 key set of a security domain: Key-ENC, Key-MAC, Key-DEK, its version."""

    enc: bytes = field(repr=False)
    mac: bytes = field(repr=False)
    dek: bytes = field(repr=False)
    version: int = 0x30

    def __post_init__(self) -> None:
        if {len(self.enc), len(self.mac), len(self.dek)} != {16}:
            raise KeyUsageError("SCP03 keys here are AES-128 (16 bytes each)")
        if not 0x01 <= self.version <= 0x7F:
            raise KeyUsageError(f"key version {self.version:#x} is out of range")


@dataclass(frozen=True)
class SessionKeys:
    """S-ENC, S-MAC and S-RMAC of one secure channel session."""

    s_enc: bytes = field(repr=False)
    s_mac: bytes = field(repr=False)
    s_rmac: bytes = field(repr=False)


def kdf3_key(master: bytes, kdd: bytes, key_type: int) -> bytes:
    """One diversified key (as long as ``master``): GlobalPlatformPro's ``kdf3`` template,
    counter (1) || 00 00 00 || key type (01 ENC, 02 MAC, 03 DEK) || 00 || KDD, AES-CMAC
    counter mode."""
    if len(kdd) != 10:
        raise KeyUsageError("key diversification data must be 10 bytes")
    return KBKDFCMAC(algorithms.AES, Mode.CounterMode, len(master), 1, None,
                     CounterLocation.BeforeFixed, None, None,
                     bytes([0, 0, 0, key_type, 0]) + kdd).derive(master)


def diversify_kdf3(master: bytes, kdd: bytes, version: int = 0x30) -> StaticKeys:
    """A card's key set from an issuer master key and the card's 10-byte key diversification
    data (the KDD its INITIALIZE UPDATE answers with)."""
    return StaticKeys(kdf3_key(master, kdd, 1), kdf3_key(master, kdd, 2),
                      kdf3_key(master, kdd, 3), version)


def session_keys(keys: StaticKeys, host_challenge: bytes, card_challenge: bytes
                 ) -> SessionKeys:
    """Amendment D 6.2.1: session keys for this pair of challenges."""
    _challenges(host_challenge, card_challenge)
    ctx = host_challenge + card_challenge
    return SessionKeys(kdf(keys.enc, Derivation.S_ENC, ctx, 128),
                       kdf(keys.mac, Derivation.S_MAC, ctx, 128),
                       kdf(keys.mac, Derivation.S_RMAC, ctx, 128))


def card_challenge(key_enc: bytes, sequence_counter: int, aid: bytes) -> bytes:
    """Pseudo-random card challenge (6.2.2.1): from Key-ENC, the 3-byte sequence counter and
    the AID of the security domain."""
    if not 0 <= sequence_counter <= 0xFFFFFF or not 5 <= len(aid) <= 16:
        raise SecureChannelError("sequence counter or AID out of range")
    return kdf(key_enc, Derivation.CARD_CHALLENGE, sequence_counter.to_bytes(3, "big") + aid,
               64)


def card_cryptogram(keys: SessionKeys, host_challenge: bytes, card_challenge: bytes) -> bytes:
    """The card's authentication cryptogram (6.2.2.2)."""
    _challenges(host_challenge, card_challenge)
    return kdf(keys.s_mac, Derivation.CARD_CRYPTOGRAM, host_challenge + card_challenge, 64)


def host_cryptogram(keys: SessionKeys, host_challenge: bytes, card_challenge: bytes) -> bytes:
    """The host's authentication cryptogram (6.2.2.3)."""
    _challenges(host_challenge, card_challenge)
    return kdf(keys.s_mac, Derivation.HOST_CRYPTOGRAM, host_challenge + card_challenge, 64)


def verify_cryptogram(expected: bytes, got: bytes, what: str) -> None:
    """Constant-time compare; ``SecureChannelError`` naming ``what`` on a mismatch."""
    if len(got) != len(expected) or not hmac.compare_digest(expected, got):
        raise SecureChannelError(f"{what} does not verify")


def _challenges(host: bytes, card: bytes) -> None:
    if len(host) != CHALLENGE_LEN or len(card) != CHALLENGE_LEN:
        raise SecureChannelError("challenges are 8 bytes each")


# -- Key-DEK ------------------------------------------------------------------------------

def encrypt_sensitive(dek: bytes, data: bytes) -> bytes:
    """Sensitive data under the static Key-DEK: AES-CBC, zero ICV (6.2.8). The caller pads
    (keys of 16 or 32 bytes need none)."""
    if not data or len(data) % BLOCK:
        raise SecureChannelError("sensitive data must be whole 16-byte blocks")
    return _aes_cbc(dek, bytes(BLOCK), data, encrypt=True)


def decrypt_sensitive(dek: bytes, data: bytes) -> bytes:
    """The card's side of ``encrypt_sensitive``."""
    if not data or len(data) % BLOCK:
        raise SecureChannelError("encrypted sensitive data must be whole 16-byte blocks")
    return _aes_cbc(dek, bytes(BLOCK), data, encrypt=False)


KEY_TYPE_AES = 0x88


def put_key_data(dek: bytes, key: bytes) -> bytes:
    """An AES-128 key as PUT KEY key data (Table 7-10): '88' '11' '10' <key under DEK> '03'
    <KCV>."""
    if len(key) != 16:
        raise KeyUsageError("only AES-128 keys are wrapped here")
    return (bytes([KEY_TYPE_AES, 0x11, 0x10]) + encrypt_sensitive(dek, key) + b"\x03"
            + kcv_aes(key))


def open_put_key_data(dek: bytes, data: bytes) -> bytes:
    """The card's side of ``put_key_data``: the clear key, its KCV checked."""
    if len(data) != 23 or data[:3] != bytes([KEY_TYPE_AES, 0x11, 0x10]) or data[19] != 3:
        raise SecureChannelError("not an AES-128 key data field (Table 7-10)")
    key = decrypt_sensitive(dek, data[3:19])
    verify_cryptogram(kcv_aes(key), data[20:23], "key check value")
    return key


# -- the channel --------------------------------------------------------------------------

@dataclass(frozen=True)
class Channel:
    """An open secure channel: keys, security level, MAC chaining value, encryption counter.

    The counter is the value used for the last command (0 right after EXTERNAL AUTHENTICATE;
    every command after it increments it, with or without data, 6.2.6)."""

    keys: SessionKeys = field(repr=False)
    level: int
    chaining: bytes = field(default=bytes(BLOCK), repr=False)
    counter: int = 0

    def has(self, bit: Level) -> bool:
        return bool(self.level & bit)

    def _icv(self, counter: int, response: bool) -> bytes:
        block = counter.to_bytes(BLOCK, "big")
        if response:
            block = b"\x80" + block[1:]
        return _aes_block(self.keys.s_enc, block)


@dataclass(frozen=True)
class Command:
    """A short C-APDU taken apart (``le`` None when absent)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    @classmethod
    def parse(cls, raw: bytes) -> Command:
        if len(raw) < 4:
            raise SecureChannelError("APDU shorter than 4 bytes")
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, b"", body[0])
        lc = body[0]
        if lc == 0 or len(body) not in (1 + lc, 2 + lc):
            raise SecureChannelError("not a short APDU (Lc does not match the data)")
        le = body[1 + lc] if len(body) == 2 + lc else None
        return cls(cla, ins, p1, p2, body[1:1 + lc], le)

    def encode(self) -> bytes:
        out = bytes([self.cla, self.ins, self.p1, self.p2])
        if self.data:
            if len(self.data) > 255:
                raise SecureChannelError("command data longer than a short APDU holds")
            out += bytes([len(self.data)]) + self.data
        if self.le is not None:
            out += bytes([self.le])
        return out


def begin(keys: SessionKeys, level: int) -> Channel:
    """The channel state before EXTERNAL AUTHENTICATE (zero MAC chaining value)."""
    if level not in LEVELS:
        raise SecureChannelError(f"security level {level:#04x} is not supported")
    return Channel(keys, level)


def _mac(keys: SessionKeys, chaining: bytes, cmd: Command, data: bytes) -> bytes:
    header = bytes([(cmd.cla & 0xF0) | CLA_SM, cmd.ins, cmd.p1, cmd.p2, len(data) + MAC_LEN])
    return aes_cmac(keys.s_mac, chaining + header + data)


def wrap_command(ch: Channel, apdu: bytes, *, encrypt: bool = True) -> tuple[Channel, bytes]:
    """Host: protect a plain command at the channel's level (C-DECRYPTION, then C-MAC over the
    header with the secure-messaging class). ``encrypt=False`` for EXTERNAL AUTHENTICATE,
    which is MACed only and does not count."""
    cmd = Command.parse(apdu)
    counter = ch.counter + 1 if encrypt else ch.counter
    data = cmd.data
    if encrypt and data and ch.has(Level.C_DECRYPTION):
        data = _aes_cbc(ch.keys.s_enc, ch._icv(counter, False), pad80(data), encrypt=True)
    if len(data) + MAC_LEN > 255:
        raise SecureChannelError("command too long for a short APDU once protected")
    full = _mac(ch.keys, ch.chaining, cmd, data)
    out = Command((cmd.cla & 0xF0) | CLA_SM, cmd.ins, cmd.p1, cmd.p2, data + full[:MAC_LEN],
                  cmd.le)
    return replace(ch, chaining=full, counter=counter), out.encode()


def unwrap_command(ch: Channel, apdu: bytes, *, decrypt: bool = True
                   ) -> tuple[Channel, Command]:
    """Card: check the C-MAC (and decrypt) of a protected command; the plain command (class
    without the secure-messaging bit) and the next channel state. ``SecureChannelError`` when
    the command is not protected, or its MAC or padding is wrong: the card then aborts the
    session."""
    cmd = Command.parse(apdu)
    if not cmd.cla & CLA_SM or len(cmd.data) < MAC_LEN:
        raise SecureChannelError("command lacks secure messaging")
    data, mac = cmd.data[:-MAC_LEN], cmd.data[-MAC_LEN:]
    full = _mac(ch.keys, ch.chaining, cmd, data)
    verify_cryptogram(full[:MAC_LEN], mac, "C-MAC")
    counter = ch.counter + 1 if decrypt else ch.counter
    if decrypt and data and ch.has(Level.C_DECRYPTION):
        if len(data) % BLOCK:
            raise SecureChannelError("encrypted command data is not whole blocks")
        data = unpad80(_aes_cbc(ch.keys.s_enc, ch._icv(counter, False), data, encrypt=False))
    plain = Command(cmd.cla & ~CLA_SM & 0xFF, cmd.ins, cmd.p1, cmd.p2, data, cmd.le)
    return replace(ch, chaining=full, counter=counter), plain


def _protected(sw: int) -> bool:
    """Responses that carry R-MAC/R-ENCRYPTION: '9000' and warnings '62xx'/'63xx' (6.2.5)."""
    return sw == 0x9000 or sw >> 8 in (0x62, 0x63)


def wrap_response(ch: Channel, data: bytes, sw: int) -> bytes:
    """Card: the R-APDU at the channel's level (R-ENCRYPTION, then R-MAC over the MAC
    chaining value, the data and the status word). An error status goes out alone."""
    sw_bytes = sw.to_bytes(2, "big")
    if not _protected(sw):
        return sw_bytes
    if data and ch.has(Level.R_ENCRYPTION):
        data = _aes_cbc(ch.keys.s_enc, ch._icv(ch.counter, True), pad80(data), encrypt=True)
    if ch.has(Level.R_MAC):
        data += aes_cmac(ch.keys.s_rmac, ch.chaining + data + sw_bytes)[:MAC_LEN]
    return data + sw_bytes


def unwrap_response(ch: Channel, data: bytes, sw: int) -> bytes:
    """Host: check the R-MAC (and decrypt) of a response; the plain response data.
    ``SecureChannelError`` if the R-MAC is missing or wrong."""
    if not _protected(sw):
        if data:
            raise SecureChannelError(f"error status {sw:04X} came with data")
        return b""
    sw_bytes = sw.to_bytes(2, "big")
    if ch.has(Level.R_MAC):
        if len(data) < MAC_LEN:
            raise SecureChannelError("response lacks its R-MAC")
        data, mac = data[:-MAC_LEN], data[-MAC_LEN:]
        expected = aes_cmac(ch.keys.s_rmac, ch.chaining + data + sw_bytes)[:MAC_LEN]
        verify_cryptogram(expected, mac, "R-MAC")
    if data and ch.has(Level.R_ENCRYPTION):
        if len(data) % BLOCK:
            raise SecureChannelError("encrypted response data is not whole blocks")
        data = unpad80(_aes_cbc(ch.keys.s_enc, ch._icv(ch.counter, True), data, encrypt=False))
    return data
