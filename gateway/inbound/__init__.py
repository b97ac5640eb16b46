"""Everything that receives mail into the gateway: the SMTP listeners and the intake into the store."""
