"""``pulumi-dbos``: the command line, mirroring ``dbos-cloud db ...`` (DESIGN §4)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from .engine import default_data_dir, get_engine
from .errors import DbosError
from .resources_util import url_for

DEBUG_ENV = "PULUMI_DBOS_DEBUG"
PULUMI_HINT = "run it in the Pulumi project directory, with PULUMI_CONFIG_PASSPHRASE and the backend set"
#: stack config key -> CLI option (``args`` attribute) for the engine settings
STACK_ENGINE_KEYS = {"dbos:engine": "engine", "dbos:dataDir": "data_dir", "dbos:runAs": "run_as",
                     "dbos:cloudDomain": "cloud_domain", "dbos:cloudCaCert": "cloud_ca_cert"}


def _engine(args: argparse.Namespace) -> Any:
    """The engine of an existing data dir: read commands never create one.

    Options given on the command line win; with ``--stack`` (``db url``), the stack's ``dbos:engine``,
    ``dbos:dataDir`` and ``dbos:runAs`` come next; then ``$PULUMI_DBOS_*`` and the defaults.
    """
    if getattr(args, "stack", None):
        for attr, value in stack_engine_settings(args.stack).items():
            if getattr(args, attr, None) is None:
                setattr(args, attr, value)
    engine = args.engine or os.environ.get("PULUMI_DBOS_ENGINE") or "local"
    if engine == "dbos-cloud":
        return _cloud_engine(args)
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    try:
        has_catalog = (data_dir / "catalog.db").is_file()
    except PermissionError:
        raise DbosError(f"data dir {data_dir} is not readable by this user",
                        hint="run it as root or as the OS user that runs the clusters (dbos:runAs)") from None
    if not has_catalog:
        what = "does not exist" if not data_dir.exists() else "has no catalog.db (no instance was created there)"
        raise DbosError(
            f"data dir {data_dir} {what}",
            hint="pass the data dir the stack uses: --data-dir DIR (its `dbos:dataDir`), or `db url NAME --stack S`; "
            "without either, $PULUMI_DBOS_DATA_DIR or the default is used")
    return get_engine(engine, str(data_dir), args.run_as)


def _cloud_engine(args: argparse.Namespace) -> Any:
    """The dbos-cloud engine: the domain and CA certificate from the options or the stack; the token from
    ``$DBOS_CLOUD_TOKEN``, else the stack's ``dbos:cloudToken`` secret (with ``--stack``), else the DBOS CLI's
    ``.dbos/credentials`` in the current directory (the engine's own fallback)."""
    token = os.environ.get("DBOS_CLOUD_TOKEN")
    stack = getattr(args, "stack", None)
    if not token and stack:
        from .engine import proc

        cp = proc.run(["pulumi", "config", "get", "dbos:cloudToken", "--stack", stack], env=dict(os.environ),
                      timeout=120, check=False)
        token = (cp.stdout or "").strip() or None
    ca = getattr(args, "cloud_ca_cert", None)
    if ca and not Path(ca).is_absolute() and stack:
        from .config.stack import resolve_project_path

        ca = str(resolve_project_path(ca, Path.cwd()))
    return get_engine("dbos-cloud", domain=getattr(args, "cloud_domain", None), token=token, ca_cert=ca)


def stack_engine_settings(stack: str, cwd: str | None = None) -> dict[str, str]:
    """``dbos:engine``/``dataDir``/``runAs`` of a stack (``pulumi config --json``), as CLI option names."""
    from .engine import proc

    cp = proc.run(["pulumi", "config", "--json", "--stack", stack], env=dict(os.environ), cwd=cwd, timeout=120,
                  hint=PULUMI_HINT)
    try:
        config = json.loads(cp.stdout or "{}")
    except json.JSONDecodeError:
        raise DbosError(f"`pulumi config --json --stack {stack}` did not print JSON", hint=PULUMI_HINT) from None
    out: dict[str, str] = {}
    for key, attr in STACK_ENGINE_KEYS.items():
        entry = config.get(key) if isinstance(config, dict) else None
        value = entry.get("value") if isinstance(entry, dict) and not entry.get("secret") else None
        if isinstance(value, str) and value:
            out[attr] = value
    return out


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
        # an explicit --stack wins over $PGPASSWORD (which may be left over from another database)
        password = (_password_from_stack(args.name, args.stack) if args.stack
                    else os.environ.get("PGPASSWORD") or _password_from_stack(args.name, None))
    print(url_for(info.username, password, info.hostname, info.port))
    return 0


def _password_from_stack(name: str, stack: str | None) -> str:
    """The engine keeps no passwords (only Postgres's SCRAM verifier): take it from the stack's state."""
    try:
        outs = stack_resource("Instance", "instance_name", name, stack)
    except DbosError as exc:
        raise DbosError(
            f"no password for {name!r}: {exc.message}",
            hint="run it in the Pulumi project directory with the stack's backend and passphrase set"
            + ("" if stack else ", or set PGPASSWORD")) from None
    if not outs.get("password"):
        raise DbosError(f"the stack does not know the password of {name!r}",
                        hint="run `pulumi up` so that its state has it" if stack
                        else "set PGPASSWORD")
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
    """The outputs of ``app`` (an AppDatabase, else an App) in a stack (needs the stack's backend and
    passphrase env). An App's are shaped like an AppDatabase's (host, port, user, its config file)."""
    try:
        return stack_resource("dbos:AppDatabase", "app_name", app, stack, cwd)
    except DbosError:
        outs = stack_resource("dbos:App", "app_name", app, stack, cwd)
    outs.update(hostname=outs.get("instance_host"), port=outs.get("instance_port"), username=outs.get("instance_user"),
                dbos_config=os.path.join(outs.get("source") or ".", "dbos-config.yaml"))
    return outs


def stack_resource(type_suffix: str, key: str, value: str, stack: str | None,
                   cwd: str | None = None) -> dict[str, Any]:
    """Outputs of the resource whose type ends with ``type_suffix`` and whose ``key`` output is ``value``."""
    from .engine import proc

    argv = ["pulumi", "stack", "export", "--show-secrets"] + (["--stack", stack] if stack else [])
    cp = proc.run(argv, env=dict(os.environ), cwd=cwd, timeout=120, hint=PULUMI_HINT)
    try:
        deployment = json.loads(cp.stdout).get("deployment") or {}
    except (json.JSONDecodeError, AttributeError):
        raise DbosError("`pulumi stack export` did not print a deployment", hint=PULUMI_HINT) from None
    for r in deployment.get("resources") or []:
        if r.get("type", "").endswith(type_suffix):
            outs = {k: _unwrap(v) for k, v in (r.get("outputs") or {}).items()}
            if outs.get(key) == value:
                return outs
    raise DbosError(f"no {type_suffix.split(':')[-1]} with {key} {value!r} in the stack",
                    hint="is it in the program / stack config, and was `pulumi up` run?")


def _config_file(path: str) -> str:
    if not os.path.isfile(path):
        raise DbosError(f"{path}: no such file", hint="pass the app's dbos-config.yaml with --config PATH")
    return path


def cmd_connect(args: argparse.Namespace) -> int:
    from .apps import Conn, write_connection

    if args.config:
        _config_file(args.config)  # before asking pulumi anything
    outs = app_state(args.app, args.stack)
    missing = [k for k in ("hostname", "port", "username", "app_db_name") if outs.get(k) in (None, "")]
    if missing:
        raise DbosError(f"app {args.app!r} in the stack has no {', '.join(missing)}", hint="run `pulumi up` first")
    path = _config_file(args.config or outs.get("dbos_config")
                        or os.path.join(outs.get("working_dir") or ".", "dbos-config.yaml"))
    url = outs.get("database_url")
    # database_url holds the password percent-encoded; unknown -> treat it as needing escapes
    password = Conn.from_url(url).password if isinstance(url, str) and url else None
    in_file = write_connection(path, outs["hostname"], int(outs["port"]), outs["username"], outs["app_db_name"],
                               password=password, url_safe=None if password else False)
    print(f"{path}: {args.app} -> {outs['hostname']}:{outs['port']}/{outs['app_db_name']} as {outs['username']} "
          "(password from $PGPASSWORD)")
    if not in_file:
        print("note: the password has characters a URL must escape, so the URLs in the file carry no password; "
              "libpq (which DBOS uses through psycopg) reads it from $PGPASSWORD: set PGPASSWORD when you run the app")
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


def _app_row(info: Any) -> dict[str, Any]:
    """An app as DBOS Cloud's API shows it (``Application``), so `--json` output reads the same."""
    return {"Name": info.name, "ID": info.name, "PostgresInstanceName": info.instance_name,
            "ApplicationDatabaseName": info.app_db_name, "Status": info.status, "Version": info.version or "",
            "AppURL": info.app_url}


def _print_record(row: dict[str, Any], labels: dict[str, str]) -> None:
    for key, label in labels.items():
        print(f"{label}: {row[key]}")


_APP_LABELS = {"Name": "Application Name", "ID": "ID", "PostgresInstanceName": "Postgres Instance Name",
               "ApplicationDatabaseName": "Application Database Name", "Status": "Status", "Version": "Version",
               "AppURL": "App URL"}


def _app(args: argparse.Namespace) -> Any:
    info = _engine(args).app_info(args.app)
    if info is None:
        raise DbosError(f"application {args.app} not found", hint="`pulumi-dbos app list` shows the apps")
    return info


def cmd_app_list(args: argparse.Namespace) -> int:
    rows = [_app_row(i) for i in _engine(args).list_apps()]
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
    _app(args)
    print(_engine(args).app_logs(args.app, args.lines))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import render_text

    if args.file in (None, "-"):
        text = sys.stdin.read()
    else:
        try:
            text = Path(args.file).read_text()
        except OSError as exc:
            raise DbosError(f"preview-report: cannot read {args.file}: {exc.strerror or exc}",
                            hint="pass the output of `pulumi preview --json > FILE`, or pipe it in") from None
        except UnicodeDecodeError:
            raise DbosError(f"preview-report: {args.file} is not text",
                            hint="pass the output of `pulumi preview --json`") from None
    try:
        print(render_text(text, args.title), end="")
    except ValueError as exc:
        raise DbosError(f"preview-report: {exc}") from None
    return 0


def _serve_data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run

    if (args.tls_cert is None) != (args.tls_key is None):
        raise DbosError("--tls-cert and --tls-key go together", hint="pass both, or neither for a self-signed one")
    return run(listen=args.listen, data_dir=_serve_data_dir(args),
               tls_cert=Path(args.tls_cert) if args.tls_cert else None,
               tls_key=Path(args.tls_key) if args.tls_key else None, backup_interval=args.backup_interval,
               advertise_host=args.advertise_host)


def cmd_serve_token(args: argparse.Namespace) -> int:
    from .serve import issue_token

    print(issue_token(_serve_data_dir(args), args.org, args.user, args.ttl_hours))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pulumi-dbos", description=__doc__)
    p.add_argument("--engine", default=None, help="engine (default: $PULUMI_DBOS_ENGINE or local)")
    p.add_argument("--data-dir", default=None, help="engine data dir (default: the stack's with `db url --stack`, "
                   "else $PULUMI_DBOS_DATA_DIR or the engine's); it must exist")
    p.add_argument("--run-as", default=None, help="OS user running the clusters (as root; default postgres)")
    p.add_argument("--cloud-domain", default=None,
                   help="with --engine dbos-cloud: DBOS Cloud's host[:port] (default $DBOS_DOMAIN or cloud.dbos.dev); "
                   "the token comes from $DBOS_CLOUD_TOKEN, the stack's dbos:cloudToken or ./.dbos/credentials")
    p.add_argument("--cloud-ca-cert", default=None, help="with --engine dbos-cloud: a CA certificate to trust "
                   "(pulumi-dbos serve's self-signed one)")
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
                   help="include the password (with --stack: from that stack's state; else $PGPASSWORD, "
                   "else from the current stack's state)")
    s.add_argument("--stack", default=None,
                   help="the stack: its dbos:dataDir/runAs/engine are used unless given as options")
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
    for name, fn, what in (("status", cmd_app_status, "an app's status"), ("versions", cmd_app_versions,
                           "an app's stored versions, oldest first"), ("logs", cmd_app_logs, "an app's log")):
        s = app.add_parser(name, help=what)
        s.add_argument("app")
        if name == "logs":
            s.add_argument("-n", "--lines", type=int, default=100)
        else:
            s.add_argument("--json", action="store_true")
        s.set_defaults(fn=fn)
    s = app.add_parser("list", help="apps known to the engine")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_app_list)
    s = sub.add_parser("serve", help="DBOS Cloud's REST API over the local engine (HTTPS)")
    s.add_argument("--listen", default="127.0.0.1:8443", help="HOST:PORT (default 127.0.0.1:8443)")
    s.add_argument("--data-dir", dest="data_dir", default=argparse.SUPPRESS,
                   help="serve's data dir (default: the local engine's); organizations live in D/orgs/<org>")
    s.add_argument("--tls-cert", default=None, help="certificate (PEM); default: a self-signed one in D/serve/tls")
    s.add_argument("--tls-key", default=None, help="its private key (PEM)")
    s.add_argument("--backup-interval", type=float, default=3600.0,
                   help="seconds between scheduled base backups (and retention pruning), default 3600")
    s.add_argument("--advertise-host", default=None, metavar="HOST",
                   help="an address of this machine other stacks reach: instances and apps listen there too "
                   "(besides 127.0.0.1) and report it (default: 127.0.0.1 only)")
    s.set_defaults(fn=cmd_serve)
    tok = s.add_subparsers(dest="serve_cmd").add_parser("token", help="print a signed bearer token (a JWT)")
    tok.add_argument("--org", required=True, help="the organization (the paths' {org})")
    tok.add_argument("--user", required=True)
    tok.add_argument("--data-dir", dest="data_dir", default=argparse.SUPPRESS, help="serve's data dir")
    tok.add_argument("--ttl-hours", type=float, default=24.0, help="validity in hours (default 24)")
    tok.set_defaults(fn=cmd_serve_token)
    s = sub.add_parser("preview-report", help="`pulumi preview --json` -> Markdown for a PR comment")
    s.add_argument("file", nargs="?", default="-")
    s.add_argument("--title", default="pulumi preview")
    s.set_defaults(fn=cmd_report)
    return p


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def _safe(text: str) -> str:
    """No password in an error message: URL passwords and $PGPASSWORD are masked."""
    text = _URL_PASSWORD.sub(r"\1[secret]@", text)
    pw = os.environ.get("PGPASSWORD")
    return text.replace(pw, "[secret]") if pw and len(pw) >= 4 else text


def _describe(exc: BaseException) -> tuple[str, str | None]:
    """(message, hint) for an error that is not a DbosError."""
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot access{where}: {exc.strerror or exc}", "check the path and its permissions"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}", None
    if isinstance(exc, KeyError):
        return f"missing value {exc}", "is the stack up to date? run `pulumi up`"
    return f"{type(exc).__name__}: {exc}", None


def main(argv: list[str] | None = None) -> int:
    """Run a command. Errors print ``error: ...`` (and a hint), never a traceback, unless PULUMI_DBOS_DEBUG=1."""
    args = build_parser().parse_args(argv)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, DbosError):
            message, hint = exc.message, exc.hint
        else:
            message, hint = _describe(exc)
            hint = (hint + "; " if hint else "") + f"set {DEBUG_ENV}=1 for a traceback"
        print(f"error: {_safe(message)}" + (f"\n  hint: {_safe(hint)}" if hint else ""), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
