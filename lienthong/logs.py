"""The one logging configuration of every lienthong process: structlog JSON lines."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure_logging(
    service: str, *, stream: TextIO | None = None, level: int = logging.INFO
) -> None:
    """Write JSON lines, one per event, with the service name, timestamp and level.

    Events carry identifiers and digests only; personal data is never passed to a logger.
    """
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
