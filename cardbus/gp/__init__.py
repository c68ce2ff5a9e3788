"""GlobalPlatform card content management, the parts both ends share.

- ``card``: the constants of GlobalPlatform Card Specification v2.3 that the card (``cards``)
  and the manager agree on: AIDs, instructions, status words, life cycle states, privileges,
  the load files a CardBus card carries, and the DGIs that personalise an e-purse.
- ``ber``: a small BER-TLV reader and writer (GET STATUS answers repeat their tags).
- ``commands``: the plain commands a manager sends (INITIALIZE UPDATE, EXTERNAL AUTHENTICATE,
  GET STATUS, INSTALL, STORE DATA, SET STATUS, DELETE) and the parsers of the card's answers.
- ``session``: the card manager as a pure state machine: ``(state, card responses) -> (state,
  next commands)``; secure channel crypto from ``cardbus.crypto.scp03``. No I/O: the platform
  runs it remotely and the terminal only relays APDUs.
"""
