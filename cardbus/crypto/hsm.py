"""Role facades: the platform's, a provider's and a terminal's "HSM".

Each holds its keys in a ``KeyStore`` (encrypted at rest) by key id and usage and exposes
operations only: no method returns a clear key, PIN or (except to the terminal's own caller)
PAN. Key ids that travel carry their version (``tpk:T-1.v2``), so material made under an older
key version still opens after a rotation while new work uses the newest version.

Key ids: ``kbpk:<p>`` ``pin:<p>`` ``pan:<p>`` (provider keys the platform holds), ``tpk:<t>``
``tmk:<t>`` ``tpan:<t>`` (terminal PIN, MAC, PAN keys), ``sign:<who>``, ``token:<who>``,
``imk:<p>`` ``smi:<p>`` ``pvk:<p>`` ``pvd:<p>`` ``cardca:<p>`` ``load:<p>`` ``tac:<p>``
(provider-only keys: never in a key block; ``pvd`` seals PIN verification data, in its own AEAD
domain), ``isd:<p>`` (an issuer's master for its cards' security-domain keys; the platform gets
it by TR-31 to run card management), ``kex:<t>`` (terminal key agreement).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from datetime import date
from typing import Any, ClassVar, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cardbus.crypto import card_auth, emv, issuer_script, pin, scp03, transit
from cardbus.crypto.cache import ExpiringCache, NonceBudget
from cardbus.crypto.issued import CardProfile, SealedPurse
from cardbus.crypto.keys import KeyAlg, KeyUsage, kcv, new_key
from cardbus.crypto.keystore import KeyStore, StoredKey, b64d, b64e
from cardbus.crypto.pan import PanCipher, PanTokenizer
from cardbus.crypto.signing import MacSealer, Signer, Verifier, seal_event, verify_event
from cardbus.crypto.tr31 import unwrap_key_block, wrap_key_block
from cardbus.crypto.wrap import unwrap_for_terminal, wrap_for_terminal
from cardbus.errors import (
    CardAuthenticationError,
    CardBusError,
    KeyBlockHeaderMismatch,
    KeyUsageError,
    MissingKeyError,
    UnwrapError,
)
from cardbus.gp.session import PursePersonalisation
from schemas.base import EncryptedBlob, Event

E = TypeVar("E", bound=Event)
T = TypeVar("T")


def versioned(key_id: str, version: int) -> str:
    """``key_id`` with its version, as it travels: ``tpk:T-1.v2``."""
    return f"{key_id}.v{version}"


def split_versioned(vid: str) -> tuple[str, int]:
    """Inverse of ``versioned``; ``MissingKeyError`` if it names no version."""
    key_id, sep, ver = vid.rpartition(".v")
    if not sep or not ver.isdigit():
        raise MissingKeyError(f"key id {vid} carries no version")
    return key_id, int(ver)


class _Role:
    """Shared plumbing: a key store, per-key object caches, a signer."""

    def __init__(self, identity: str, keystore: KeyStore) -> None:
        self.identity = identity
        self.keys = keystore
        self._objects: ExpiringCache[tuple[str, str], Any] = ExpiringCache()
        self._budgets: dict[str, NonceBudget] = {}  # per key version: outlives the cache
        sign_id = f"sign:{identity}"
        self._ensure(sign_id, KeyUsage.SIGNING, KeyAlg.ED25519)
        v = self.keys.latest_version(sign_id)
        self.signer = Signer(versioned(sign_id, v),
                             self.keys.key(sign_id, KeyUsage.SIGNING, version=v))

    def _ensure(self, key_id: str, usage: KeyUsage, alg: KeyAlg) -> None:
        if key_id not in self.keys:
            self.keys.generate(key_id, usage, self.identity, alg)

    def _cached(self, kind: str, vid: str, make: Callable[[], T]) -> T:
        obj: T | None = self._objects.get((kind, vid))
        if obj is None:
            obj = self._objects.put((kind, vid), make())
        return obj

    def _key(self, vid: str, usage: KeyUsage, owner: str | None = None) -> bytes:
        key_id, version = split_versioned(vid)
        return self.keys.key(key_id, usage, owner=owner, version=version)

    def _latest(self, key_id: str) -> str:
        return versioned(key_id, self.keys.latest_version(key_id))

    def budget(self, vid: str) -> NonceBudget:
        """The AES-GCM encryptions key version ``vid`` has left (random nonces)."""
        return self._budgets.setdefault(vid, NonceBudget(vid))

    def _pan_cipher(self, vid: str, owner: str | None = None) -> PanCipher:
        return self._cached("pan", vid, lambda: PanCipher(
            vid, self._key(vid, KeyUsage.PAN_ENC, owner), budget=self.budget(vid)))

    def sign_event(self, event: E) -> E:
        """The event sealed with this role's identity key."""
        return seal_event(event, self.signer)

    @property
    def verifier(self) -> Verifier:
        """This role's public identity (key id + Ed25519 public key)."""
        return self.signer.verifier


class PlatformHsm(_Role):
    """The trusted platform's key module."""

    def __init__(self, keystore: KeyStore) -> None:
        super().__init__("platform", keystore)
        self._ensure("token:platform", KeyUsage.PAN_TOKEN, KeyAlg.HMAC)
        self._tokenizer = PanTokenizer(self.keys.key("token:platform", KeyUsage.PAN_TOKEN))

    # -- provider keys -------------------------------------------------------------------

    def import_provider_kbpk(self, provider_id: str, kbpk: bytes) -> StoredKey:
        """Store the provider<->platform KBPK (agreed in a key ceremony, out of band)."""
        return self.keys.put(f"kbpk:{provider_id}", KeyUsage.KBPK, f"provider:{provider_id}",
                             KeyAlg.AES, kbpk)

    def accept_key_block(self, provider_id: str, usage: KeyUsage, key_block: str,
                         version: int | None = None) -> StoredKey:
        """Open a provider's TR-31 block (header checked) and store the key encrypted, under
        the provider's own version number when given (so both sides name it alike)."""
        owner = f"provider:{provider_id}"
        kbpk = self.keys.key(f"kbpk:{provider_id}", KeyUsage.KBPK, owner=owner)
        key, block_version = unwrap_key_block(kbpk, key_block, usage)
        if block_version != "00":  # the header names the key's version: it must be this one
            if not block_version.isdigit() or (version is not None
                                               and int(block_version) != version):
                raise KeyBlockHeaderMismatch(
                    f"key block version {block_version} is not the provisioned v{version}")
            version = int(block_version)
        prefix = _BLOCK_PREFIX[usage]
        key_id = f"{prefix}:{provider_id}"
        try:
            existing = self.keys.record(key_id, version)
        except MissingKeyError:
            existing = None
        if existing is not None and existing.status == "revoked":
            raise KeyUsageError(f"{key_id} v{existing.version} is revoked: not accepted again")
        if existing is not None and existing.kcv == kcv(key, KeyAlg.AES) and (
                version is None or existing.version == version):
            return existing  # the same block again: idempotent
        return self.keys.put(key_id, usage, owner, KeyAlg.AES, key, version=version)

    def isd_card_keys(self, issuer_id: str, kdd: bytes) -> scp03.StaticKeys:
        """One card's SCP03 key set, diversified from the issuer's ISD master (received by
        ``accept_key_block``) with the card's key diversification data. For the card manager's
        session only: it lives in that session's memory and is never stored."""
        master = self.keys.key(f"isd:{issuer_id}", KeyUsage.GP_ISD_MASTER,
                               owner=f"provider:{issuer_id}")
        return scp03.diversify_kdf3(master, kdd)

    def open_purse(self, operator_id: str, purse: SealedPurse, context: str,
                   label: str) -> PursePersonalisation:
        """An operator's new e-purse (``ProviderHsm.purse_for_platform``) opened for one card
        manager session: its keys out of their TR-31 blocks (E6, exportable only to the card),
        its number out of the operator's PAN key. Session memory only; STORE DATA encrypts the
        keys under the card's Key-DEK."""
        owner = f"provider:{operator_id}"
        kbpk = self.keys.key(f"kbpk:{operator_id}", KeyUsage.KBPK, owner=owner)
        load, _ = unwrap_key_block(kbpk, purse.load_block, KeyUsage.CARD_PERSO)
        tac, _ = unwrap_key_block(kbpk, purse.tac_block, KeyUsage.CARD_PERSO)
        if not purse.number.key_id.startswith(f"pan:{operator_id}.v"):
            raise UnwrapError(f"purse number is under {purse.number.key_id}, not {operator_id}")
        number = self._pan_cipher(purse.number.key_id, owner).decrypt(purse.number, context)
        return PursePersonalisation(number, purse.card_token, load, tac, label)

    # -- terminals -----------------------------------------------------------------------

    def enroll_terminal(self, terminal_id: str, terminal_public: bytes) -> list[EncryptedBlob]:
        """New versions of the terminal's PIN, MAC and PAN keys, wrapped to its public key.

        Also the way to rotate them: old versions stay to open older material."""
        owner = f"terminal:{terminal_id}"
        blobs = []
        for prefix, usage, alg in (("tpk", KeyUsage.PIN_ENC, KeyAlg.AES),
                                   ("tmk", KeyUsage.MAC, KeyAlg.HMAC),
                                   ("tpan", KeyUsage.PAN_ENC, KeyAlg.AES)):
            rec = self.keys.generate(f"{prefix}:{terminal_id}", usage, owner, alg)
            key = self.keys.key(rec.key_id, usage, version=rec.version)
            blobs.append(wrap_for_terminal(terminal_public, terminal_id,
                                           versioned(rec.key_id, rec.version), usage, key))
        return blobs

    def verify_terminal_mac(self, terminal_id: str, event: Event) -> None:
        """Check the terminal MAC seal on ``event`` (``MacInvalid`` on any failure)."""
        owner = f"terminal:{terminal_id}"

        def lookup(vid: str) -> MacSealer | None:
            if not vid.startswith(f"tmk:{terminal_id}.v"):
                return None
            try:
                return self._cached("mac", vid, lambda: MacSealer(
                    vid, self._key(vid, KeyUsage.MAC, owner)))
            except (MissingKeyError, KeyUsageError):
                return None

        verify_event(event, lookup)

    # -- PIN and PAN, translated inside ----------------------------------------------------

    def _terminal_pan(self, terminal_id: str, pan_blob: EncryptedBlob, context: str) -> str:
        if not pan_blob.key_id.startswith(f"tpan:{terminal_id}.v"):
            raise UnwrapError(f"PAN blob is under {pan_blob.key_id}, not terminal {terminal_id}")
        return self._pan_cipher(pan_blob.key_id, f"terminal:{terminal_id}").decrypt(pan_blob,
                                                                                     context)

    def translate_pin(self, terminal_id: str, provider_id: str, pin_key_id: str,
                      pin_block: bytes, pan_blob: EncryptedBlob, context: str) -> tuple[str, bytes]:
        """PIN block under the terminal's PIN key -> under the provider's PIN key.

        Returns ``(provider pin key id, new block)``; the PIN and PAN stay inside."""
        if not pin_key_id.startswith(f"tpk:{terminal_id}.v"):
            raise KeyUsageError(f"{pin_key_id} is not a PIN key of terminal {terminal_id}")
        src = self._key(pin_key_id, KeyUsage.PIN_ENC, f"terminal:{terminal_id}")
        dst_id = self._latest(f"pin:{provider_id}")
        dst = self._key(dst_id, KeyUsage.PIN_ENC, f"provider:{provider_id}")
        pan = self._terminal_pan(terminal_id, pan_blob, context)
        return dst_id, pin.translate_pin_block(src, dst, pin_block, pan)

    def reencrypt_pan(self, terminal_id: str, provider_id: str, pan_blob: EncryptedBlob,
                      context: str) -> EncryptedBlob:
        """The terminal's encrypted PAN re-encrypted to the provider's PAN key."""
        pan = self._terminal_pan(terminal_id, pan_blob, context)
        dst = self._pan_cipher(self._latest(f"pan:{provider_id}"), f"provider:{provider_id}")
        return dst.encrypt(pan, context)

    def same_translation(self, terminal_id: str, pan_blob: EncryptedBlob, context: str,
                         provider_id: str, provider_pan: EncryptedBlob,
                         pins: tuple[str, bytes, str, bytes] | None = None) -> bool:
        """Whether ``provider_pan`` (and ``pins``: terminal PIN key id and block, provider PIN
        key id and block) hold the PAN (and PIN) of the terminal's ``pan_blob``: how the audit
        checks a translation whose fresh encryption it cannot re-derive. Nothing clear leaves."""
        try:
            if not provider_pan.key_id.startswith(f"pan:{provider_id}.v"):
                return False
            pan = self._terminal_pan(terminal_id, pan_blob, context)
            other = self._pan_cipher(provider_pan.key_id, f"provider:{provider_id}").decrypt(
                provider_pan, context)
            if not hmac.compare_digest(pan, other):
                return False
            if pins is None:
                return True
            src_id, src_block, dst_id, dst_block = pins
            if not (src_id.startswith(f"tpk:{terminal_id}.v")
                    and dst_id.startswith(f"pin:{provider_id}.v")):
                return False
            src = self._key(src_id, KeyUsage.PIN_ENC, f"terminal:{terminal_id}")
            dst = self._key(dst_id, KeyUsage.PIN_ENC, f"provider:{provider_id}")
            return pin.same_pin(src, src_block, dst, dst_block, pan)
        except CardBusError:
            return False

    def pan_token(self, terminal_id: str, pan_blob: EncryptedBlob, context: str) -> str:
        """The platform's token for the PAN in a terminal's blob."""
        return self._tokenizer.token(self._terminal_pan(terminal_id, pan_blob, context))

    def bin_of(self, terminal_id: str, pan_blob: EncryptedBlob, context: str) -> str:
        """The first six digits of the PAN (for routing by BIN)."""
        return self._terminal_pan(terminal_id, pan_blob, context)[:6]


_BLOCK_PREFIX = {KeyUsage.PIN_ENC: "pin", KeyUsage.PAN_ENC: "pan",
                 KeyUsage.GP_ISD_MASTER: "isd"}


class ProviderHsm(_Role):
    """A provider's (bank's or transit operator's) security module."""

    def __init__(self, provider_id: str, keystore: KeyStore) -> None:
        self.provider_id = provider_id
        super().__init__(f"provider:{provider_id}", keystore)
        p = provider_id
        for key_id, usage, alg in ((f"imk:{p}", KeyUsage.EMV_IMK_AC, KeyAlg.TDES),
                                   (f"pin:{p}", KeyUsage.PIN_ENC, KeyAlg.AES),
                                   (f"pvk:{p}", KeyUsage.PIN_VERIFY, KeyAlg.TDES),
                                   (f"pvd:{p}", KeyUsage.PIN_DATA, KeyAlg.AES),
                                   (f"pan:{p}", KeyUsage.PAN_ENC, KeyAlg.AES),
                                   (f"token:{p}", KeyUsage.PAN_TOKEN, KeyAlg.HMAC),
                                   (f"cardca:{p}", KeyUsage.CARD_AUTH_CA, KeyAlg.ED25519),
                                   (f"load:{p}", KeyUsage.TRANSIT_LOAD, KeyAlg.TDES),
                                   (f"tac:{p}", KeyUsage.TRANSIT_TAC, KeyAlg.TDES)):
            self._ensure(key_id, usage, alg)
        self._ensure(f"smi:{p}", KeyUsage.EMV_IMK_SMI, KeyAlg.TDES)
        if f"isd:{p}" not in self.keys:  # AES-128: the SCP03 key sets here are AES-128
            self.keys.put(f"isd:{p}", KeyUsage.GP_ISD_MASTER, self.identity, KeyAlg.AES,
                          new_key(KeyAlg.AES, 16))
        self._tokenizer = PanTokenizer(self.keys.key(f"token:{p}", KeyUsage.PAN_TOKEN))
        self._icc_keys: ExpiringCache[tuple[str, str, str], bytes] = ExpiringCache(
            max_entries=self._ICC_KEYS_KEPT)
        self._last_pan: tuple[tuple[str, str, str, str], str] | None = None
        self._last_cryptogram: tuple[tuple[Any, ...], bytes] | None = None
        ca_id = self._latest(f"cardca:{p}")
        self.card_ca = Signer(ca_id, self._key(ca_id, KeyUsage.CARD_AUTH_CA))

    def _k(self, prefix: str, usage: KeyUsage, version: int | None = None) -> bytes:
        return self.keys.key(f"{prefix}:{self.provider_id}", usage, version=version)

    # -- provisioning --------------------------------------------------------------------

    def import_kbpk(self, kbpk: bytes) -> StoredKey:
        """Store the provider<->platform KBPK (same key ceremony as the platform's)."""
        return self.keys.put(f"kbpk:{self.provider_id}", KeyUsage.KBPK, self.identity,
                             KeyAlg.AES, kbpk)

    def export_key_block(self, usage: KeyUsage) -> str:
        """The newest PIN, PAN or ISD master key in a TR-31 block under the KBPK, for the
        platform."""
        prefix = _BLOCK_PREFIX.get(usage)
        if prefix is None:
            raise KeyUsageError(f"{usage.value} keys are not exported to the platform")
        rec = self.keys.record(f"{prefix}:{self.provider_id}")
        return wrap_key_block(self._k("kbpk", KeyUsage.KBPK), usage,
                              self._k(prefix, usage, rec.version),
                              version_num=f"{rec.version % 100:02d}")

    @property
    def card_ca_verifier(self) -> Verifier:
        """The card-authentication public key terminals need."""
        return self.card_ca.verifier

    # -- cards ---------------------------------------------------------------------------

    def issue_card(self, pan: str, pin_value: str, expiry: str, psn: str = "00") -> CardProfile:
        """Personalise a card: ICC master key, card key pair + certificate, PVV."""
        icc_mk = emv.derive_icc_master_key(self._k("imk", KeyUsage.EMV_IMK_AC), pan, psn)
        priv, pub = card_auth.new_card_key()
        token = self._tokenizer.token(pan)
        cert = card_auth.issue_card_certificate(self.card_ca, self.provider_id, pub, pan, token,
                                                expiry)
        pvv = pin.visa_pvv(self._k("pvk", KeyUsage.PIN_VERIFY), "1", pin_value, pan)
        kdd = new_key(KeyAlg.AES, 10)  # the card's key diversification data: random, public
        return CardProfile(pan=pan, psn=psn, expiry=expiry, icc_master_key=icc_mk,
                           card_private_key=priv, certificate=cert, pan_token=token, pvv=pvv,
                           icc_mk_smi=emv.derive_icc_master_key(
                               self._k("smi", KeyUsage.EMV_IMK_SMI), pan, psn),
                           isd_kdd=kdd, isd_keys=self.isd_card_keys(kdd))

    def isd_card_keys(self, kdd: bytes) -> scp03.StaticKeys:
        """The SCP03 key set of this issuer's card with key diversification data ``kdd``."""
        return scp03.diversify_kdf3(self._k("isd", KeyUsage.GP_ISD_MASTER), kdd)

    def issuer_script(self, pan_blob: EncryptedBlob, context: str, psn: str, atc: int,
                      application_cryptogram: bytes, *, block: bool) -> bytes:
        """APPLICATION BLOCK (or UNBLOCK) with its script MAC for the card in ``pan_blob``,
        bound to the transaction's ATC and cryptogram."""
        mk_smi = emv.derive_icc_master_key(self._k("smi", KeyUsage.EMV_IMK_SMI),
                                           self._pan(pan_blob, context), psn)
        make = issuer_script.application_block if block else issuer_script.application_unblock
        return make(mk_smi, atc, application_cryptogram)

    def _pan(self, pan_blob: EncryptedBlob, context: str) -> str:
        """The PAN in ``pan_blob``. One decision asks for it up to five times (token, ARQC,
        ARPC, PIN), so the last one opened is kept for the next call with the same blob."""
        if not pan_blob.key_id.startswith(f"pan:{self.provider_id}.v"):
            raise UnwrapError(f"PAN blob is under {pan_blob.key_id}, not ours")
        which = (pan_blob.key_id, pan_blob.nonce, pan_blob.ct, context)
        if self._last_pan is not None and self._last_pan[0] == which:
            return self._last_pan[1]
        pan = self._pan_cipher(pan_blob.key_id, self.identity).decrypt(pan_blob, context)
        self._last_pan = (which, pan)
        return pan

    def pan_token(self, pan_blob: EncryptedBlob, context: str) -> str:
        """This provider's token for the card (its card records' key)."""
        return self._tokenizer.token(self._pan(pan_blob, context))

    def authorize_cryptogram(self, pan_blob: EncryptedBlob, context: str, psn: str, atc: int,
                             data: bytes, arqc: bytes, arc: bytes | None, *,
                             last_atc: int | None) -> bytes:
        """Check ATC freshness and the ARQC, then answer ARPC method 1 for ``arc`` (empty
        bytes when ``arc`` is None: the check alone).

        A decision checks the ARQC first and asks for the ARPC once its response code is
        known. The session key of the last cryptogram that verified is kept for that second
        call with the same inputs (same IMK, card, ATC, data and ARQC), so it neither derives
        the key nor verifies the ARQC again; any other input goes the whole way."""
        emv.check_atc(atc, last_atc)
        imk_id = self._latest(f"imk:{self.provider_id}")
        which = (imk_id, pan_blob.key_id, pan_blob.nonce, pan_blob.ct, context, psn, atc, data,
                 arqc)
        if self._last_cryptogram is not None and self._last_cryptogram[0] == which:
            sk = self._last_cryptogram[1]
        else:
            sk = emv.derive_session_key(
                self._icc_master_key(imk_id, self._pan(pan_blob, context), psn), atc)
            emv.verify_arqc(sk, data, arqc)
            self._last_cryptogram = (which, sk)
        return b"" if arc is None else emv.generate_arpc_method1(sk, arqc, arc)

    _ICC_KEYS_KEPT = 65_536

    def _icc_master_key(self, imk_id: str, pan: str, psn: str) -> bytes:
        """The card's ICC master key (option A, from the IMK version ``imk_id``), kept per card
        inside this HSM object: two TDES operations and a parity pass fewer per cryptogram.
        Kept by IMK version and PAN token (never the clear PAN or key bytes) for at most
        ``KEY_TTL_S``, the oldest dropped past ``_ICC_KEYS_KEPT`` cards."""
        which = (imk_id, self._tokenizer.token(pan), psn)
        key = self._icc_keys.get(which)
        if key is None:
            imk = self._key(imk_id, KeyUsage.EMV_IMK_AC)
            key = self._icc_keys.put(which, emv.derive_icc_master_key(imk, pan, psn))
        return key

    def arpc_method2(self, pan_blob: EncryptedBlob, context: str, psn: str, atc: int,
                     arqc: bytes, csu: bytes) -> bytes:
        """ARPC method 2 for a card (after its ARQC was verified)."""
        icc = self._icc_master_key(self._latest(f"imk:{self.provider_id}"),
                                   self._pan(pan_blob, context), psn)
        return emv.generate_arpc_method2(emv.derive_session_key(icc, atc), arqc, csu)

    def verify_pin(self, pin_key_id: str, pin_block: bytes, pan_blob: EncryptedBlob,
                   context: str, pvv: str, pvki: str = "1") -> bool:
        """True if the PIN block (under our PIN key) matches the card's stored PVV."""
        key = self._key(pin_key_id, KeyUsage.PIN_ENC, self.identity)
        return pin.verify_pin_pvv(key, pin_block, self._pan(pan_blob, context),
                                  self._k("pvk", KeyUsage.PIN_VERIFY), pvki, pvv)

    def _pin_data(self, vid: str) -> AESGCM:
        return self._cached("pvd", vid, lambda: AESGCM(self._key(vid, KeyUsage.PIN_DATA,
                                                                 self.identity)))

    @staticmethod
    def _pin_data_aad(vid: str, pan_token: str) -> bytes:
        return f"cardbus-pin-data-v1|{vid}|{pan_token}".encode()

    def seal_card_secret(self, value: str, pan_token: str) -> EncryptedBlob:
        """A card's PIN verification data (its PVV) encrypted under the provider-only PIN data
        key (``pvd``, never exported: the platform holds the PAN key, not this one), bound to
        the card's token in its own AEAD domain, so ledger records and events never hold it
        in clear and no PAN blob or payment context can stand in for it."""
        vid = self._latest(f"pvd:{self.provider_id}")
        self.budget(vid).spend()
        nonce = os.urandom(12)
        ct = self._pin_data(vid).encrypt(nonce, value.encode("ascii"),
                                         self._pin_data_aad(vid, pan_token))
        return EncryptedBlob(key_id=vid, alg="AES-256-GCM", nonce=b64e(nonce), ct=b64e(ct))

    def _open_card_secret(self, blob: EncryptedBlob, pan_token: str) -> str:
        if blob.alg != "AES-256-GCM" or not blob.key_id.startswith(f"pvd:{self.provider_id}.v"):
            raise UnwrapError(f"sealed PVV is under {blob.key_id}, not our PIN data key")
        try:
            value = self._pin_data(blob.key_id).decrypt(
                b64d(blob.nonce), b64d(blob.ct), self._pin_data_aad(blob.key_id, pan_token))
        except (InvalidTag, ValueError):
            raise UnwrapError("sealed PVV does not open (another card, or tampered)") from None
        return value.decode("ascii")

    def verify_pin_sealed(self, pin_key_id: str, pin_block: bytes, pan_blob: EncryptedBlob,
                          context: str, pvv_blob: EncryptedBlob, pan_token: str,
                          pvki: str = "1") -> bool:
        """``verify_pin`` against a PVV kept sealed by ``seal_card_secret``."""
        pvv = self._open_card_secret(pvv_blob, pan_token)
        return self.verify_pin(pin_key_id, pin_block, pan_blob, context, pvv, pvki)

    # -- transit (this provider as an operator) ------------------------------------------

    def transit_card_token(self, card_no: str) -> str:
        """Personalisation: the token that stands for a transit card on the bus (the card's
        number never leaves the card)."""
        return self._tokenizer.token(card_no)

    def transit_card_keys(self, card_token: str) -> tuple[bytes, bytes]:
        """Personalisation: the card's (DLK load key, DTK TAC key), diversified by its token."""
        div = transit.diversifier(card_token)
        return (transit.derive_card_key(self._k("load", KeyUsage.TRANSIT_LOAD), div),
                transit.derive_card_key(self._k("tac", KeyUsage.TRANSIT_TAC), div))

    def purse_for_platform(self, card_no: str, context: str) -> SealedPurse:
        """A purse to install on a card through the platform's card manager: its token, its
        number encrypted under our PAN key (bound to ``context``), its keys in TR-31 blocks."""
        token = self.transit_card_token(card_no)
        kbpk = self._k("kbpk", KeyUsage.KBPK)
        dlk, dtk = self.transit_card_keys(token)
        cipher = self._pan_cipher(self._latest(f"pan:{self.provider_id}"), self.identity)
        return SealedPurse(token, cipher.encrypt(card_no, context),
                           wrap_key_block(kbpk, KeyUsage.CARD_PERSO, dlk),
                           wrap_key_block(kbpk, KeyUsage.CARD_PERSO, dtk),
                           kcv(dlk, KeyAlg.TDES), kcv(dtk, KeyAlg.TDES))

    def authorize_load(self, card_token: str, card_random: bytes, online_seq: int, balance: int,
                       amount: int, terminal_id: str, date_time: str, mac1: bytes) -> bytes:
        """Verify the card's MAC1 and answer MAC2 authorising the load."""
        dlk = transit.derive_card_key(self._k("load", KeyUsage.TRANSIT_LOAD),
                                      transit.diversifier(card_token))
        transit.verify_card_mac1(dlk, card_random, online_seq, balance, amount, terminal_id,
                                 mac1)
        return transit.operator_mac2(dlk, card_random, online_seq, amount, terminal_id,
                                     date_time)

    def verify_purse_probe(self, card_token: str, card_random: bytes, online_seq: int,
                           balance: int, amount: int, mac2: bytes, mac1: bytes) -> None:
        """Verify the card's MAC1 over a probe made with the challenge of ``mac2`` (the card's
        balance and online sequence number, as the card itself states them)."""
        dlk = transit.derive_card_key(self._k("load", KeyUsage.TRANSIT_LOAD),
                                      transit.diversifier(card_token))
        transit.verify_card_mac1(dlk, card_random, online_seq, balance, amount,
                                 transit.probe_terminal_id(mac2), mac1)

    def verify_load_tac(self, card_token: str, new_balance: int, online_seq: int, amount: int,
                        terminal_id: str, date_time: str, tac: bytes) -> None:
        """Verify the card's proof of load."""
        dtk = transit.derive_card_key(self._k("tac", KeyUsage.TRANSIT_TAC),
                                      transit.diversifier(card_token))
        transit.verify_card_tac(dtk, new_balance, online_seq, amount, terminal_id, date_time,
                                tac)


class TerminalHsm(_Role):
    """The reader agent's sealed terminal key store and its operations."""

    _WRAPPED: ClassVar[dict[str, KeyUsage]] = {
        "tpk": KeyUsage.PIN_ENC, "tmk": KeyUsage.MAC, "tpan": KeyUsage.PAN_ENC}

    def __init__(self, terminal_id: str, keystore: KeyStore) -> None:
        self.terminal_id = terminal_id
        super().__init__(f"terminal:{terminal_id}", keystore)
        self._ensure(f"kex:{terminal_id}", KeyUsage.TERMINAL_KEX, KeyAlg.X25519)
        self._kex = X25519PrivateKey.from_private_bytes(
            self.keys.key(f"kex:{terminal_id}", KeyUsage.TERMINAL_KEX))
        self._card_cas: dict[str, Verifier] = {}

    def public_kex(self) -> bytes:
        """The X25519 public key the platform wraps terminal keys to."""
        return self._kex.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def install(self, blob: EncryptedBlob) -> StoredKey:
        """Unwrap a delivered key (only this terminal can) into the sealed key store."""
        key_id, version = split_versioned(blob.key_id)
        prefix, _, tid = key_id.partition(":")
        usage = self._WRAPPED.get(prefix)
        if usage is None or tid != self.terminal_id:
            raise UnwrapError(f"{blob.key_id} is not a key for terminal {self.terminal_id}")
        key = unwrap_for_terminal(self._kex, self.terminal_id, usage, blob)
        alg = KeyAlg.HMAC if usage is KeyUsage.MAC else KeyAlg.AES
        return self.keys.put(key_id, usage, self.identity, alg, key, version=version)

    def trust_card_ca(self, verifier: Verifier) -> None:
        """Add a provider's card-authentication public key."""
        self._card_cas[verifier.key_id] = verifier

    def pin_block(self, pin_value: str, pan: str) -> tuple[str, bytes]:
        """(PIN key id, format 4 PIN block) under the newest terminal PIN key."""
        vid = self._latest(f"tpk:{self.terminal_id}")
        return vid, pin.make_pin_block(self._key(vid, KeyUsage.PIN_ENC), pin_value, pan)

    def encrypt_pan(self, pan: str, context: str) -> EncryptedBlob:
        """The PAN encrypted for the platform under the newest terminal PAN key."""
        return self._pan_cipher(self._latest(f"tpan:{self.terminal_id}")).encrypt(pan, context)

    def mac_event(self, event: E) -> E:
        """The event sealed with the newest terminal MAC key."""
        vid = self._latest(f"tmk:{self.terminal_id}")
        sealer = self._cached("mac", vid, lambda: MacSealer(vid, self._key(vid, KeyUsage.MAC)))
        return seal_event(event, sealer)

    def verify_card(self, cert: card_auth.CardCertificate, unpredictable_number: bytes,
                    atc: int, signature: bytes, *, today: date, pan: str | None = None) -> None:
        """Card authentication against the trusted provider key named in the certificate."""
        ca = self._card_cas.get(cert.ca_key_id)
        if ca is None:
            raise CardAuthenticationError(f"no trusted card-auth key {cert.ca_key_id}")
        card_auth.verify_card_authentication(cert, ca, unpredictable_number, atc, signature,
                                             today=today, pan=pan)
