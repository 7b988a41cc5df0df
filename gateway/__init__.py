"""The mTLS gRPC gateway.

It knows each caller by its certificate, allows what the policy grants, routes each call to
its ministry's adapter, and records every exchange.
"""
