"""The store: the hospital-side messages, and the delivery rows that are the outbound queue.

Only this package touches SQL. Everything above it speaks in the record types of ``mappers`` and the small
value types of ``gateway.store.repository``.
"""
