"""The Ministry of Justice adapter: the civil-status registry's birth registrations.

- ``models``: the tables (SQLAlchemy, SQLite or PostgreSQL) and the registration numbering.
- ``validation``: the checks of a RegisterBirth request against the contract and code lists.
- ``pin_requests``: the client of the population database, reached through the gateway.
- ``registry``: the domain service that registers, reads and lists births.
- ``outbox``: pending PIN requests, delivered in the background until issued.
- ``servicer``: the gRPC servicers that delegate to the registry.
- ``server``: the composition root, which builds everything when asked, never at import.
"""
