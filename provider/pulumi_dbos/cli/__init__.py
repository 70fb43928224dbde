"""``pulumi-dbos``: the command line, mirroring ``dbos-cloud db ...`` and ``app ...`` (DESIGN §4).

One module per command group (`db`, `app`, `serve`); `common` holds what they share."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from ..errors import DbosError
from . import apps, db, serve
from .common import PULUMI_HINT, STACK_ENGINE_KEYS, app_state, stack_engine_settings, stack_resource

DEBUG_ENV = "PULUMI_DBOS_DEBUG"



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
    db.add_parsers(sub)
    apps.add_parsers(sub)
    serve.add_parsers(sub)
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


__all__ = ["PULUMI_HINT", "STACK_ENGINE_KEYS", "app_state", "build_parser", "main", "stack_engine_settings", "stack_resource"]
