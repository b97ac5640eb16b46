"""``mssgw run`` and ``mssgw check-config``."""

from __future__ import annotations

import argparse
import asyncio

from gateway import logsetup
from gateway.cli.common import add_config_option, load_settings
from gateway.daemon import Daemon, Role
from gateway.preflight import certificate_findings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser("run", help="run the gateway in the foreground (logs on stderr)")
    add_config_option(run)
    # Internal: the process ``gateway.relay_process`` starts (see gateway/relay_process.py).
    run.add_argument("--role", choices=("relay",), help=argparse.SUPPRESS)
    run.set_defaults(handler=_run)
    check = subparsers.add_parser(
        "check-config", help="validate the configuration file; exit 78 listing every problem"
    )
    add_config_option(check)
    check.set_defaults(handler=_check)


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(args, check_material=True)
    logsetup.configure(settings.logging)
    role: Role = args.role or ("intake" if settings.gateway.relay_process else "all")
    return asyncio.run(Daemon(args.config, settings, role).run())


def _check(args: argparse.Namespace) -> int:
    settings = load_settings(args, check_material=True)
    print(f"{settings.source}: configuration is valid")
    findings = certificate_findings(settings)
    if findings:
        print("certificates:")
    for finding in findings:
        print(f"  {finding.severity:<8} {finding.sentence}")
    return 0
