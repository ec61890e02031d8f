"""The `gatekeep` command: `serve` runs the service, `simulate` drives clients through it."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from gatekeep.config import ConfigError, Settings, load_settings

logger = logging.getLogger("gatekeep.cli")

SHUTDOWN_TIMEOUT_S = 10


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gatekeep", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="address to bind (default: GATEKEEP_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="public port (default: GATEKEEP_PORT or 8000)")
    serve.add_argument(
        "--workers", type=int, help="worker processes; more than 1 needs GATEKEEP_REDIS_URL"
    )
    serve.add_argument(
        "--events-file", help="TOML file of [[events]] (default: GATEKEEP_EVENTS_FILE)"
    )

    from gatekeep.simulate import add_arguments as add_simulate_arguments

    simulate = commands.add_parser(
        "simulate", help="drive simulated clients through a running service and print a summary"
    )
    add_simulate_arguments(simulate)

    grant = commands.add_parser(
        "grant", help="print a priority grant signed with GATEKEEP_GRANT_SECRET, for testing"
    )
    grant.add_argument("event_id")
    grant.add_argument("bucket")
    grant.add_argument("--device-id", help="bind the grant to one device")
    grant.add_argument("--ttl-s", type=int, default=600, help="seconds the grant stays valid")

    from gatekeep import audit_cli

    audit_cli.add_arguments(commands)

    args = parser.parse_args(argv)
    if args.command == "serve":
        return run_serve(args)
    if args.command == "verify-order":
        return audit_cli.run_verify_order(args)
    if args.command == "export-log":
        return audit_cli.run_export_log(args)
    if args.command == "check-log":
        return audit_cli.run_check_log(args)
    if args.command == "simulate":
        from gatekeep.simulate import run_simulate

        return run_simulate(args)
    return run_grant(args)


def run_serve(args: argparse.Namespace) -> int:
    overrides = {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "events_file": args.events_file,
    }
    try:
        if args.port is not None and not 1 <= args.port <= 65535:
            raise ConfigError(f"--port={args.port} is out of range; use 1 to 65535")
        if args.workers is not None and not 1 <= args.workers <= 64:
            raise ConfigError(f"--workers={args.workers} is out of range; use 1 to 64")
        settings = load_settings(overrides=overrides)
        _check_token_keys(settings)
    except ConfigError as error:
        print(f"gatekeep: configuration error: {error}", file=sys.stderr)
        return 2

    from gatekeep.logs import configure_logging

    configure_logging(settings.log_level)
    if settings.embedded:
        logger.warning(
            "store.embedded reason=no GATEKEEP_REDIS_URL; queue state lives in this one process's "
            "memory and is lost when it stops"
        )
    if not settings.admin_api_keys:
        logger.warning("admin.disabled reason=no GATEKEEP_ADMIN_API_KEYS; admin calls return 403")
    return _run_uvicorn(settings)


def _check_token_keys(settings: Settings) -> None:
    """Load the configured token keys once, so a bad key stops the start with one message."""
    if settings.token_secret is None and settings.token_keys_file is None:
        return
    from gatekeep.tokens import KeyConfigError, Keyring

    try:
        Keyring.from_config(settings.token_secret, settings.token_keys_file)
    except KeyConfigError as error:
        raise ConfigError(f"token keys: {error}") from error


def _run_uvicorn(settings: Settings) -> int:
    import uvicorn

    if settings.workers > 1:
        # Workers are fresh processes that build their own app from the environment, so the
        # command-line overrides travel as GATEKEEP_* variables.
        os.environ["GATEKEEP_HOST"] = settings.host
        os.environ["GATEKEEP_PORT"] = str(settings.port)
        os.environ["GATEKEEP_WORKERS"] = str(settings.workers)
        if settings.events_file:
            os.environ["GATEKEEP_EVENTS_FILE"] = settings.events_file
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_directory())

    from gatekeep import metrics

    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        metrics.prepare_multiprocess_directory(os.environ["PROMETHEUS_MULTIPROC_DIR"])

    if settings.metrics_port is not None:
        metrics_host = settings.metrics_host or settings.host
        try:
            metrics.serve_metrics(metrics_host, settings.metrics_port)
        except OSError as error:
            print(
                f"gatekeep: configuration error: GATEKEEP_METRICS_PORT={settings.metrics_port} "
                f"cannot be bound on {metrics_host} ({error.strerror}); choose a free port or "
                "set GATEKEEP_METRICS_PORT=off",
                file=sys.stderr,
            )
            return 2
        logger.info("metrics.start host=%s port=%s", metrics_host, settings.metrics_port)

    common = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        # Open event streams would otherwise hold a graceful shutdown open for good.
        "timeout_graceful_shutdown": SHUTDOWN_TIMEOUT_S,
        # GATEKEEP_TRUSTED_PROXIES decides whom to believe about client addresses. uvicorn's
        # own handling would trust X-Forwarded-For from 127.0.0.1 by default.
        "proxy_headers": False,
    }
    if settings.workers > 1:
        uvicorn.run(
            "gatekeep.api.app:app_from_environment",
            factory=True,
            workers=settings.workers,
            **common,  # type: ignore[arg-type]
        )
    else:
        from gatekeep.api.app import create_app

        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
    return 0


def _metrics_directory() -> Path:
    """Return a fresh metrics folder named by this process id, removing those of dead services.

    A service stopped by a signal cannot clean up after itself, so the next start does it.
    """
    parent = Path(tempfile.gettempdir()) / "gatekeep-metrics"
    parent.mkdir(exist_ok=True)
    for child in parent.iterdir():
        if child.name.isdigit() and not _process_alive(int(child.name)):
            shutil.rmtree(child, ignore_errors=True)
    directory = parent / str(os.getpid())
    directory.mkdir(exist_ok=True)
    return directory


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_grant(args: argparse.Namespace) -> int:
    import time

    import jwt

    secret = os.environ.get("GATEKEEP_GRANT_SECRET")
    if not secret:
        print(
            "gatekeep: GATEKEEP_GRANT_SECRET is missing; set it to the service's grant secret",
            file=sys.stderr,
        )
        return 2
    claims: dict[str, object] = {
        "event_id": args.event_id,
        "bucket": args.bucket,
        "exp": int(time.time()) + args.ttl_s,
    }
    if args.device_id:
        claims["device_id"] = args.device_id
    print(jwt.encode(claims, secret, algorithm="HS256"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
