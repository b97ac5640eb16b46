"""Receipts: what the recipients' side says about mail we sent (DSN, MDN), and the MDN we answer with.

``reading`` turns a received report into per-recipient statuses for the store (``gateway.store.receipts``
matches them to the original); ``answer`` decides whether and how to answer a read-receipt request on a
received IHE_XDM package (the ANS MDN of MSSANTE.md §8.3).
"""
