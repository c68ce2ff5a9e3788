"""What the card and its manager agree on (GlobalPlatform Card Specification v2.3).

The load files a CardBus card carries have proprietary AIDs (ISO/IEC 7816-5 category 'F',
unregistered: 'F0' 'C' 'B' ...); the instances take the issuer's or operator's AID at INSTALL.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

ISD_AID = bytes.fromhex("A000000151000000")  # the GlobalPlatform issuer security domain
CLA_GP = 0x80
CLA_ISO = 0x00


class Ins(IntEnum):
    """Instructions (GP CS v2.3 Table 11-10 and Amendment D)."""

    SELECT = 0xA4
    INITIALIZE_UPDATE = 0x50
    EXTERNAL_AUTHENTICATE = 0x82
    GET_STATUS = 0xF2
    INSTALL = 0xE6
    STORE_DATA = 0xE2
    SET_STATUS = 0xF0
    DELETE = 0xE4


class Sw(IntEnum):
    """Status words the card answers with."""

    OK = 0x9000
    SELECTED_INVALIDATED = 0x6283  # card locked (ISD select) / application blocked (EMV)
    AUTHENTICATION_FAILED = 0x6300  # wrong host cryptogram
    MORE_DATA = 0x6310  # GET STATUS: more entries follow
    WRONG_LENGTH = 0x6700
    SECURITY_NOT_SATISFIED = 0x6982  # no secure channel, wrong C-MAC, aborted session
    AUTH_METHOD_BLOCKED = 0x6983  # too many failed authentications
    CONDITIONS_NOT_SATISFIED = 0x6985  # out of order, wrong state
    SM_DATA_INCORRECT = 0x6988  # EMV issuer script with a wrong MAC
    WRONG_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    NOT_FOUND = 0x6A82  # application to select not found (or not selectable)
    WRONG_P1P2 = 0x6A86
    REFERENCED_DATA_NOT_FOUND = 0x6A88  # no such AID, key version, or nothing to report
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00


class CardLife(IntEnum):
    """Card life cycle states (ISD), GP CS Table 11-5."""

    OP_READY = 0x01
    INITIALIZED = 0x07
    SECURED = 0x0F
    CARD_LOCKED = 0x7F
    TERMINATED = 0xFF


class AppLife(IntEnum):
    """Application life cycle states (Table 11-4); LOCKED is b8 set over the current state."""

    INSTALLED = 0x03
    SELECTABLE = 0x07
    PERSONALIZED = 0x0F  # application-specific state: personalised by STORE DATA
    LOCKED_BIT = 0x80


LOAD_FILE_LOADED = 0x01

# Privileges, 3 bytes (Table 6-1): the ISD's, and none for a plain application.
ISD_PRIVILEGES = bytes.fromhex("9EFE80")
APP_PRIVILEGES = bytes(3)

# GET STATUS P1 (Table 11-33) and the tags of its answer (P2 = '02', Table 11-36).
STATUS_ISD, STATUS_APPS, STATUS_LOAD_FILES, STATUS_LOAD_FILES_MODULES = 0x80, 0x40, 0x20, 0x10
TAG_ENTRY, TAG_AID, TAG_LIFE, TAG_PRIVILEGES, TAG_LOAD_FILE, TAG_MODULE = (
    0xE3, 0x4F, 0x9F70, 0xC5, 0xC4, 0x84)

# INSTALL P1 (Table 11-41).
INSTALL_FOR_PERSONALIZATION = 0x20
INSTALL_AND_MAKE_SELECTABLE = 0x0C

# SET STATUS P1 (Table 11-63).
SET_STATUS_CARD, SET_STATUS_APP = 0x80, 0x40

# STORE DATA P1 (Table 11-85): last block, DGI format, encrypted data.
STORE_LAST, STORE_DGI, STORE_ENCRYPTED = 0x80, 0x08, 0x60

# Security levels offered (Amendment D Table 7-3).
LEVEL_CMAC, LEVEL_CMAC_CDEC, LEVEL_CMAC_RMAC, LEVEL_CMAC_CDEC_RMAC, LEVEL_FULL = (
    0x01, 0x03, 0x11, 0x13, 0x33)

AppKind = Literal["emv", "transit"]


@dataclass(frozen=True)
class LoadFile:
    """Code on the card: an executable load file and the module its instances run."""

    aid: bytes
    module: bytes
    kind: AppKind
    name: str


EMV_LOAD_FILE = LoadFile(bytes.fromhex("F0434200000001"), bytes.fromhex("F043420000000101"),
                         "emv", "EMV payment application")
TRANSIT_LOAD_FILE = LoadFile(bytes.fromhex("F0434200000002"),
                             bytes.fromhex("F043420000000201"), "transit", "transit e-purse")
LOAD_FILES = (EMV_LOAD_FILE, TRANSIT_LOAD_FILE)


def load_file_for(kind: AppKind) -> LoadFile:
    return next(f for f in LOAD_FILES if f.kind == kind)


# DGIs that personalise an e-purse by STORE DATA. 8xxx DGIs travel encrypted under the
# security domain's Key-DEK (the EMV CPS convention).
DGI_PURSE_NUMBER = 0x0101  # card number, ASCII digits
DGI_PURSE_LABEL = 0x0102  # application label, ASCII
DGI_PURSE_TOKEN = 0x0103  # the operator's token of the card (what stands for it on the bus)
DGI_PURSE_LOAD_KEY = 0x8001  # DLK, 16 bytes
DGI_PURSE_TAC_KEY = 0x8002  # DTK, 16 bytes
ENCRYPTED_DGI = 0x8000
