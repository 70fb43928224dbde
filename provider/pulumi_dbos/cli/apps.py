"""`pulumi-dbos app ...`: apps, as `dbos-cloud app ...`, and the rollback of an app database."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import DbosError
from .common import app_state, engine_from_args

_APP_LABELS = {"Name": "Application Name", "ID": "ID", "PostgresInstanceName": "Postgres Instance Name",
               "ApplicationDatabaseName": "Application Database Name", "Status": "Status", "Version": "Version",
               "AppURL": "App URL"}



def cmd_rollback(args: argparse.Namespace) -> int:
    from ..apps import Conn, run_commands

    outs = app_state(args.app, args.stack)
    commands = list(outs.get("rollback") or [])
    if not commands:
        raise DbosError(f"app {args.app!r} has no rollback commands", hint="set rollback (or database.rollback "
                        "in its dbos-config.yaml) and run `pulumi up`")
    conn = Conn.from_url(outs.get("owner_database_url") or outs["database_url"])
    res = run_commands(commands, conn, outs.get("working_dir"), "rollback")
    print(res.output, end="")
    print(f"rolled back {args.app!r}: {len(res.ran)} command(s)")
    return 0


def _app_row(info: Any) -> dict[str, Any]:
    """An app as DBOS Cloud's API shows it (``Application``), so `--json` output reads the same."""
    return {"Name": info.name, "ID": info.name, "PostgresInstanceName": info.instance_name,
            "ApplicationDatabaseName": info.app_db_name, "Status": info.status, "Version": info.version or "",
            "AppURL": info.app_url}


def _print_record(row: dict[str, Any], labels: dict[str, str]) -> None:
    for key, label in labels.items():
        print(f"{label}: {row[key]}")


def _app(args: argparse.Namespace) -> Any:
    info = engine_from_args(args).apps.info(args.app)
    if info is None:
        raise DbosError(f"application {args.app} not found", hint="`pulumi-dbos app list` shows the apps")
    return info


def cmd_app_list(args: argparse.Namespace) -> int:
    rows = [_app_row(i) for i in engine_from_args(args).apps.all()]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("No applications found")
    for r in rows if not args.json else []:
        _print_record(r, _APP_LABELS)
        print("-------------------------")
    return 0


def cmd_app_status(args: argparse.Namespace) -> int:
    row = _app_row(_app(args))
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        _print_record(row, _APP_LABELS)
    return 0


def cmd_app_versions(args: argparse.Namespace) -> int:
    info = _app(args)
    rows = [{"ApplicationName": info.name, "Version": v.version, "CreationTime": v.created_at}
            for v in info.versions]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("No versions found")
    for r in rows if not args.json else []:
        _print_record(r, {"ApplicationName": "Application Name", "Version": "Version",
                          "CreationTime": "Creation Timestamp"})
        print("-------------------------")
    return 0


def cmd_app_logs(args: argparse.Namespace) -> int:
    """The app's log; its control characters escaped (``cli/terminal.py``) unless ``--raw``."""
    _app(args)
    print(engine_from_args(args).apps.logs(args.app, args.lines))
    return 0


def add_parsers(sub: Any) -> None:
    """The `app` commands."""
    app = sub.add_parser("app", help="apps").add_subparsers(dest="cmd", required=True)
    s = app.add_parser("rollback", help="run APP's rollback commands against its database")
    s.add_argument("app")
    s.set_defaults(fn=cmd_rollback)
    for name, fn, what in (("status", cmd_app_status, "an app's status"), ("versions", cmd_app_versions,
                           "an app's stored versions, oldest first"), ("logs", cmd_app_logs, "an app's log")):
        s = app.add_parser(name, help=what)
        s.add_argument("app")
        if name == "logs":
            s.add_argument("-n", "--lines", type=int, default=100)
            s.add_argument("--raw", dest="raw_output", action="store_true",
                           help="print the log as it is: its control characters (escape sequences) reach the "
                                "terminal (default: shown escaped, \\x1b...)")
        else:
            s.add_argument("--json", action="store_true")
        s.set_defaults(fn=fn)
    s = app.add_parser("list", help="apps known to the engine")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_app_list)

