"""`pulumi-dbos db ...`: instances, as `dbos-cloud db ...`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..engine.urls import url_for
from ..errors import DbosError
from .common import app_state, config_file, engine_from_args, password_from_stack


def _row(info: Any) -> dict[str, Any]:
    d: dict[str, Any] = info.to_dict()
    d.pop("extra", None)
    d["linked"] = d.pop("is_linked")
    return d


def cmd_list(args: argparse.Namespace) -> int:
    rows = [_row(i) for i in engine_from_args(args).list()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ("name", "status", "hostname", "port", "username", "linked")
    widths = [max([len(c)] + [len(str(r[c])) for r in rows]) for c in cols]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = engine_from_args(args).info(args.name)
    if info is None:
        raise DbosError(f"instance {args.name!r} not found", hint="`pulumi-dbos db list` shows the known instances")
    row = _row(info)
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        for k, v in row.items():
            print(f"{k:26} {v}")
    return 0


def cmd_url(args: argparse.Namespace) -> int:
    info = engine_from_args(args).info(args.name)
    if info is None:
        raise DbosError(f"instance {args.name!r} not found", hint="`pulumi-dbos db list` shows the known instances")
    password = None
    if args.show_password:
        # an explicit --stack wins over $PGPASSWORD (which may be left over from another database)
        password = (password_from_stack(args.name, args.stack) if args.stack
                    else os.environ.get("PGPASSWORD") or password_from_stack(args.name, None))
    print(url_for(info.username, password, info.hostname, info.port))
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    b = engine_from_args(args).backup(args.name)
    print(f"base backup {b.backup_id} of {b.instance}: consistent from {b.finished_at}")
    return 0


def cmd_switchover(args: argparse.Namespace) -> int:
    """A planned switchover of a high-availability instance (Patroni's, to its synchronous standby by default)."""
    eng = engine_from_args(args)
    before = eng.info(args.name)
    if before is None:
        raise DbosError(f"instance {args.name!r} not found", hint="`pulumi-dbos db list` shows the known instances")
    if not before.high_availability:
        raise DbosError(f"instance {args.name!r} is not a high-availability instance",
                        hint=f"set dbos:instances.{args.name}.highAvailability: true and `pulumi up`")
    info = eng.switchover(args.name, args.to)
    print(f"switchover of {args.name}: leader {before.leader} -> {info.leader} (timeline {info.timeline})")
    return 0


def _local_only(eng: Any, what: str) -> Any:
    if getattr(eng, "kind", None) != "local":
        raise DbosError(f"`pulumi-dbos db {what}` works on the local engine (and so on a pulumi-dbos serve's host)",
                        hint="DBOS Cloud keeps its own backups: `dbos-cloud db restore`")
    return eng


def cmd_recover(args: argparse.Namespace) -> int:
    """Lost instances back at their newest archived point, from the backup repository."""
    eng = _local_only(engine_from_args(args, new_ok=True), "recover")
    names = [args.name] if args.name else [i.name for i in eng.list() if i.status == "lost"]
    if not names:
        print("no lost instance: nothing to recover")
        return 0
    failed = 0
    for name in names:
        try:
            info = eng.recover(name)
        except DbosError as exc:
            failed += 1
            print(f"{name}: not recovered: {exc}", file=sys.stderr)
            continue
        print(f"{name}: recovered at its newest archived point, {info.status} on {info.hostname}:{info.port}")
    if not failed:
        print("then `pulumi up --refresh` in each stack brings its state up to date")
    return 1 if failed else 0


def cmd_restore(args: argparse.Namespace) -> int:
    """``dbos-cloud db restore``: SOURCE (running, lost or destroyed within its deleted retention) as of TIME
    into the new instance TARGET; its password is SOURCE's (from the stack's state) or $PGPASSWORD."""
    eng = engine_from_args(args)
    password = os.environ.get("PGPASSWORD") or password_from_stack(args.source, getattr(args, "stack", None))
    info = eng.restore_to_new(args.source, args.target, args.time, password=password)
    print(f"{info.name}: restored from {args.source} as of {info.restored_to}, {info.status} on "
          f"{info.hostname}:{info.port}")
    return 0


def _drill_line(d: Any) -> str:
    rto = "-" if d.rto_seconds is None else f"{d.rto_seconds:.1f}s"
    rpo = "-" if d.rpo_seconds is None else f"{d.rpo_seconds:.0f}s"
    what = "ok" if d.ok else "FAILED"
    return f"{d.at}  {what:6}  RTO {rto:>8}  RPO {rpo:>7}  {d.reason or ''}".rstrip()


def cmd_drill(args: argparse.Namespace) -> int:
    sql = None
    if args.sql:
        try:
            with open(args.sql, encoding="utf-8") as fh:
                sql = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise DbosError(f"--sql {args.sql}: cannot read it: {exc}") from None
    d = engine_from_args(args).drill(args.name, check_sql=sql, check_database=args.database)
    if args.json:
        print(json.dumps(d.to_dict(), indent=2))
    else:
        compared = "row counts compared" if d.counts_compared else "row counts NOT compared"
        print(f"restore drill of {d.instance}: {'ok' if d.ok else 'FAILED'} ({d.tables} tables, {compared}"
              f"{', check SQL passed' if d.ok and d.sql_checked else ''})")
        print(_drill_line(d))
    if not d.ok:
        print(f"RESTORE DRILL FAILED for {d.instance}: {d.reason}\n  hint: the newest backup of {d.instance} "
              "could not be restored as it is; take a new base backup (`pulumi-dbos db backup "
              f"{d.instance}`), check the archive, then drill again", file=sys.stderr)
        return 1
    return 0


def cmd_drills(args: argparse.Namespace) -> int:
    eng = engine_from_args(args)
    drills = eng.drills(args.name)
    if drills is None:
        raise DbosError(f"{eng.describe()} keeps no restore drills: they are a pulumi-dbos serve extension, "
                        "DBOS Cloud's API has none", hint="drill on the local engine or a pulumi-dbos serve")
    if args.json:
        print(json.dumps([d.to_dict() for d in drills], indent=2))
    elif not drills:
        print(f"no restore drills of {args.name} yet (`pulumi-dbos db drill {args.name}` runs one)")
    else:
        for d in drills:
            print(_drill_line(d))
    return 0


def cmd_connect(args: argparse.Namespace) -> int:
    from ..apps import Conn
    from ..dbos_config import point_at

    if args.config:
        config_file(args.config)  # before asking pulumi anything
    outs = app_state(args.app, args.stack)
    missing = [k for k in ("hostname", "port", "username", "app_db_name") if outs.get(k) in (None, "")]
    if missing:
        raise DbosError(f"app {args.app!r} in the stack has no {', '.join(missing)}", hint="run `pulumi up` first")
    path = config_file(args.config or outs.get("dbos_config")
                        or os.path.join(outs.get("working_dir") or ".", "dbos-config.yaml"))
    if outs.get("kind") == "App" and _inside(path, outs.get("source")):
        raise DbosError(
            f"app {args.app!r} is a deployed App: {path} is part of its source, and writing a connection into it "
            "would replace its ${...} references (system_database_url: ${DBOS_SYSTEM_DATABASE_URL}, filled in by "
            "the engine on whichever instance the app is bound to) with one instance's literal URL, and make the "
            "next `pulumi up` deploy that as a new version; nothing was written",
            hint=f"to run the app on your machine against {outs['hostname']}:{outs['port']}, export "
            "DBOS_SYSTEM_DATABASE_URL and DBOS_DATABASE_URL (see `pulumi-dbos db url INSTANCE -S`), or write a "
            "copy outside the source: `pulumi-dbos db connect APP --config ../local-dbos-config.yaml`")
    url = outs.get("database_url")
    # database_url holds the password percent-encoded; unknown -> treat it as needing escapes
    password = Conn.from_url(url).password if isinstance(url, str) and url else None
    in_file = point_at(path, outs["hostname"], int(outs["port"]), outs["username"], outs["app_db_name"],
                               password=password, url_safe=None if password else False)
    print(f"{path}: {args.app} -> {outs['hostname']}:{outs['port']}/{outs['app_db_name']} as {outs['username']} "
          "(password from $PGPASSWORD)")
    if not in_file:
        print("note: the password has characters a URL must escape, so the URLs in the file carry no password; "
              "libpq (which DBOS uses through psycopg) reads it from $PGPASSWORD: set PGPASSWORD when you run the app")
    return 0


def _inside(path: str, directory: Any) -> bool:
    if not isinstance(directory, str) or not directory:
        return False
    return os.path.realpath(path).startswith(os.path.realpath(directory).rstrip(os.sep) + os.sep)


def add_parsers(sub: Any) -> None:
    """The `db` commands."""
    db = sub.add_parser("db", help="database instances").add_subparsers(dest="cmd", required=True)
    s = db.add_parser("list", help="instances known to the engine")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_list)
    s = db.add_parser("status", help="one instance's status")
    s.add_argument("name")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)
    s = db.add_parser("url", help="the instance's connection URL")
    s.add_argument("name")
    s.add_argument("-S", "--show-password", action="store_true",
                   help="include the password (with --stack: from that stack's state; else $PGPASSWORD, "
                   "else from the current stack's state)")
    s.set_defaults(fn=cmd_url)
    s = db.add_parser("backup", help="take a new base backup now (and prune outside retention)")
    s.add_argument("name")
    s.set_defaults(fn=cmd_backup)
    s = db.add_parser("recover", help="bring lost instances back (their data dir, directory or catalog row gone) "
                      "at their newest archived point, from the backup repository alone")
    s.add_argument("name", nargs="?", help="one instance (default: every lost one)")
    s.set_defaults(fn=cmd_recover)
    s = db.add_parser("restore", help="restore SOURCE (running, lost, or destroyed and still kept) as of --time "
                      "into a new instance TARGET")
    s.add_argument("source")
    s.add_argument("target")
    s.add_argument("--time", default="latest", help="RFC3339 with an offset, or latest (default)")
    s.set_defaults(fn=cmd_restore)
    s = db.add_parser("drill", help="restore the newest backup into a scratch instance, check it, remove it "
                      "(exit 1 when the drill fails)")
    s.add_argument("name")
    s.add_argument("--sql", default=None, metavar="FILE",
                   help="check SQL run on the restored copy: it must succeed, and its last query return true; "
                   "kept for the instance's later drills (an empty file removes it)")
    s.add_argument("--database", default=None, help="the database the check SQL runs in (default postgres)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_drill)
    s = db.add_parser("drills", help="the instance's last restore drills, newest first")
    s.add_argument("name")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_drills)
    s = db.add_parser("switchover", help="a planned switchover of a high-availability instance (its synchronous "
                      "standby becomes the primary; the endpoint follows)")
    s.add_argument("name")
    s.add_argument("--to", default=None, metavar="MEMBER", help="the member or host to promote (default: the "
                   "synchronous standby)")
    s.set_defaults(fn=cmd_switchover)
    s = db.add_parser("connect", help="write APP's connection into its dbos-config.yaml (an AppDatabase's; a "
                      "deployed App's source is left alone)")
    s.add_argument("app")
    s.add_argument("--config", default=None, help="path of the dbos-config.yaml (default: the app's)")
    s.set_defaults(fn=cmd_connect)

