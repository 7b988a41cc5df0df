"""Drawing the six random digits of a PIN without ever drawing a number twice.

Each prefix (province, century and sex, year) owns the 1,000,000 serials 000000-999999. A draw
picks uniformly, with the operating system's CSPRNG, one of the serials not drawn yet, and
removes it — an incremental Fisher-Yates shuffle kept sparsely in the database. Every draw
costs the same few row reads and writes however full the prefix is: no retry until a free
number turns up, and a cancelled number, having been drawn, can never come back.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lienthong.errors import ResourceExhausted
from lienthong.pin import RANDOM_SPACE
from police_adapter.models import PinPoolSwap, PinPrefixPool


def draw_serial(session: Session, prefix: str) -> int:
    """Draw a serial of ``prefix`` never drawn before; the caller's transaction commits it.

    The prefix's pool row is locked for the transaction, so concurrent draws for the same
    prefix serialise (PostgreSQL: SELECT ... FOR UPDATE; SQLite: one writer at a time).
    """
    pool = _locked_pool(session, prefix)
    if pool.remaining == 0:
        raise ResourceExhausted(f"no PIN left for prefix {prefix}", reason="PIN_PREFIX_EXHAUSTED")
    position = secrets.randbelow(pool.remaining)
    last = pool.remaining - 1
    chosen = session.get(PinPoolSwap, (prefix, position))
    serial = chosen.serial if chosen is not None else position
    # Move the last undrawn serial into the chosen position, then shrink the pool by one.
    tail = session.get(PinPoolSwap, (prefix, last))
    tail_serial = tail.serial if tail is not None else last
    if tail is not None:
        session.delete(tail)
    if position != last:
        if chosen is not None:
            chosen.serial = tail_serial
        else:
            session.add(PinPoolSwap(prefix=prefix, position=position, serial=tail_serial))
    elif chosen is not None and chosen is not tail:
        session.delete(chosen)
    pool.remaining = last
    session.flush()
    return serial


def _locked_pool(session: Session, prefix: str) -> PinPrefixPool:
    query = select(PinPrefixPool).where(PinPrefixPool.prefix == prefix).with_for_update()
    pool = session.scalars(query).one_or_none()
    if pool is not None:
        return pool
    try:
        with session.begin_nested():
            session.add(PinPrefixPool(prefix=prefix, remaining=RANDOM_SPACE))
    except IntegrityError:
        pass  # another process created it first; lock theirs
    return session.scalars(query).one()
