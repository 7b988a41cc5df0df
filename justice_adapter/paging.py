"""Page tokens of the registry's lists (AIP-158): the id of the last row of a page, opaque.

Only the exact form handed out is accepted back, so a token cannot be forged into a
different cursor by re-encoding it.
"""

from __future__ import annotations

import base64

from lienthong import validation

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# The largest id an INTEGER column holds on PostgreSQL: a token past it names no row.
MAX_ROW_ID = 2**31 - 1


def page_size(v: validation.Violations, requested: int) -> int:
    """The page size to use: 0 means the default; more than the maximum gets the maximum."""
    if requested < 0:
        v.add("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(last_id: int) -> str:
    """The token of the page that follows the row ``last_id``."""
    return base64.urlsafe_b64encode(str(last_id).encode("ascii")).decode("ascii").rstrip("=")


def decode_page_token(v: validation.Violations, token: str) -> int:
    """The id after which the page starts; 0 for the first page."""
    if not token:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        last_id = int(base64.urlsafe_b64decode(padded).decode("ascii"))
    except ValueError:
        last_id = 0
    if not 0 < last_id <= MAX_ROW_ID or encode_page_token(last_id) != token:
        v.add("page_token", "is not a page token of this list")
        return 0
    return last_id
