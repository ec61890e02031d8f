"""The `verify-order`, `export-log` and `check-log` commands: third-party checks of an event.

`verify-order` needs no admin key: the fairness publication is public. `export-log` reads the
admission log through the admin API with the key in GATEKEEP_ADMIN_KEY.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from gatekeep.fairness import check_admission_log, verify_publication

HTTP_TIMEOUT_S = 30.0


def add_arguments(commands: Any) -> None:
    """Register the three subcommands on the `gatekeep` parser's subparsers."""
    verify = commands.add_parser(
        "verify-order",
        help="check an event's revealed fairness seed and recompute its pre-queue order",
    )
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="base URL of the service, such as https://queue.example")
    source.add_argument("--file", help="a saved copy of GET /v1/events/{event_id}/fairness")
    verify.add_argument("--event", help="event id; required with --url")
    verify.add_argument(
        "--commitment", help="the commitment (hex) saved before opening, to compare with the seed"
    )
    verify.add_argument(
        "--log",
        help="an exported admission log (JSON lines); checks that the pre-queue was admitted "
        "in the published order, which holds in fifo mode only",
    )

    export = commands.add_parser(
        "export-log", help="save an event's admission log as JSON lines (needs GATEKEEP_ADMIN_KEY)"
    )
    export.add_argument("--url", required=True, help="base URL of the service")
    export.add_argument("--event", required=True, help="event id")
    export.add_argument("--output", help="file to write (default: standard output)")

    check = commands.add_parser(
        "check-log", help="verify the hash chain of an exported admission log"
    )
    check.add_argument("file", help="admission log as JSON lines, from export-log")


def run_verify_order(args: argparse.Namespace) -> int:
    if args.url and not args.event:
        print("gatekeep: --event is missing; give the event id with --url", file=sys.stderr)
        return 2
    try:
        if args.url:
            url = f"{args.url.rstrip('/')}/v1/events/{args.event}/fairness"
            response = httpx.get(url, timeout=HTTP_TIMEOUT_S)
            response.raise_for_status()
            document = response.json()
        else:
            document = json.loads(Path(args.file).read_text(encoding="utf-8"))
        records = _read_log(Path(args.log)) if args.log else None
    except (OSError, httpx.HTTPError, ValueError) as error:
        print(f"gatekeep: failed to read the publication or log: {error}", file=sys.stderr)
        return 2

    problems = verify_publication(document, args.commitment)
    if records is not None and not problems:
        problems += admission_order_problems(document, records)
    if problems:
        for problem in problems:
            print(f"FAILED: {problem}")
        return 1

    print(
        f"OK: event {document['event_id']}: the seed matches commitment {document['commitment']} "
        f"and orders the {len(document['tickets'])} pre-queue tickets as published"
    )
    if records is not None:
        print("OK: the admission log admits the pre-queue in the published order")
    return 0


def admission_order_problems(
    publication: dict[str, Any], records: list[dict[str, Any]]
) -> list[str]:
    """Check that pre-queue tickets appear in the log in their published order.

    Tickets that never appear (they left or expired) are skipped. Valid for fifo mode only:
    random mode draws at random by design.
    """
    position = {item["ticket_id"]: index for index, item in enumerate(publication["tickets"])}
    last_position = -1
    last_ticket = ""
    for record in records:
        for ticket in record.get("tickets", []):
            if ticket not in position:
                continue
            if position[ticket] < last_position:
                return [
                    f"record {record.get('n')} admits ticket {ticket} (position "
                    f"{position[ticket] + 1}) after ticket {last_ticket} (position "
                    f"{last_position + 1})"
                ]
            last_position = position[ticket]
            last_ticket = ticket
    return []


def run_export_log(args: argparse.Namespace) -> int:
    key = os.environ.get("GATEKEEP_ADMIN_KEY")
    if not key:
        print("gatekeep: GATEKEEP_ADMIN_KEY is missing; set it to an admin key", file=sys.stderr)
        return 2
    url = f"{args.url.rstrip('/')}/admin/events/{args.event}/admission-log"
    output = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
    try:
        with httpx.stream(
            "GET", url, headers={"Authorization": f"Bearer {key}"}, timeout=HTTP_TIMEOUT_S
        ) as response:
            if response.status_code != 200:
                response.read()
                print(
                    f"gatekeep: export failed with HTTP {response.status_code}: {response.text}",
                    file=sys.stderr,
                )
                return 1
            for chunk in response.iter_bytes():
                output.write(chunk)
    except httpx.HTTPError as error:
        print(f"gatekeep: export failed: {error}", file=sys.stderr)
        return 1
    finally:
        if args.output:
            output.close()
    return 0


def run_check_log(args: argparse.Namespace) -> int:
    try:
        records = _read_log(Path(args.file))
    except (OSError, ValueError) as error:
        print(f"gatekeep: failed to read {args.file}: {error}", file=sys.stderr)
        return 2

    problems = check_admission_log(records)
    if problems:
        for problem in problems:
            print(f"FAILED: {problem}")
        return 1
    admitted = sum(len(record.get("tickets", [])) for record in records)
    head = records[-1]["hash"] if records else "none"
    print(f"OK: {len(records)} records, {admitted} admissions, chain head {head}")
    return 0


def _read_log(path: Path) -> list[dict[str, Any]]:
    records = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"line {line_number} is not JSON: {error.msg}") from None
    return records
