"""Typed settings, read once from one TOML file and validated as a whole before anything starts.

Every section is a frozen dataclass whose field types say how its value is read (``gateway.typed_toml`` does
the reading); rules spanning several keys live in ``gateway.settings_checks``. Every problem is collected into
one ``ConfigError`` naming each key. Nothing here opens a socket or the database;
``config/mssgw.example.toml`` documents every key and a test keeps it loadable.
"""

from __future__ import annotations

import dataclasses
import socket
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.errors import ConfigError
from gateway.settings_checks import check_consistency
from gateway.typed_toml import ReadableFile, Seconds, SecretFile, TomlReader
from mappers import xds
from mappers.documents import Author, Code, HeaderDefaults

Security = Literal["starttls", "tls"]


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Identity and mode of this gateway instance."""

    hostname: str = field(default_factory=socket.getfqdn)
    instance_name: str = ""
    mode: Literal["client", "operator"] = "client"
    state_dir: Path = Path("/var/lib/mssgw")
    nil_reference: str = ""
    test_mode: bool = False
    postmaster: str = ""
    shutdown_timeout: Seconds = 30.0
    relay_process: bool = False

    @property
    def owner(self) -> str:
        """The name leases are taken under: ``instance_name`` or, by default, the host name."""
        return self.instance_name or self.hostname


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where the store (and so the queue) lives."""

    url: str = ""
    group_commit_max: int = 500


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS material used towards MSSanté peers (the BAL applicative's certificate, IGC-Santé CAs)."""

    ca_bundle: ReadableFile | None = None
    client_certificate: ReadableFile | None = None
    client_key: SecretFile | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"


@dataclass(frozen=True, slots=True)
class SmarthostSettings:
    """The operator's submission server: the default next hop in client mode."""

    host: str = ""
    port: int = 587
    security: Security = "starttls"
    username: str = ""
    password_file: SecretFile | None = None


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """A static route: mail for ``domain`` (or ``.suffix`` for sub-domains) goes to this next hop."""

    domain: str
    transport: Literal["smtp", "folder"] = "smtp"
    host: str = ""
    port: int = 25
    security: Security = "starttls"
    path: Path | None = None


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """How the outbound queue is worked: concurrency, connection reuse, leases and retries."""

    concurrency: int = 16
    connections_per_destination: int = 4
    messages_per_connection: int = 1000
    connection_idle: Seconds = 30.0
    connect_timeout: Seconds = 30.0
    command_timeout: Seconds = 120.0
    claim_batch: int = 200
    lease: Seconds = 600.0
    retry_schedule: tuple[Seconds, ...] = (60.0, 300.0, 900.0, 3600.0, 14400.0)
    max_lifetime: Seconds = 5 * 86400.0
    crash_limit: int = 3


@dataclass(frozen=True, slots=True)
class DkimSettings:
    """DKIM signing of outgoing mail; off while ``private_key_file`` is unset."""

    domain: str = ""
    selector: str = ""
    private_key_file: SecretFile | None = None
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    headers: tuple[str, ...] = (
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "disposition-notification-to",
        "x-mss-codecda",
        "x-mss-ins",
        "x-mss-nil",
        "x-mss-mes",
    )

    @property
    def enabled(self) -> bool:
        """Signing happens only when a key is configured."""
        return self.private_key_file is not None


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """Log format and level; logs always go to stderr (journald under systemd)."""

    format: Literal["logfmt", "json"] = "logfmt"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """Citizen channels (exchanges with patients through Mon Espace Santé) and receipts.

    No reply window is published (MSSANTE.md §7.7): ``inactivity`` is a local choice.
    """

    inactivity: Seconds = 90 * 86400.0
    expiry_check: Seconds = 3600.0
    patient_max_size: int = 25 * 1024 * 1024
    answer_mdn: bool = True


@dataclass(frozen=True, slots=True)
class ValueSetFiles:
    """ANS NOS value-set files (JDV, IHE SVS XML, downloaded by the site: mssgw ships none) the
    ``[documents]`` codes of the same name must belong to, checked when the configuration is read.
    Unset: that code is not checked (the ANS value sets are not copied into mssgw)."""

    facility_type: ReadableFile | None = None
    practice_setting: ReadableFile | None = None
    author_role: ReadableFile | None = None
    author_specialty: ReadableFile | None = None
    class_code: ReadableFile | None = None
    content_type_code: ReadableFile | None = None
    format_code: ReadableFile | None = None


@dataclass(frozen=True, slots=True)
class DocumentSettings:
    """Hospital-wide values for the CDA R2 N1 the gateway builds around a bare PDF (``mssgw send --doc``,
    ``X-MSSGW-*`` submissions), so senders need not repeat them; what a submission gives wins. Codes are
    ``CODE^LABEL`` (facility type TRE_R02, practice setting ASS_X04, class code JDV_J06, content type
    code) or ``CODE^LABEL^SYSTEM`` (format code, author role and specialty).

    The default author is the whole person (RPPS, names, role, specialty): a submission that names its own
    professional takes none of it; ``institution_*`` complete any submission.
    """

    facility_type: str = ""
    practice_setting: str = ""
    institution_id: str = ""
    institution_name: str = ""
    author_rpps: str = ""
    author_family: str = ""
    author_given: str = ""
    author_role: str = ""
    author_specialty: str = ""
    class_code: str = ""
    content_type_code: str = ""
    format_code: str = ""
    value_sets: ValueSetFiles = field(default_factory=ValueSetFiles)

    def header_defaults(self) -> HeaderDefaults:
        """The values as the mappers take them (checked by ``settings_checks`` when the file was read)."""

        def code(value: str, key: str, scheme: str | None) -> Code | None:
            return xds.parse_code_option(value, f"documents.{key}", scheme) if value else None

        author = Author(
            rpps=xds.check_rpps(self.author_rpps) if self.author_rpps else None,
            family_name=self.author_family or None,
            given_name=self.author_given or None,
            institution_name=self.institution_name or None,
            institution_id=self.institution_id or None,
            specialty=code(self.author_specialty, "author_specialty", None),
            role=code(self.author_role, "author_role", None),
        )
        return HeaderDefaults(
            author=author,
            facility_type=code(self.facility_type, "facility_type", xds.FACILITY_TYPE_OID),
            practice_setting=code(self.practice_setting, "practice_setting", xds.PRACTICE_SETTING_OID),
            class_code=code(self.class_code, "class_code", xds.CLASS_CODE_OID),
            content_type=code(self.content_type_code, "content_type_code", xds.CONTENT_TYPE_OID),
            format_code=code(self.format_code, "format_code", None),
        )


@dataclass(frozen=True, slots=True)
class ImapAccountSettings:
    """One mailbox at the operator that the IMAP bridge empties into the store."""

    name: str
    host: str
    address: str
    port: int = 993
    security: Security = "tls"
    username: str = ""
    auth: Literal["password", "external", "xoauth2"] = "password"
    password_file: SecretFile | None = None
    token_file: SecretFile | None = None
    ca_bundle: ReadableFile | None = None
    client_certificate: ReadableFile | None = None
    client_key: SecretFile | None = None
    folders: tuple[str, ...] = ("INBOX",)
    after_import: Literal["seen", "move", "leave"] = "seen"
    processed_folder: str = ""
    backfill_days: int = 0
    idle: bool = True
    poll_interval: Seconds = 60.0

    def tls_settings(self, defaults: TlsSettings) -> TlsSettings:
        """This account's TLS material; what it leaves unset comes from the ``[tls]`` section."""
        if self.client_certificate is not None:
            defaults = dataclasses.replace(
                defaults, client_certificate=self.client_certificate, client_key=self.client_key
            )
        return dataclasses.replace(defaults, ca_bundle=self.ca_bundle or defaults.ca_bundle)


@dataclass(frozen=True, slots=True)
class ImapSettings:
    """The IMAP bridge: its accounts, and how it fetches and retries."""

    accounts: tuple[ImapAccountSettings, ...] = ()
    fetch_batch: int = 100
    fetch_batch_bytes: int = 32 * 1024 * 1024
    connect_timeout: Seconds = 30.0
    command_timeout: Seconds = 120.0
    idle_refresh: Seconds = 1740.0
    backoff_initial: Seconds = 1.0
    backoff_max: Seconds = 300.0


@dataclass(frozen=True, slots=True)
class MailboxSettings:
    """One of our mailboxes: its mail is stored, and may be forwarded inside and/or dropped as files."""

    address: str
    forward_host: str = ""
    forward_port: int = 25
    forward_protocol: Literal["smtp", "lmtp"] = "smtp"
    drop_folder: Path | None = None

    @property
    def delivered(self) -> bool:
        """Whether mail for this mailbox goes further than the store (a queue row for the relay)."""
        return bool(self.forward_host) or self.drop_folder is not None


@dataclass(frozen=True, slots=True)
class InboundSettings:
    """What the gateway accepts: its own domains and mailboxes, limits, the trust list and DKIM policy."""

    domains: tuple[str, ...] = ()
    mailboxes: tuple[MailboxSettings, ...] = ()
    max_message_size: int = 35 * 1024 * 1024
    max_recipients: int = 100
    max_commands: int = 1000
    connections_per_peer: int = 20
    max_connections: int = 200
    max_inflight_bytes: int = 1024 * 1024 * 1024
    timeout: Seconds = 300.0
    trusted_domains: tuple[str, ...] = ()
    trust_list_file: ReadableFile | None = None
    dkim_policy: Literal["record", "refuse"] = "record"


@dataclass(frozen=True, slots=True)
class SubmissionClientSettings:
    """An internal sender: found by AUTH login, client-certificate CN or network; may use ``senders`` only.

    ``return_host`` is its internal MTA, where the delivery reports for its mail are sent back (SMTP or
    LMTP, STARTTLS when offered); without it they stay in the store.
    """

    name: str
    senders: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    return_host: str = ""
    return_port: int = 25
    return_protocol: Literal["smtp", "lmtp"] = "smtp"


@dataclass(frozen=True, slots=True)
class SubmissionSettings:
    """The internal submission listener (off while ``listen`` is empty)."""

    listen: tuple[str, ...] = ()
    certificate: ReadableFile | None = None
    key: SecretFile | None = None
    require_starttls: bool = True
    credentials_file: SecretFile | None = None
    client_ca: ReadableFile | None = None
    clients: tuple[SubmissionClientSettings, ...] = ()


@dataclass(frozen=True, slots=True)
class OperatorListenerSettings:
    """Operator mode's port-25 listener, off while ``listen`` is empty; peers checked by tls.ca_bundle."""

    listen: tuple[str, ...] = ()
    certificate: ReadableFile | None = None
    key: SecretFile | None = None


@dataclass(frozen=True, slots=True)
class Hl7ProducerSettings:
    """A producing application (DPI, RIS, SGL), found by MSH-3 (and MSH-4 when set); its mail leaves from
    ``from_address`` (a BAL applicative) with ``display_name`` (ECO.2.2.7); its business acknowledgements
    (ZAM) go to ``zam_host``:``zam_port``, over TLS when ``zam_tls``. Each ZAM waits ``zam_ack_timeout``
    for the producer's ACK; without an AA it is sent again after each delay of ``zam_retry_schedule`` (the
    last delay repeats: a ZAM is never dropped).

    ``networks`` / ``certificate_cn``, when set, bind the producer to its connection: a message naming it
    in MSH-3/MSH-4 is taken only from one of those networks and/or over TLS with a client certificate of
    that CN (both when both are set); MSH-3 alone is whatever the sender writes."""

    name: str
    application: str
    facility: str = ""
    networks: tuple[str, ...] = ()
    certificate_cn: str = ""
    from_address: str = ""
    display_name: str = ""
    zam_host: str = ""
    zam_port: int = 0
    zam_tls: bool = False
    zam_ack_timeout: Seconds = 30.0
    zam_retry_schedule: tuple[Seconds, ...] = (5.0, 30.0, 120.0, 600.0, 3600.0)


@dataclass(frozen=True, slots=True)
class Hl7ConsumerSettings:
    """A consuming application (DPI, RIS) that gets the documents received on ``mailboxes`` as MDM^T02/T10/T04
    over MLLP at ``host``:``port`` (TLS when ``tls``, checked with ``ca_bundle`` or tls.ca_bundle), named
    ``application``/``facility`` in MSH-5/MSH-6. An ACK is awaited ``ack_timeout``; without one the MDM is
    sent again after each delay of ``retry_schedule``, then the sender gets an error MDN 906
    (``gateway.outbound.mdm_sender``)."""

    name: str
    mailboxes: tuple[str, ...] = ()
    host: str = ""
    port: int = 0
    tls: bool = False
    ca_bundle: ReadableFile | None = None
    application: str = ""
    facility: str = ""
    processing_id: Literal["P", "T", "D"] = "P"
    charset: Literal["UNICODE UTF-8", "8859/15"] = "UNICODE UTF-8"
    ack_timeout: Seconds = 60.0
    retry_schedule: tuple[Seconds, ...] = (60.0, 300.0, 900.0, 3600.0)


@dataclass(frozen=True, slots=True)
class Hl7Settings:
    """The MLLP listener for producers' ORU/MDM (off while ``listen`` is empty); TLS with a certificate.

    ``application``/``facility`` are this gateway's MSH-3/MSH-4 in the MDMs sent to ``consumers``.
    """

    listen: tuple[str, ...] = ()
    certificate: ReadableFile | None = None
    key: SecretFile | None = None
    client_ca: ReadableFile | None = None
    networks: tuple[str, ...] = ()
    max_message_size: int = 16 * 1024 * 1024
    timeout: Seconds = 300.0
    max_connections: int = 50
    producers: tuple[Hl7ProducerSettings, ...] = ()
    application: str = "MSSGW"
    facility: str = ""
    consumers: tuple[Hl7ConsumerSettings, ...] = ()


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The Prometheus endpoint; off while ``listen`` is empty, and only ever on a loopback address."""

    listen: str = ""


@dataclass(frozen=True, slots=True)
class TrustSettings:
    """The MSSanté trust list ("liste blanche"): where it is fetched from and how often."""

    url: str = ""
    refresh: Seconds = 86400.0
    ca_bundle: ReadableFile | None = None
    fetch_timeout: Seconds = 60.0


@dataclass(frozen=True, slots=True)
class DirectorySettings:
    """The national MSSanté directory (ANS "Extraction Correspondance MSSanté"): where it is fetched from,
    how often, what a new file must show to replace the one in force, and what is done with a recipient
    that is not in it."""

    url: str = ""
    refresh: Seconds = 86400.0
    ca_bundle: ReadableFile | None = None
    fetch_timeout: Seconds = 300.0
    min_entries: int = 100000
    min_share: float = 0.6
    max_download: int = 1024 * 1024 * 1024
    check: Literal["off", "warn", "refuse"] = "warn"


@dataclass(frozen=True, slots=True)
class CertificateSettings:
    """When the configured certificates are checked, and how early their expiry is reported."""

    check_interval: Seconds = 86400.0
    warn_before: Seconds = 30 * 86400.0
    error_before: Seconds = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration; ``source`` is the file it was read from."""

    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    smarthost: SmarthostSettings = field(default_factory=SmarthostSettings)
    routes: tuple[RouteSettings, ...] = ()
    relay: RelaySettings = field(default_factory=RelaySettings)
    dkim: DkimSettings = field(default_factory=DkimSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    channels: ChannelSettings = field(default_factory=ChannelSettings)
    documents: DocumentSettings = field(default_factory=DocumentSettings)
    inbound: InboundSettings = field(default_factory=InboundSettings)
    submission: SubmissionSettings = field(default_factory=SubmissionSettings)
    operator_listener: OperatorListenerSettings = field(default_factory=OperatorListenerSettings)
    hl7: Hl7Settings = field(default_factory=Hl7Settings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    directory: DirectorySettings = field(default_factory=DirectorySettings)
    certificates: CertificateSettings = field(default_factory=CertificateSettings)
    imap: ImapSettings = field(default_factory=ImapSettings)
    source: str = ""

    @property
    def store_url(self) -> str:
        """The SQLAlchemy URL of the store: the configured one or SQLite in the state directory."""
        return self.store.url or f"sqlite:///{self.gateway.state_dir / 'mssgw.db'}"


def load(path: str | Path) -> Settings:
    """Read and validate the configuration file; raise ``ConfigError`` listing every problem."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(source, [f"cannot read the file: {error.strerror}"]) from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, [f"not valid TOML: {error}"]) from error
    return from_mapping(raw, source=source)


def from_mapping(raw: dict[str, Any], *, source: str = "<settings>") -> Settings:
    """Validate an already-parsed TOML document (tests build settings this way)."""
    problems: list[str] = []
    base = Path(source).resolve().parent if source and not source.startswith("<") else Path.cwd()
    reader = TomlReader(problems, base)
    values = reader.read_dataclass(Settings, raw, "", skip={"source"})
    if values is None:
        raise ConfigError(source, problems)
    settings = dataclasses.replace(typing.cast(Settings, values), source=source)
    # Run even after refused values (read as their defaults): every problem is reported at once, but
    # not a second time for a key already named, nor for a table whose choice was refused.
    named = {problem.partition(":")[0] for problem in problems}
    consistency: list[str] = []
    check_consistency(settings, consistency)
    for problem in consistency:
        key = problem.partition(":")[0]
        if key not in named and key.rpartition(".")[0] not in reader.unsure:
            problems.append(problem)
    if problems:
        raise ConfigError(source, problems)
    return settings
