"""Pure conversions between the store's records and what travels on the wire.

Nothing here opens a socket, a file or a database: every function takes values and returns values,
so that both directions of the gateway (inbound parsing, outbound building) can be tested without I/O.
This package never imports ``gateway`` (tests/unit/test_layering.py enforces it).
"""
