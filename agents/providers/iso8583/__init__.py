"""A bank that runs an ISO 8583 authorization host joins CardBus through this bridge.

The bridge is a provider like the others (entry point ``bank-iso``): it consumes its own request
topic and answers on ``cardbus.provider-results``, but instead of deciding in Python it asks the
bank's host over one persistent ISO 8583:1987 TCP link.

- ``fields``: the field spec (pyiso8583), declared once, and the 2-byte length framing;
- ``messages``: pure builders and readers (0100/0110, 0400/0401/0410, 0800/0810), the host's
  response codes mapped to CardBus's, the matching key;
- ``link``: the asyncio link (sign-on, echo, STAN matching, deadlines, reversals repeated as 0401
  until answered, reconnect with backoff, the reversal of a late approval);
- ``hsm``: the bridge's HSM facade, the only place the PAN is opened and the PIN block is
  translated to the host's zone PIN key;
- ``cardfile``: the host's card file (encrypted), written when the bridge's adapter issues a card;
- ``adapter``: the provider adapter; ``app``: its thin Faust app.
"""
