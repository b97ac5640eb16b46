"""The SMTP replies of the inbound listeners and of intake, in one place (aiosmtpd ``statuscodes`` style).

Every refusal carries an RFC 3463 enhanced code and a sentence the person at the other end can act on.
Templates with ``{}`` take the address or value at fault; nothing here ever quotes message content.
Replies are ASCII (RFC 5321), hence "MSSante"; a test keeps them so. Sentences built elsewhere (patient
rules, citizen channels, submission instructions) may carry French letters or an address given to us:
``ascii_line`` is applied to every line the listeners send, because aiosmtpd cannot encode anything else and
would turn a permanent refusal into a ``451`` that the sending MTA retries for days.
"""

from __future__ import annotations

import unicodedata

_not_an_address = "not a valid mail address (local-part@domain)"
_routing = "routing inside an address (%, source route, quoted @) is not accepted: write local-part@domain"

# Accepting.
SENDER_OK = "250 2.1.0 Sender OK"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
QUEUED = "250 2.0.0 Queued as {}"
QUEUED_DUPLICATE = "250 2.0.0 Already queued as {} (same Message-ID and content)"

# Temporary refusals.
STORE_UNAVAILABLE = "451 4.3.0 The message store is unavailable: nothing was kept, please try again later"
STORE_FULL = "452 4.3.1 The message store is out of disk space: nothing was kept, please try again later"
INFLIGHT_FULL = (
    "452 4.3.1 Too much mail is being received at once: nothing was kept, please try again in a few minutes"
)
LOCAL_ERROR = "451 4.3.0 Local error while handling this command: please try again later"
BUSY = "421 4.3.2 Too many connections to this gateway: try again later"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address: try again later"
TIMEOUT = "421 4.4.2 Connection timed out: closing"
SHUTTING_DOWN = "421 4.3.2 Service shutting down: try again later"
DKIM_UNAVAILABLE = "451 4.7.5 DKIM key of {} could not be fetched (DNS timeout): please try again later"

# Security and authentication.
STARTTLS_REQUIRED = "530 5.7.0 Must issue a STARTTLS command first: mail is only accepted over TLS"
AUTH_REQUIRED = (
    "530 5.7.0 Authentication required: log in (AUTH over TLS), present a client certificate, "
    "or send from an allowed network"
)
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required: issue STARTTLS before AUTH"
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"
AUTH_FAILED_TOO_OFTEN = "421 4.7.0 Too many failed authentication attempts: closing"
CERTIFICATE_REQUIRED = (
    "530 5.7.0 Client certificate required: present your MSSante operator certificate in the TLS handshake"
)
SENDER_NOT_TRUSTED = (
    "550 5.7.1 Sender domain {} is not on the MSSante trust list: mail from it is not accepted here"
)
SENDER_NOT_YOURS = "553 5.7.1 Sender address <{}> is not assigned to {}: use one of your own addresses"
FROM_NOT_YOURS = "553 5.7.1 From address <{}> is not assigned to {}: use one of your own addresses"
SENDER_FIELD_NOT_YOURS = (
    "553 5.7.1 Sender address <{}> in the header is not assigned to {}: use one of your own addresses"
)
TWO_FROM_FIELDS = "554 5.6.0 The message has {} From fields: RFC 5322 allows one; nothing was kept"
BAD_SENDER = f"553 5.1.7 Sender <{{}}>: {_not_an_address}"
ROUTED_SENDER = f"553 5.1.7 Sender <{{}}>: {_routing}"
DKIM_FAILED = "550 5.7.20 DKIM verification failed ({}): the message was altered or wrongly signed"

# Recipients.
NO_SUCH_MAILBOX = "550 5.1.1 <{}>: no such mailbox here"
RELAY_DENIED = "554 5.7.1 <{}>: relaying denied: this gateway only accepts mail for its own domains"
BAD_ADDRESS = f"553 5.1.3 <{{}}>: {_not_an_address}"
ROUTED_ADDRESS = f"553 5.1.3 <{{}}>: {_routing}"
NOT_MSSANTE = (
    "550 5.7.1 Recipient domain {} is not on the MSSante trust list: this gateway only sends to MSSante"
)
NOT_IN_DIRECTORY = (
    "550 5.1.1 <{}>: not in the national MSSante directory (Annuaire Sante): check the address{}"
)
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients: send the others in a new message (limit {})"

# The message itself.
TOO_BIG = "552 5.3.4 Message too big: the limit is {} bytes"
TOO_BIG_DATA = "552 5.3.4 Message too big for this server: nothing was kept"
BARE_LINE_END = (
    "554 5.6.0 Bare LF or CR in the message data (RFC 5321 section 2.3.8): "
    "send lines ending in CRLF; nothing was kept"
)
NUL_IN_DATA = (
    "554 5.6.0 NUL character in the message data (RFC 5322 section 2.3 forbids it): nothing was kept"
)
UNREADABLE = "554 5.6.0 The message cannot be read safely: {}"
BAD_INSTRUCTION = "554 5.6.0 Submission instruction refused: {}"
PATIENT_MISMATCH = "554 5.6.0 Not sent: {}"
LINE_TOO_LONG = "500 5.5.2 Line too long (RFC 5321 section 4.5.3.1.6)"

# Parameters and commands.
BAD_PARAMETER = "555 5.5.4 Unsupported or malformed parameter: {}"
BARE_LF_COMMAND = "500 5.5.2 Command line ended by a bare LF: end every command with CRLF (RFC 5321 2.3.8)"
TOO_MANY_COMMANDS = "421 4.7.0 Too many commands on this connection: closing"
NOT_ASCII = "553 5.6.7 Non-ASCII addresses and commands are not accepted here (no SMTPUTF8)"
NEED_RCPT = "503 5.5.1 Need RCPT before DATA"
NEED_EHLO = "503 5.5.1 Send EHLO (or HELO) first"

# aiosmtpd's built-in replies, re-worded where they lack an enhanced code or an actionable sentence.
REWRITTEN: dict[str, str] = {
    "552 Error: Too much mail data": TOO_BIG_DATA,
    "530 Must issue a STARTTLS command first": STARTTLS_REQUIRED,
    "530 5.7.0 Authentication required": AUTH_REQUIRED,
    "538 5.7.11 Encryption required for requested authentication mechanism": AUTH_NEEDS_TLS,
    "500 Line too long (see RFC5321 4.5.3.1.6)": LINE_TOO_LONG,
    "500 Error: strict ASCII mode": NOT_ASCII,
    "503 Error: need RCPT command": NEED_RCPT,
    "503 Error: send HELO first": NEED_EHLO,
    "503 Error: send EHLO first": NEED_EHLO,
}


def reason(reply: str) -> str:
    """The short, bounded code of a reply for metrics labels: its enhanced code (``5.7.1``)."""
    parts = reply.split(" ", 2)
    return parts[1] if len(parts) > 1 and parts[1][:1] in "245" and "." in parts[1] else parts[0]


def ascii_line(text: str) -> str:
    """``text`` as one line of printable ASCII: letters lose their accents (NFKD: "Santé" → "Sante",
    "…" → "..."), other characters and line breaks are dropped or become spaces."""
    if text.isascii() and text.isprintable():
        return text  # what almost every reply is: NFKD and the filter below keep it as it is
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c if " " <= c <= "~" else " " for c in decomposed if c.isascii())
