"""Typed settings, read once from one TOML file and validated as a whole before anything starts.

Every section is a frozen dataclass; the loader walks the dataclasses, converts each value and collects every
problem (unknown key, wrong type, missing file, key file readable by others …) into one ``ConfigError`` that
names each key. Nothing here opens a socket or the database. ``config/mssgw.example.toml`` documents every key
and a test keeps it loadable.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import stat
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from gateway.errors import ConfigError


class _Marker:
    """Tags an annotated type with how its value is read and checked."""

    def __init__(self, name: str) -> None:
        self.name = name


_DURATION = _Marker("duration")
_READABLE_FILE = _Marker("readable file")
_SECRET_FILE = _Marker("secret file")

Seconds = Annotated[float, _DURATION]
"""A duration written ``30s``, ``5m``, ``1h``, ``5d`` (or a number of seconds)."""
ReadableFile = Annotated[Path, _READABLE_FILE]
SecretFile = Annotated[Path, _SECRET_FILE]
"""A file holding a secret (private key, password): it must not be readable by group or others."""

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
    timeout: Seconds = 300.0
    trusted_domains: tuple[str, ...] = ()
    trust_list_file: ReadableFile | None = None
    dkim_policy: Literal["record", "refuse"] = "record"


@dataclass(frozen=True, slots=True)
class SubmissionClientSettings:
    """An internal sender: found by AUTH login, client-certificate CN or network; may use ``senders`` only."""

    name: str
    senders: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()


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
    inbound: InboundSettings = field(default_factory=InboundSettings)
    submission: SubmissionSettings = field(default_factory=SubmissionSettings)
    operator_listener: OperatorListenerSettings = field(default_factory=OperatorListenerSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
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
    reader = _Reader(problems, base)
    values = reader.read_dataclass(Settings, raw, "", skip={"source"})
    if problems:
        raise ConfigError(source, problems)
    settings = dataclasses.replace(typing.cast(Settings, values), source=source)
    _check_consistency(settings, problems)
    if problems:
        raise ConfigError(source, problems)
    return settings


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class _Reader:
    """Converts TOML values to the annotated types, appending a sentence per problem."""

    def __init__(self, problems: list[str], base: Path) -> None:
        self.problems = problems
        self.base = base

    def fail(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def read_dataclass(
        self, cls: type[Any], raw: object, prefix: str, skip: frozenset[str] | set[str] = frozenset()
    ) -> object | None:
        if not isinstance(raw, dict):
            self.fail(prefix or "(top level)", f"expected a table, got {_kind(raw)}")
            return None
        hints = typing.get_type_hints(cls, include_extras=True)
        known = {f.name for f in dataclasses.fields(cls)} - set(skip)
        for key in sorted(set(raw) - known):
            self.fail(_join(prefix, key), "unknown key (misspelt, or in the wrong section?)")
        kwargs: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            if item.name not in known:
                continue
            key = _join(prefix, item.name)
            if item.name in raw:
                kwargs[item.name] = self.convert(raw[item.name], hints[item.name], key)
            elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                self.fail(key, "required key is missing")
        if any(v is _INVALID for v in kwargs.values()) or (set(raw) & known) != set(kwargs):
            return None
        try:
            instance: object = cls(**kwargs)
        except TypeError:
            # A required key was missing; it has been reported above.
            return None
        return instance

    def convert(self, value: object, hint: Any, key: str) -> Any:
        marker = None
        if typing.get_origin(hint) is Annotated:
            hint, marker = typing.get_args(hint)[0], typing.get_args(hint)[1]
        origin = typing.get_origin(hint)
        if origin in (types.UnionType, typing.Union):
            options = [a for a in typing.get_args(hint) if a is not type(None)]
            return self.convert(value, options[0], key)
        if origin is Literal:
            allowed = typing.get_args(hint)
            if value not in allowed:
                choices = ", ".join(repr(a) for a in allowed)
                self.fail(key, f"{value!r} is not one of {choices}")
                return _INVALID
            return value
        if origin is tuple:
            item_hint = typing.get_args(hint)[0]
            if not isinstance(value, list):
                self.fail(key, f"expected a list, got {_kind(value)}")
                return _INVALID
            items = [self.convert(v, item_hint, f"{key}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if _INVALID not in items else _INVALID
        if dataclasses.is_dataclass(hint):
            result = self.read_dataclass(typing.cast(type[Any], hint), value, key)
            return _INVALID if result is None else result
        if isinstance(marker, _Marker):
            return self.convert_marked(value, marker, key)
        return self.convert_plain(value, hint, key)

    def convert_plain(self, value: object, hint: Any, key: str) -> Any:
        if hint is bool:
            if isinstance(value, bool):
                return value
        elif hint is int:
            if isinstance(value, int) and not isinstance(value, bool):
                if value < 0:
                    self.fail(key, f"{value} must not be negative")
                    return _INVALID
                return value
        elif hint is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        elif hint is str:
            if isinstance(value, str):
                return value
        elif hint is Path and isinstance(value, str) and value:
            return Path(os.path.normpath(self.base / value))
        expected = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
        self.fail(key, f"expected {expected.get(hint, 'a path')}, got {_kind(value)}")
        return _INVALID

    def convert_marked(self, value: object, marker: _Marker, key: str) -> Any:
        if marker is _DURATION:
            return self.duration(value, key)
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a file path, got {_kind(value)}")
            return _INVALID
        path = Path(os.path.normpath(self.base / value))
        if not path.is_file():
            self.fail(key, f"file {path} does not exist")
            return _INVALID
        if not os.access(path, os.R_OK):
            self.fail(key, f"file {path} is not readable by this user")
            return _INVALID
        if marker is _SECRET_FILE:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                self.fail(
                    key,
                    f"secret file {path} has mode {mode:04o}: it must not be accessible to "
                    "group or others (chmod 600)",
                )
                return _INVALID
        return path

    def duration(self, value: object, key: str) -> float | object:
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
        match = _DURATION_RE.match(value) if isinstance(value, str) else None
        if match is None:
            self.fail(key, f"{value!r} is not a duration (write e.g. 30s, 5m, 1h, 5d)")
            return _INVALID
        return float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]


_INVALID = object()


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _kind(value: object) -> str:
    names = {dict: "a table", list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"


def _check_consistency(settings: Settings, problems: list[str]) -> None:
    """Rules that span several keys; each sentence names the key to change."""
    tls = settings.tls
    uses_smtp = bool(settings.smarthost.host) or any(r.transport == "smtp" for r in settings.routes)
    if uses_smtp and tls.ca_bundle is None:
        problems.append(
            "tls.ca_bundle: required when mail leaves by SMTP (peer certificates are always verified)"
        )
    if (tls.client_certificate is None) != (tls.client_key is None):
        problems.append("tls.client_key: client_certificate and client_key go together")
    if settings.smarthost.username and settings.smarthost.password_file is None:
        problems.append("smarthost.password_file: required when smarthost.username is set")
    for index, route in enumerate(settings.routes):
        key = f"routes[{index}]"
        if route.transport == "smtp" and not route.host:
            problems.append(f"{key}.host: required for an smtp route")
        if route.transport == "folder" and route.path is None:
            problems.append(f"{key}.path: required for a folder route")
    has_default = settings.smarthost.host or any(r.domain == "*" for r in settings.routes)
    if settings.gateway.mode == "client" and not has_default:
        problems.append('smarthost.host: required in client mode (or a route with domain = "*")')
    dkim = settings.dkim
    if dkim.enabled and not (dkim.domain and dkim.selector):
        problems.append("dkim.selector: dkim.domain and dkim.selector are required with a key")
    if not settings.relay.retry_schedule:
        problems.append("relay.retry_schedule: needs at least one delay")
    if settings.relay.crash_limit < 1:
        problems.append("relay.crash_limit: must be at least 1")
    if settings.relay.concurrency < 1:
        problems.append("relay.concurrency: must be at least 1")
    _check_operations(settings, problems)
    _check_listeners(settings, problems)
    _check_imap(settings, problems)


def _check_imap(settings: Settings, problems: list[str]) -> None:
    imap, tls = settings.imap, settings.tls
    names: set[str] = set()
    for index, account in enumerate(imap.accounts):
        key = f"imap.accounts[{index}]"
        if account.name in names:
            problems.append(f"{key}.name: {account.name!r} is used by another account")
        names.add(account.name)
        if account.auth == "password" and (not account.username or account.password_file is None):
            problems.append(f'{key}.password_file: auth = "password" needs username and password_file')
        if account.auth == "xoauth2" and (not account.username or account.token_file is None):
            problems.append(f'{key}.token_file: auth = "xoauth2" needs username and token_file')
        if account.ca_bundle is None and tls.ca_bundle is None:
            problems.append(f"{key}.ca_bundle: required (or tls.ca_bundle): the server is always verified")
        certificate = account.client_certificate or tls.client_certificate
        if account.auth == "external" and certificate is None:
            problems.append(f'{key}.client_certificate: auth = "external" needs a client certificate')
        if (account.client_certificate is None) != (account.client_key is None):
            problems.append(f"{key}.client_key: client_certificate and client_key go together")
        if not account.folders:
            problems.append(f"{key}.folders: needs at least one folder")
        if account.after_import == "move" and not account.processed_folder:
            problems.append(f'{key}.processed_folder: required when after_import = "move"')
        if account.processed_folder and account.processed_folder in account.folders:
            problems.append(f"{key}.processed_folder: must not be one of the watched folders")
    if imap.fetch_batch < 1:
        problems.append("imap.fetch_batch: must be at least 1")


def _check_operations(settings: Settings, problems: list[str]) -> None:
    """The metrics address, the trust-list source and the certificate thresholds."""
    listen = settings.metrics.listen
    if listen:
        try:
            host, port = split_host_port(listen)
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            problems.append(
                f"metrics.listen: {listen!r} is not HOST:PORT (e.g. 127.0.0.1:9325 or [::1]:9325)"
            )
        else:
            if not loopback or not 0 <= port <= 65535:
                problems.append(
                    f"metrics.listen: {listen!r} must be a loopback address and a port (metrics are for "
                    "the local Prometheus agent; publish them through a proxy if needed)"
                )
    url = settings.trust.url
    if url and not url.startswith("https://"):
        problems.append("trust.url: must be an https:// URL (the list decides whom mail may go to)")
    certificates = settings.certificates
    if certificates.error_before > certificates.warn_before:
        problems.append("certificates.error_before: must not be longer than certificates.warn_before")


def split_host_port(text: str) -> tuple[str, int]:
    """``127.0.0.1:9325`` or ``[::1]:9325`` → (host, port); raises ValueError."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit():
        raise ValueError(text)
    return host.removeprefix("[").removesuffix("]"), int(port)


def _check_listeners(settings: Settings, problems: list[str]) -> None:
    """The inbound sections: listeners need TLS material, operators need the CA bundle and operator mode."""
    for name in ("submission", "operator_listener"):
        listener: SubmissionSettings | OperatorListenerSettings = getattr(settings, name)
        for index, address in enumerate(listener.listen):
            try:
                host, port = split_host_port(address)
                if not host or port > 65535:
                    raise ValueError(address)
            except ValueError:
                problems.append(f"{name}.listen[{index}]: {address!r} is not host:port (e.g. 127.0.0.1:587)")
        if listener.listen and (listener.certificate is None or listener.key is None):
            problems.append(f"{name}.certificate: a listener needs certificate and key (STARTTLS)")
    if settings.operator_listener.listen:
        if settings.gateway.mode != "operator":
            problems.append('operator_listener.listen: only in gateway.mode = "operator"')
        if settings.tls.ca_bundle is None:
            problems.append("tls.ca_bundle: required by operator_listener (peer certificates are verified)")
    names = [client.name for client in settings.submission.clients]
    for index, client in enumerate(settings.submission.clients):
        if names.count(client.name) > 1:
            problems.append(f"submission.clients[{index}].name: {client.name!r} is listed twice")
        for position, network in enumerate(client.networks):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                key = f"submission.clients[{index}].networks[{position}]"
                problems.append(f"{key}: {network!r} is not a network")
