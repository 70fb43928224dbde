"""``pulumi-dbos``: the command line, mirroring ``dbos-cloud db ...`` and ``app ...`` (DESIGN §4).

One module per command group (`db`, `app`, `serve`); `common` holds what they share."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from ..errors import DbosError
from . import apps, db, serve, terminal
from .common import (
    CA_CERT_ENV,
    PULUMI_HINT,
    STACK_ENGINE_KEYS,
    app_state,
    stack_engine_settings,
    stack_resource,
)

DEBUG_ENV = "PULUMI_DBOS_DEBUG"
DESCRIPTION = """Postgres instances and DBOS apps of pulumi-dbos stacks, as `dbos-cloud db ...` and `app ...` show
them; `serve` runs DBOS Cloud's API over the local engine."""
EPILOG = f"""Engine settings, first found wins: the options; the stack of --stack S (its dbos:engine, dbos:dataDir,
dbos:runAs, dbos:cloudDomain, dbos:cloudCaCert and dbos:cloudToken); $PULUMI_DBOS_ENGINE and
$PULUMI_DBOS_DATA_DIR; inside a Pulumi project, its selected stack (the command says so); $DBOS_DOMAIN and
${CA_CERT_ENV}; the defaults. The options and --stack go before or after the command
(`pulumi-dbos db list --stack dev`)."""



def cmd_report(args: argparse.Namespace) -> int:
    from ..report import render_text

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pulumi-dbos", description=DESCRIPTION, epilog=EPILOG)
    add_engine_options(p, None)
    sub = p.add_subparsers(dest="group", required=True)
    db.add_parsers(sub)
    apps.add_parsers(sub)
    serve.add_parsers(sub)
    for group in ("db", "app"):  # every command that reads an engine takes the options after its name too
        for leaf in _subparsers(_subparsers(p)[group]).values():
            add_engine_options(leaf, argparse.SUPPRESS)
    s = sub.add_parser("preview-report", help="`pulumi preview --json` -> Markdown for a PR comment")
    s.add_argument("file", nargs="?", default="-")
    s.add_argument("--title", default="pulumi preview")
    s.set_defaults(fn=cmd_report)
    return p


def add_engine_options(p: argparse.ArgumentParser, default: Any) -> None:
    """``--stack`` and the engine options; on a command, ``default`` is SUPPRESS so that an option given before
    the command is not reset by the command's own default."""
    p.add_argument("--stack", default=default, metavar="S",
                   help="take the engine settings, token and CA certificate from stack S's config (default: the "
                   "stack selected in the current Pulumi project)")
    p.add_argument("--engine", default=default, choices=("local", "dbos-cloud"),
                   help="engine (default: the stack's dbos:engine, else $PULUMI_DBOS_ENGINE or local)")
    p.add_argument("--data-dir", default=default, help="the local engine's data dir (default: the stack's "
                   "dbos:dataDir, else $PULUMI_DBOS_DATA_DIR or the engine's); it must exist")
    p.add_argument("--run-as", default=default, help="OS user running the clusters (as root; default postgres)")
    p.add_argument("--cloud-domain", default=default,
                   help="with --engine dbos-cloud: DBOS Cloud's host[:port] (default: the stack's dbos:cloudDomain, "
                   "else $DBOS_DOMAIN or cloud.dbos.dev); the token comes from $DBOS_CLOUD_TOKEN, the stack's "
                   "dbos:cloudToken or ./.dbos/credentials")
    p.add_argument("--cloud-ca-cert", default=default, metavar="PEM",
                   help="with --engine dbos-cloud: a CA certificate to trust, pulumi-dbos serve's self-signed one "
                   f"(default: the stack's dbos:cloudCaCert, else ${CA_CERT_ENV})")


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


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
    """Run a command. Errors print ``error: ...`` (and a hint), never a traceback, unless PULUMI_DBOS_DEBUG=1.
    What it prints has its control characters escaped (``terminal.py``), but for ``serve`` and ``--raw``."""
    args = build_parser().parse_args(argv)
    with terminal.escaped(not getattr(args, "raw_output", False)):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return int(args.fn(args))
    except BrokenPipeError:
        # the reader went away (`db status --json | head`): what it wanted it got; not an error
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        return 0
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


__all__ = ["CA_CERT_ENV", "PULUMI_HINT", "STACK_ENGINE_KEYS", "app_state", "build_parser", "main", "stack_engine_settings", "stack_resource"]
