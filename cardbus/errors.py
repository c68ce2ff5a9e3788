"""CardBus errors: one root, a stable ``code`` and a ``retriable`` flag on each.

The tree::

    CardBusError
    ├── ConfigError                 bad or missing configuration (a missing key file, a bad flag)
    │   └── MissingKeyError         a required key is not there; never a silent default
    ├── ServiceError                a local service is not running or did not start
    │   ├── BrokerError             the Kafka broker (deploy/ broker, or the configured cluster)
    │   ├── PcscError               pcscd / the PC/SC layer
    │   ├── IsoHostError            the local ISO 8583 bank host (jPOS) did not start or stop
    │   └── IsoLinkError            the ISO 8583 link to a bank host is down or timed out
    ├── BusAccessError              the Kafka cluster refused this party
    │   ├── BusAuthenticationError  wrong or unknown credentials, or a client without TLS
    │   └── BusAuthorizationError   no ACL grants the party this operation
    ├── DecodeError                 bytes from the bus that do not fit the schema (-> dead letter)
    ├── EncodeError                 an event that may not go on the bus (wrong topic, too large)
    ├── CryptoError                 anything the crypto core refuses
    │   ├── KeyUsageError           a key used for something its usage does not allow
    │   ├── KeyBlockError           a TR-31 key block that is malformed or does not match
    │   │   └── KeyBlockHeaderMismatch  a sound block whose usage/mode/exportability is not ours
    │   ├── UnwrapError             a wrapped key that does not open (wrong terminal, tampering)
    │   ├── SignatureInvalid        an event signature that does not verify
    │   ├── MacInvalid              a MAC (terminal MAC, load MAC) that does not verify
    │   ├── CryptogramInvalid       an ARQC / ARPC / TC that does not verify
    │   │   └── AtcReplayed         an ATC not above the last one seen for the card
    │   ├── CardAuthenticationError a card that cannot prove it holds its key
    │   ├── PinBlockError           a PIN block that is malformed or does not decrypt
    │   └── SecureChannelError      a GlobalPlatform secure channel step that does not verify
    ├── CardError                   the card dialogue failed (removed card, bad status word)
    └── CardManagementRefused       an issuer's policy or a card refuses a card-management step

Infrastructure errors (aiokafka, pyscard, OSError) are converted at the edge, where they
happen, into one of these, so callers handle one family.
"""

from __future__ import annotations


class CardBusError(Exception):
    """Root of every error CardBus raises on purpose."""

    code = "cardbus_error"
    retriable = False


class ConfigError(CardBusError):
    """Configuration is missing or wrong."""

    code = "config"


class MissingKeyError(ConfigError):
    """A key that must be provided is missing."""

    code = "missing_key"


class ServiceError(CardBusError):
    """A local service is not running or failed to start."""

    code = "service"
    retriable = True


class BrokerError(ServiceError):
    """The Kafka broker is not reachable, not running, or failed to start."""

    code = "broker"


class PcscError(ServiceError):
    """pcscd or the PC/SC layer is not available."""

    code = "pcsc"


class IsoHostError(ServiceError):
    """The local ISO 8583 bank host (jPOS) is not running or failed to start."""

    code = "iso_host"
    retriable = False


class IsoLinkError(ServiceError):
    """The ISO 8583 link to a bank host is down, or the host did not answer in time."""

    code = "iso_link"


class BusAccessError(CardBusError):
    """The Kafka cluster refused this party (authentication or authorization)."""

    code = "bus_access"

    def __init__(self, message: str, *, principal: str = "", operation: str = "",
                 resource: str = "") -> None:
        super().__init__(message)
        self.principal = principal
        self.operation = operation
        self.resource = resource


class BusAuthenticationError(BusAccessError):
    """The cluster did not accept the party's credentials, or the client spoke without TLS."""

    code = "bus_authentication"


class BusAuthorizationError(BusAccessError):
    """No ACL grants the party the operation it asked for."""

    code = "bus_authorization"


class DecodeError(CardBusError):
    """Bytes from the bus do not decode into an event of the topic's schema."""

    code = "decode"

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class EncodeError(CardBusError):
    """An event cannot be encoded for the bus: wrong topic for its type, or too large."""

    code = "encode"

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class CryptoError(CardBusError):
    """The crypto core refused an operation."""

    code = "crypto"


class KeyUsageError(CryptoError):
    """A key was asked to do something its usage does not allow."""

    code = "key_usage"


class KeyBlockError(CryptoError):
    """A TR-31 key block is malformed or its header does not match what is provisioned."""

    code = "key_block"


class KeyBlockHeaderMismatch(KeyBlockError):
    """A TR-31 block that opens but whose header usage/mode/exportability is not provisioned."""

    code = "key_block_header_mismatch"


class UnwrapError(CryptoError):
    """A wrapped key does not open (wrong recipient, wrong binding, tampering)."""

    code = "unwrap"


class SignatureInvalid(CryptoError):
    """A signature does not verify."""

    code = "signature_invalid"


class MacInvalid(CryptoError):
    """A MAC does not verify."""

    code = "mac_invalid"


class CryptogramInvalid(CryptoError):
    """An application cryptogram (ARQC, ARPC, TC) does not verify."""

    code = "cryptogram_invalid"


class AtcReplayed(CryptogramInvalid):
    """A cryptogram whose ATC is not above the last ATC seen for that card (a replay)."""

    code = "atc_replayed"


class CardAuthenticationError(CryptoError):
    """A card failed to prove that it holds its private key, or its certificate is bad."""

    code = "card_authentication"


class PinBlockError(CryptoError):
    """A PIN block is malformed or does not decrypt to a valid PIN."""

    code = "pin_block"


class SecureChannelError(CryptoError):
    """A GlobalPlatform secure channel step failed: cryptogram, MAC, padding or sequence."""

    code = "secure_channel"


class CardError(CardBusError):
    """The card dialogue failed: card removed, unsupported card, or an error status word."""

    code = "card"
    retriable = True


class CardManagementRefused(CardBusError):
    """A card-management operation is not allowed (issuer policy) or the card refused it."""

    code = "card_management_refused"
