"""Salted per-field digests of a registered birth, as reconciliation compares them.

Both databases compute them from their own copy of a registration, and only the digests
cross: a SHA-256 of the run's salt followed by the deterministic serialization of a
RegisteredBirth that holds the one field (so the field's number is bound into the digest).
"""

from __future__ import annotations

import hashlib

from lienthong.population.v1 import citizen_pb2

# The RegisteredBirth fields compared, in field number order; birth_registration is the key.
FIELDS = (
    "full_name",
    "date_of_birth",
    "sex",
    "registration_place",
    "home_town",
    "ethnicity",
    "nationality",
    "father",
    "mother",
    "legal_representative",
)
MIN_SALT = 16
MAX_SALT = 64


def field_digests(birth: citizen_pb2.RegisteredBirth, salt: bytes) -> dict[str, bytes]:
    """The digest of each field ``birth`` holds, by field name, in field number order."""
    digests = {}
    for field in FIELDS:
        only = citizen_pb2.RegisteredBirth()
        if field == "sex":
            if not birth.sex:
                continue
            only.sex = birth.sex
        elif birth.HasField(field):  # type: ignore[arg-type]
            getattr(only, field).CopyFrom(getattr(birth, field))
        else:
            continue
        digests[field] = hashlib.sha256(salt + only.SerializeToString(deterministic=True)).digest()
    return digests
