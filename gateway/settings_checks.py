"""Configuration rules that span several keys, run once every value has been read.

Each rule appends a sentence naming the key to change; none opens a socket, and the only files read are the
value sets ``[documents.value_sets]`` names, so that a default code outside its value set is refused by every
command that reads the configuration (gateway/preflight.py loads the TLS and DKIM material).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

from mappers import xds
from mappers.documents import Code
from mappers.errors import MappingError
from mappers.value_sets import ValueSetError, parse_value_set

if TYPE_CHECKING:
    from gateway.settings import OperatorListenerSettings, Settings, SubmissionSettings


def check_consistency(settings: Settings, problems: list[str]) -> None:
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
    _check_documents(settings, problems)


def _check_documents(settings: Settings, problems: list[str]) -> None:
    """The ``[documents]`` defaults in the forms the CDA wrapper takes, each refusal naming its key."""
    documents = settings.documents
    codes = {
        "facility_type": (documents.facility_type, xds.FACILITY_TYPE_OID),
        "practice_setting": (documents.practice_setting, xds.PRACTICE_SETTING_OID),
        "author_role": (documents.author_role, None),
        "author_specialty": (documents.author_specialty, None),
        "class_code": (documents.class_code, xds.CLASS_CODE_OID),
        "content_type_code": (documents.content_type_code, xds.CONTENT_TYPE_OID),
        "format_code": (documents.format_code, None),
    }
    for key, (value, scheme) in codes.items():
        code = None
        if value:
            try:
                code = xds.parse_code_option(value, f"documents.{key}", scheme)
            except MappingError as error:
                problems.append(str(error))
        _check_membership(key, code, getattr(documents.value_sets, key), problems)
    if documents.author_rpps:
        try:
            xds.check_rpps(documents.author_rpps)
        except MappingError as error:
            problems.append(f"documents.author_rpps: {error}")
    person = (documents.author_given, documents.author_role, documents.author_specialty)
    if any((*person, documents.author_rpps, documents.author_family)):
        # A default author the wrapper would refuse: said when the file is read, not at the first PDF.
        for key in ("author_rpps", "author_family"):
            if not getattr(documents, key):
                problems.append(f"documents.{key}: required for a default author (CI-SIS: no nullFlavor)")


def _check_membership(key: str, code: Code | None, value_set: Path | None, problems: list[str]) -> None:
    """``documents.KEY`` against the value set ``documents.value_sets.KEY`` names, when it names one; the
    file is read even without a code, so that a file that is no value set is said before it is needed."""
    if value_set is None:
        return
    where = f"documents.value_sets.{key}"
    try:
        data = value_set.read_bytes()
    except OSError:
        return  # unreadable: the loader has named documents.value_sets.KEY already
    try:
        known = parse_value_set(data, what=str(value_set))
    except ValueSetError as error:
        problems.append(f"{where}: {error}")
        return
    problem = known.problem(code, f"documents.{key}") if code is not None else None
    if problem:
        problems.append(f"{problem} (read from {value_set}, {where})")


MAX_FETCH_BATCH = 200
"""Most messages asked in one IMAP FETCH (see ``_check_imap``)."""


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
    if not 1 <= imap.fetch_batch <= MAX_FETCH_BATCH:
        # aioimaplib reads a reply recursively, a level per line: ~500 small messages in one read overflow it.
        problems.append(f"imap.fetch_batch: must be between 1 and {MAX_FETCH_BATCH}")


def _check_operations(settings: Settings, problems: list[str]) -> None:
    """The metrics address, the trust-list and directory sources and the certificate thresholds."""
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
    directory = settings.directory
    if directory.url and not directory.url.startswith("https://"):
        problems.append(
            "directory.url: must be an https:// URL (the directory decides which recipients pass)"
        )
    if not 0.0 <= directory.min_share <= 1.0:
        problems.append("directory.min_share: must be between 0 and 1 (the share of the previous count)")
    if directory.min_entries < 1:
        problems.append("directory.min_entries: must be at least 1")
    if directory.max_download < 1024 * 1024:
        problems.append("directory.max_download: must be at least 1048576 bytes")
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
    inbound = settings.inbound
    if inbound.max_inflight_bytes and inbound.max_inflight_bytes < inbound.max_message_size:
        problems.append(
            "inbound.max_inflight_bytes: must be at least inbound.max_message_size (0: no cap), "
            "or a message of the largest size accepted could never be received"
        )
    for name in ("submission", "operator_listener"):
        listener: SubmissionSettings | OperatorListenerSettings = getattr(settings, name)
        _check_addresses(name, listener.listen, problems)
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
        _check_networks(f"submission.clients[{index}].networks", client.networks, problems)
    _check_hl7(settings, problems)


def _check_addresses(section: str, addresses: tuple[str, ...], problems: list[str]) -> None:
    """Every listen entry host:port, named by its index so the admin finds it."""
    for index, address in enumerate(addresses):
        try:
            host, port = split_host_port(address)
            if not host or port > 65535:
                raise ValueError(address)
        except ValueError:
            problems.append(f"{section}.listen[{index}]: {address!r} is not host:port (e.g. 127.0.0.1:587)")


def _check_networks(key: str, networks: tuple[str, ...], problems: list[str]) -> None:
    """Networks read as ipaddress does, refused at load time rather than at the first connection."""
    for position, network in enumerate(networks):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            problems.append(f"{key}[{position}]: {network!r} is not a network")


def _check_hl7(settings: Settings, problems: list[str]) -> None:
    """The MLLP listener: TLS material coherent, producers distinguishable and able to send."""
    hl7 = settings.hl7
    _check_addresses("hl7", hl7.listen, problems)
    _check_networks("hl7.networks", hl7.networks, problems)
    if (hl7.certificate is None) != (hl7.key is None):
        problems.append("hl7.key: certificate and key go together (TLS on the MLLP listener)")
    if hl7.client_ca is not None and hl7.certificate is None:
        problems.append(
            "hl7.client_ca: client certificates are only verified with TLS (set certificate and key)"
        )
    for name, value in (("max_message_size", hl7.max_message_size), ("max_connections", hl7.max_connections)):
        if value < 1:
            problems.append(f"hl7.{name}: must be at least 1")
    if hl7.listen and not hl7.producers:
        problems.append("hl7.producers: the listener refuses every message without at least one producer")
    seen: set[tuple[str, str]] = set()
    for index, producer in enumerate(hl7.producers):
        key = f"hl7.producers[{index}]"
        if not producer.application:
            problems.append(f"{key}.application: required (the producer's MSH-3)")
        if (producer.application, producer.facility) in seen:
            problems.append(f"{key}.application: another producer has the same MSH-3/MSH-4")
        seen.add((producer.application, producer.facility))
        _check_networks(f"{key}.networks", producer.networks, problems)
        if producer.certificate_cn and hl7.client_ca is None:
            problems.append(
                f"{key}.certificate_cn: needs hl7.client_ca (client certificates are not asked for)"
            )
        if "@" not in producer.from_address:
            problems.append(f"{key}.from_address: required (the BAL applicative its mail is sent from)")
        if bool(producer.zam_host) != bool(producer.zam_port) or not 0 <= producer.zam_port <= 65535:
            problems.append(f"{key}.zam_port: zam_host and zam_port (1-65535) go together")
        if producer.zam_ack_timeout <= 0:
            problems.append(f"{key}.zam_ack_timeout: must be more than 0")
        if not producer.zam_retry_schedule or min(producer.zam_retry_schedule) <= 0:
            problems.append(f"{key}.zam_retry_schedule: needs at least one delay, each more than 0")
    _check_hl7_consumers(settings, problems)


def _check_hl7_consumers(settings: Settings, problems: list[str]) -> None:
    """Consumers: reachable, named in MSH, each mailbox served by one consumer only (order of arrival)."""
    hl7 = settings.hl7
    if hl7.consumers and not hl7.application:
        problems.append("hl7.application: required with consumers (MSH-3 of the MDMs)")
    names: set[str] = set()
    served: dict[str, str] = {}
    for index, consumer in enumerate(hl7.consumers):
        key = f"hl7.consumers[{index}]"
        if consumer.name in names:
            problems.append(f"{key}.name: {consumer.name!r} is used by another consumer")
        names.add(consumer.name)
        if not consumer.mailboxes:
            problems.append(f"{key}.mailboxes: needs at least one mailbox whose documents it gets")
        for position, mailbox in enumerate(consumer.mailboxes):
            address = mailbox.strip().lower()
            if "@" not in address:
                problems.append(f"{key}.mailboxes[{position}]: {mailbox!r} is not a mail address")
            elif address in served:
                other = served[address]
                problems.append(f"{key}.mailboxes[{position}]: {mailbox!r} is already served by {other!r}")
            served.setdefault(address, consumer.name)
        if not consumer.host or not 1 <= consumer.port <= 65535:
            problems.append(
                f"{key}.port: host and port (1-65535) of the consumer's MLLP listener are required"
            )
        if not consumer.application:
            problems.append(f"{key}.application: required (MSH-5, the consumer's application name)")
        if consumer.tls and consumer.ca_bundle is None and settings.tls.ca_bundle is None:
            problems.append(
                f"{key}.ca_bundle: required with tls (or tls.ca_bundle): the consumer is verified"
            )
        if consumer.ack_timeout <= 0:
            problems.append(f"{key}.ack_timeout: must be more than 0")
        if not consumer.retry_schedule:
            problems.append(f"{key}.retry_schedule: needs at least one delay")
