"""The national MSSanté directory: importing the ANS extraction (``update``), refreshing it on schedule
(``service``) and checking outgoing recipients against it (``check``). Parsing is ``mappers.directory``; the
rows live in the store (``gateway.store.directory``)."""
