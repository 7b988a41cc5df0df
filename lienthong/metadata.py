"""gRPC metadata keys of the lienthong exchange protocol.

Callers send ``lienthong-request-id`` and ``lienthong-purpose``. The gateway strips every
``lienthong-`` key a caller sends except those two, and adds ``lienthong-caller`` (the
caller's verified identity) on its own mTLS leg, where upstreams trust it.
"""

from __future__ import annotations

from collections.abc import Iterable

PREFIX = "lienthong-"
REQUEST_ID = "lienthong-request-id"
PURPOSE = "lienthong-purpose"
ON_BEHALF_OF = "lienthong-on-behalf-of"
CALLER = "lienthong-caller"
EXCHANGE_ID = "lienthong-exchange-id"
# The leaf index of the exchange's request entry in the audit log, durable before forwarding:
# upstreams keep it with what the exchange changed, as the evidence of who sent it.
EXCHANGE_LEAF = "lienthong-exchange-leaf"
# The gateway's signed receipt of an exchange, in the trailing metadata of every answer.
RECEIPT = "lienthong-receipt-bin"
CALLER_SUPPLIED = frozenset({REQUEST_ID, PURPOSE, ON_BEHALF_OF})


def first(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str | None:
    """The first text value of ``key``, or None."""
    for name, value in metadata or ():
        if name == key and isinstance(value, str):
            return value
    return None


_MAX_LEAF = 2**63 - 1  # the largest value of a BigInteger column
_MAX_LEAF_DIGITS = len(str(_MAX_LEAF))


def exchange_leaf(metadata: Iterable[tuple[str, str | bytes]] | None) -> int | None:
    """The gateway's ``lienthong-exchange-leaf``; None when absent or malformed, never refused.

    A call is valid without it: a bad leaf only weakens the evidence kept of what the call
    changed, which reconciliation reports as a change without a leaf.
    """
    text = first(metadata, EXCHANGE_LEAF)
    # isdecimal() alone admits non-ASCII digits and int() a sign, spaces and underscores;
    # the length bound keeps int() off texts too long to convert.
    if text is None or not text.isascii() or not text.isdecimal() or len(text) > _MAX_LEAF_DIGITS:
        return None
    value = int(text)
    return value if value <= _MAX_LEAF else None
