"""``pulumi-dbos``: the command line, mirroring ``dbos-cloud db ...`` (DESIGN §4)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .engine import get_engine
from .errors import DbosError
from .resources_util import url_for


def _engine(args: argparse.Namespace) -> Any:
    return get_engine(args.engine, args.data_dir, args.run_as)


def _row(info: Any) -> dict[str, Any]:
    d: dict[str, Any] = info.to_dict()
    d.pop("extra", None)
    d["linked"] = d.pop("is_linked")
    return d


def cmd_list(args: argparse.Namespace) -> int:
    rows = [_row(i) for i in _engine(args).list()]
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
    info = _engine(args).info(args.name)
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
    info = _engine(args).info(args.name)
    if info is None:
        raise DbosError(f"instance {args.name!r} not found", hint="`pulumi-dbos db list` shows the known instances")
    password = None
    if args.show_password:
        password = os.environ.get("PGPASSWORD") or _password_from_stack(args.name, args.stack)
    print(url_for(info.username, password, info.hostname, info.port))
    return 0


def _password_from_stack(name: str, stack: str | None) -> str:
    """The engine keeps no passwords (only Postgres's SCRAM verifier): take it from the stack's state."""
    try:
        outs = stack_resource("Instance", "instance_name", name, stack)
    except DbosError as exc:
        raise DbosError(
            f"no password for {name!r}: {exc.message}",
            hint="run it in the Pulumi project directory with the stack's backend and passphrase set, "
            "or set PGPASSWORD") from None
    if not outs.get("password"):
        raise DbosError(f"the stack does not know the password of {name!r}", hint="set PGPASSWORD")
    return str(outs["password"])


def cmd_backup(args: argparse.Namespace) -> int:
    b = _engine(args).backup(args.name)
    print(f"base backup {b.backup_id} of {b.instance}: consistent from {b.finished_at}")
    return 0


def _unwrap(v: Any) -> Any:
    """A value of `pulumi stack export --show-secrets`: secrets are {sig, plaintext: json}."""
    if isinstance(v, dict) and "plaintext" in v and len(v) == 2:
        return json.loads(v["plaintext"])
    return v


def app_state(app: str, stack: str | None, cwd: str | None = None) -> dict[str, Any]:
    """The AppDatabase outputs of ``app`` in a stack (needs the stack's backend and passphrase env)."""
    return stack_resource("dbos:AppDatabase", "app_name", app, stack, cwd)


def stack_resource(type_suffix: str, key: str, value: str, stack: str | None,
                   cwd: str | None = None) -> dict[str, Any]:
    """Outputs of the resource whose type ends with ``type_suffix`` and whose ``key`` output is ``value``."""
    from .engine import proc

    argv = ["pulumi", "stack", "export", "--show-secrets"] + (["--stack", stack] if stack else [])
    cp = proc.run(argv, env=dict(os.environ), cwd=cwd, timeout=120,
                  hint="run it in the Pulumi project directory, with PULUMI_CONFIG_PASSPHRASE and the backend set")
    deployment = json.loads(cp.stdout).get("deployment", {})
    for r in deployment.get("resources") or []:
        if r.get("type", "").endswith(type_suffix):
            outs = {k: _unwrap(v) for k, v in (r.get("outputs") or {}).items()}
            if outs.get(key) == value:
                return outs
    raise DbosError(f"no {type_suffix.split(':')[-1]} with {key} {value!r} in the stack",
                    hint="is it in the program / stack config, and was `pulumi up` run?")


def cmd_connect(args: argparse.Namespace) -> int:
    from .apps import write_connection

    outs = app_state(args.app, args.stack)
    path = args.config or outs.get("dbos_config") or os.path.join(outs.get("working_dir") or ".", "dbos-config.yaml")
    write_connection(path, outs["hostname"], int(outs["port"]), outs["username"], outs["app_db_name"])
    print(f"{path}: {args.app} -> {outs['hostname']}:{outs['port']}/{outs['app_db_name']} as {outs['username']} "
          "(password from $PGPASSWORD)")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from .apps import Conn, run_commands

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


def cmd_report(args: argparse.Namespace) -> int:
    from .report import render_text

    text = sys.stdin.read() if args.file in (None, "-") else open(args.file).read()
    try:
        print(render_text(text, args.title), end="")
    except ValueError as exc:
        raise DbosError(f"preview-report: {exc}") from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pulumi-dbos", description=__doc__)
    p.add_argument("--engine", default=os.environ.get("PULUMI_DBOS_ENGINE", "local"))
    p.add_argument("--data-dir", default=None, help="engine data dir (default: $PULUMI_DBOS_DATA_DIR or the engine's)")
    p.add_argument("--run-as", default=None, help="OS user running the clusters (as root; default postgres)")
    sub = p.add_subparsers(dest="group", required=True)
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
                   help="include the password ($PGPASSWORD, else from the stack's state)")
    s.add_argument("--stack", default=None)
    s.set_defaults(fn=cmd_url)
    s = db.add_parser("backup", help="take a new base backup now (and prune outside retention)")
    s.add_argument("name")
    s.set_defaults(fn=cmd_backup)
    s = db.add_parser("connect", help="write APP's connection into its dbos-config.yaml")
    s.add_argument("app")
    s.add_argument("--stack", default=None)
    s.add_argument("--config", default=None, help="path of the dbos-config.yaml (default: the app's)")
    s.set_defaults(fn=cmd_connect)
    app = sub.add_parser("app", help="apps").add_subparsers(dest="cmd", required=True)
    s = app.add_parser("rollback", help="run APP's rollback commands against its database")
    s.add_argument("app")
    s.add_argument("--stack", default=None)
    s.set_defaults(fn=cmd_rollback)
    s = sub.add_parser("preview-report", help="`pulumi preview --json` -> Markdown for a PR comment")
    s.add_argument("file", nargs="?", default="-")
    s.add_argument("--title", default="pulumi preview")
    s.set_defaults(fn=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except DbosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
