"""lienthong: what the gateway and the two ministries' adapters share.

lienthong is the gRPC interoperability gateway between the civil-status registry and the
national population database.
This package holds what the three services share: the contracts' generated code (the
``*.v1`` subpackages, generated from protos/ by tools/generate_contracts.py), the code lists,
TLS, configuration and logging helpers, and the ``lienthong`` command line.
"""
