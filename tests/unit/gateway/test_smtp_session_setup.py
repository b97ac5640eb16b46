"""A listener session is set up as aiosmtpd's ``SMTP.__init__`` would, without looking its class over again.

``GatewaySMTP.__init__`` replaces aiosmtpd's for speed (issue 16): these tests hold it to what aiosmtpd 1.4
itself sets, so an aiosmtpd upgrade that adds or renames an attribute fails here, not in production.
"""

from __future__ import annotations

import inspect
import ssl
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from gateway.inbound.auth_throttle import AuthThrottle
from gateway.inbound.inflight import InflightBytes
from gateway.inbound.smtp_server import (
    CommandReader,
    Connections,
    GatewaySMTP,
    ListenerConfig,
    ListenerKind,
    _capture,
    _Handler,
)

# Objects made for each session (its reader, handler and their references): compared by type instead.
_PER_SESSION = {"_stream_reader_wr", "_strong_reader", "_client_connected_cb", "event_handler", "_closed"}


def _config(kind: ListenerKind) -> ListenerConfig:
    return ListenerConfig(
        kind=kind,
        hostname="mssgw.test",
        tls=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
        max_message_size=4096,
        timeout=42.0,
    )


def _session(config: ListenerConfig) -> GatewaySMTP:
    return GatewaySMTP(
        config, intake=None, connections=Connections(), throttle=AuthThrottle(), inflight=InflightBytes()
    )  # type: ignore[arg-type]  # never reached here


def _by_aiosmtpd(ours: GatewaySMTP) -> GatewaySMTP:
    """``ours`` set up again by aiosmtpd's own ``SMTP.__init__``, with the arguments ours stands for."""
    reference = GatewaySMTP.__new__(GatewaySMTP)
    config = ours.config
    for name in ("config", "intake", "connections", "throttle", "inflight", "_counted", "_commands"):
        setattr(reference, name, getattr(ours, name))
    reference._auth_failures = 0
    SMTP.__init__(
        reference,
        _Handler(reference),
        data_size_limit=config.max_message_size or None,
        hostname=config.hostname,
        ident="mssgw",
        tls_context=config.tls,
        require_starttls=config.require_starttls,
        timeout=config.timeout,
        auth_require_tls=True,
        authenticator=_capture,
        auth_exclude_mechanism=[] if config.kind == "submission" else ["PLAIN", "LOGIN"],
    )
    return reference


def _unbound(method: Any) -> Any:
    return getattr(method, "__func__", method)


@pytest.mark.parametrize("kind", ["submission", "operator"])
async def test_a_session_has_the_attributes_aiosmtpds_init_gives_it(kind: ListenerKind) -> None:
    ours = _session(_config(kind))
    reference = _by_aiosmtpd(ours)
    # command_size_limits is the session's own (aiosmtpd's is on the class).
    assert set(vars(ours)) == set(vars(reference)) | {"command_size_limits"}
    plain = set(vars(ours)) - _PER_SESSION - {"_auth_methods", "_handle_hooks", "_smtp_methods", "config"}
    plain -= {"command_size_limits"}
    assert {name: getattr(ours, name) for name in plain} == {name: getattr(reference, name) for name in plain}
    for name in _PER_SESSION:
        assert isinstance(getattr(ours, name), type(getattr(reference, name)))
    assert isinstance(ours._strong_reader, CommandReader)
    assert ours._stream_reader_wr() is ours._strong_reader
    assert {k: (_unbound(m.method), m.is_builtin) for k, m in ours._auth_methods.items()} == {
        k: (_unbound(m.method), m.is_builtin) for k, m in reference._auth_methods.items()
    }
    assert all(m.method.__self__ is ours for m in ours._auth_methods.values())
    assert {k: _unbound(h) for k, h in ours._handle_hooks.items()} == {
        k: _unbound(h) for k, h in reference._handle_hooks.items()
    }
    assert all(h.__self__ is ours.event_handler for h in ours._handle_hooks.values())
    assert ours._smtp_methods.keys() == reference._smtp_methods.keys()
    for command, counted in ours._smtp_methods.items():
        assert counted.__self__ is ours
        assert counted.__func__.__wrapped__ is _unbound(reference._smtp_methods[command])
    assert dict(ours.command_size_limits) == {}
    assert ours.command_size_limits["MAIL"] == SMTP.command_size_limit


async def test_sessions_share_one_look_at_the_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    first = _session(_config("submission"))

    def never(*_: object) -> None:
        raise AssertionError("introspected again")

    monkeypatch.setattr(inspect, "getmembers", never)
    second = _session(_config("submission"))
    assert first._smtp_methods["MAIL"].__func__ is second._smtp_methods["MAIL"].__func__
    assert first._smtp_methods["MAIL"].__self__ is first
    assert second._smtp_methods["MAIL"].__self__ is second


async def test_each_session_has_its_own_command_size_limits() -> None:
    first, second = _session(_config("submission")), _session(_config("submission"))
    first.command_size_limits["MAIL"] += 26
    assert second.command_size_limits["MAIL"] == SMTP.command_size_limit
