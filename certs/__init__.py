"""Development PKI: a private CA and SPIFFE X.509-SVIDs for every lienthong system.

``python -m certs init`` writes them; :mod:`certs.pki` is the API.
"""
