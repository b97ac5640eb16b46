"""Everything that sends mail out of the gateway: the relay working the queue, routing, DKIM signing,
delivery notices, and the transports that speak to the next hop."""
