"""Transports: one narrow interface (``base.Transport``) in front of each way a message can leave."""
