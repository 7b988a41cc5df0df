"""The mTLS gRPC gateway's control plane.

The gateway itself is lienthong-gateway (gateway/dataplane, in Rust): it knows each caller by
its certificate, allows what the policy grants, routes each call to its ministry's adapter,
and records every exchange. Here are the policy language, the configuration written for it
and the audit log's tools.
"""
