"""Citizen channels: the temporary exchanges a professional mailbox opens with a patient in Mon Espace Santé.

Pure rules and decisions live here (what outgoing patient mail must carry, what a message does to its
channels, whether a patient may write); the store applies them in the same transaction as the message
(``gateway.store.channels``), and the scheduler expires idle channels (``gateway.channels.expiry``).
"""
