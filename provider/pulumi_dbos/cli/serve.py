"""`pulumi-dbos serve` and `serve token` (the server loads only when run: `--help` stays light)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..engine import default_data_dir
from ..errors import DbosError


def _serve_data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serve import run

    if (args.tls_cert is None) != (args.tls_key is None):
        raise DbosError("--tls-cert and --tls-key go together", hint="pass both, or neither for a self-signed one")
    return run(listen=args.listen, data_dir=_serve_data_dir(args),
               tls_cert=Path(args.tls_cert) if args.tls_cert else None,
               tls_key=Path(args.tls_key) if args.tls_key else None, backup_interval=args.backup_interval,
               advertise_host=args.advertise_host)


def cmd_serve_token(args: argparse.Namespace) -> int:
    from ..serve import issue_token

    print(issue_token(_serve_data_dir(args), args.org, args.user, args.ttl_hours))
    return 0


def add_parsers(sub: Any) -> None:
    """The `serve` command and its `token` subcommand."""
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

