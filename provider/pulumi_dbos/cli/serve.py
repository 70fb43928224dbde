"""`pulumi-dbos serve` and `serve token` (the server loads only when run: `--help` stays light)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine import default_data_dir
from ..errors import DbosError

if TYPE_CHECKING:
    from ..serve.limits import Limits


def _serve_data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serve import run

    if args.print_systemd_unit:
        return print_systemd_unit(args)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise DbosError("--tls-cert and --tls-key go together", hint="pass both, or neither for a self-signed one")
    return run(listen=args.listen, data_dir=_serve_data_dir(args),
               tls_cert=Path(args.tls_cert) if args.tls_cert else None,
               tls_key=Path(args.tls_key) if args.tls_key else None, backup_interval=args.backup_interval,
               drill_interval=args.drill_interval,
               advertise_host=args.advertise_host, limits=limits_of(args), cloud_exact=args.cloud_exact,
               backup_repo=backup_repo_of(args))


def backup_repo_of(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--backup-repo FILE``: the ``dbos:backupRepo`` mapping (YAML or JSON) in a file, so that the S3 secret
    key and the passphrase are in neither argv nor serve's environment; it should be 0600."""
    path = getattr(args, "backup_repo", None)
    if not path:
        return None
    from ruamel.yaml import YAML

    from ..config.backup_repo import parse

    try:
        raw = YAML(typ="safe").load(Path(path).read_text())
    except OSError as exc:
        raise DbosError(f"--backup-repo {path}: {exc.strerror}") from None
    except Exception as exc:  # a YAML error
        raise DbosError(f"--backup-repo {path}: not YAML or JSON: {exc}") from None
    try:
        return parse(raw)
    except ValueError as exc:
        raise DbosError(f"--backup-repo {path}: {exc}") from None


def limits_of(args: argparse.Namespace) -> Limits:
    """The :class:`pulumi_dbos.serve.limits.Limits` of ``serve``'s flags (their defaults from the environment)."""
    from ..serve.limits import MIB, Limits, env_default, env_networks, parse_network

    def flag(name: str, default: int) -> int:
        value = getattr(args, name.replace("-", "_"), None)
        return int(value) if value is not None else env_default(name, default)

    d = Limits()
    allow = args.link_allow if args.link_allow else env_networks()
    return Limits(
        max_body=flag("max-body-mib", d.max_body // MIB) * MIB,
        max_archive=flag("max-archive-mib", d.max_archive // MIB) * MIB,
        max_archive_entries=flag("max-archive-entries", d.max_archive_entries),
        max_archive_entry=flag("max-archive-entry-mib", d.max_archive_entry // MIB) * MIB,
        max_instances=flag("max-instances", d.max_instances), max_apps=flag("max-apps", d.max_apps),
        org_concurrency=flag("org-concurrency", d.org_concurrency), org_queue=flag("org-queue", d.org_queue),
        max_connections=flag("max-connections", d.max_connections),
        max_client_connections=flag("max-client-connections", d.max_client_connections),
        request_timeout=flag("request-timeout", d.request_timeout),
        link_allow=tuple(parse_network(n) for n in allow))


def cmd_serve_token(args: argparse.Namespace) -> int:
    import difflib
    import sys

    from ..serve import issue_token

    if not args.ttl_hours >= 1:
        raise DbosError(f"--ttl-hours must be at least 1, got {args.ttl_hours:g} (the token would be expired or "
                        "expire before it is used)", hint="e.g. --ttl-hours 24 (the default) or --ttl-hours 720")
    data_dir = _serve_data_dir(args)
    if not (data_dir / "serve" / "jwt.key").is_file():
        print(f"warning: {data_dir} has no serve signing key yet: a new one is made, and only a serve run with "
              f"--data-dir {data_dir} accepts this token (a serve using another data dir answers 'invalid token'); "
              "pass the data dir your serve uses", file=sys.stderr)
    orgs_dir = data_dir / "orgs"
    known = sorted(p.name for p in orgs_dir.iterdir() if p.is_dir()) if orgs_dir.is_dir() else []
    if known and args.org not in known:
        close = difflib.get_close_matches(args.org, known, n=1, cutoff=0.6)
        print(f"warning: organization {args.org!r} has nothing on this serve yet (it starts empty)"
              + (f"; did you mean {close[0]!r}?" if close else f"; organizations there: {', '.join(known)}"),
              file=sys.stderr)
    print(issue_token(data_dir, args.org, args.user, args.ttl_hours))
    return 0


SYSTEMD_UNIT = """\
# pulumi-dbos serve as a systemd service: `pulumi-dbos serve --print-systemd-unit > \\
#   /etc/systemd/system/pulumi-dbos-serve.service && systemctl daemon-reload && systemctl enable --now pulumi-dbos-serve`
#
# Stopping the service (systemctl stop, or a SIGTERM) stops the API only: the PostgreSQL clusters and the
# apps it started keep running and answering (KillMode=process; scheduled backups pause until serve is back),
# and the next start finds them running. After a reboot serve starts every instance and app it owns. To stop
# them too, stop the apps and instances through the API (or destroy the stacks) before stopping serve.
[Unit]
Description=pulumi-dbos serve: DBOS Cloud's API over the local engine
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
# runs as root: it starts the clusters as `postgres` and each organization's apps as an OS user of its own
ExecStart={exe} serve --listen {listen} --data-dir {data_dir}
Restart=on-failure
RestartSec=5
KillMode=process
TimeoutStopSec=60
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def print_systemd_unit(args: argparse.Namespace) -> int:
    import shutil
    import sys

    exe = shutil.which("pulumi-dbos") or f"{sys.executable} -m pulumi_dbos.cli"
    print(SYSTEMD_UNIT.format(exe=exe, listen=args.listen, data_dir=_serve_data_dir(args)), end="")
    return 0


def add_parsers(sub: Any) -> None:
    """The `serve` command and its `token` subcommand."""
    s = sub.add_parser("serve", help="DBOS Cloud's REST API over the local engine (HTTPS)",
                       allow_abbrev=False)  # `serve token --org` is not an abbreviation of --org-queue
    s.add_argument("--listen", default="127.0.0.1:8443", help="HOST:PORT (default 127.0.0.1:8443)")
    s.add_argument("--data-dir", dest="data_dir", default=argparse.SUPPRESS,
                   help="serve's data dir (default: the local engine's); organizations live in D/orgs/<org>")
    s.add_argument("--tls-cert", default=None, help="certificate (PEM); default: a self-signed one in D/serve/tls")
    s.add_argument("--tls-key", default=None, help="its private key (PEM)")
    s.add_argument("--print-systemd-unit", action="store_true",
                   help="print a systemd unit running serve with these --listen/--data-dir, and exit (stopping the "
                   "service stops the API only: clusters and apps keep running)")
    s.add_argument("--backup-interval", type=float, default=3600.0,
                   help="seconds between scheduled base backups (and retention pruning), default 3600")
    s.add_argument("--drill-interval", type=float, default=86400.0,
                   help="seconds between restore drills of each instance (one at a time, skipped while the host "
                   "is busy), default 86400; 0: none")
    s.add_argument("--advertise-host", default=None, metavar="HOST",
                   help="an address of this machine other stacks reach: instances and apps listen there too "
                   "(besides 127.0.0.1) and report it (default: 127.0.0.1 only)")
    s.add_argument("--backup-repo", default=None, metavar="FILE",
                   help="the backup repository of every organization's instances: a YAML/JSON file with the keys of "
                   "the stack config's dbos:backupRepo (path, s3: {endpoint, bucket, region, accessKey, secretKey, "
                   "caFile, path}, cipherPassphrase, deletedRetentionHours, archiveTimeout); each organization "
                   "gets <path>/orgs/<org> and <s3.path>/orgs/<org>. Default: a posix repository in each "
                   "organization's data dir")
    s.add_argument("--cloud-exact", action="store_true",
                   help="behave exactly like DBOS Cloud: no pulumi-dbos extensions (no Server in the profile, "
                   "extension fields ignored, no extension routes, numeric app versions)")
    lim = s.add_argument_group(
        "limits", "what one organization may ask of this server; each flag's default may also come from the "
        "environment variable PULUMI_DBOS_SERVE_<FLAG> (e.g. PULUMI_DBOS_SERVE_MAX_INSTANCES)")
    for flag, default, what in (
            ("--max-body-mib", 32, "largest request body (a deploy's base64 archive), MiB: 413 beyond"),
            ("--max-archive-mib", 512, "largest uncompressed size of an application archive, MiB: 400 beyond"),
            ("--max-archive-entries", 20000, "most entries in an application archive: 400 beyond"),
            ("--max-archive-entry-mib", 256, "largest uncompressed file in an application archive, MiB"),
            ("--max-instances", 50, "database instances per organization (restored and linked ones count too)"),
            ("--max-apps", 50, "applications per organization"),
            ("--org-concurrency", 8, "requests that change something (deploy, link, provision, restore...) one "
             "organization runs at once (reads: twice as many); more wait their turn without a worker thread"),
            ("--org-queue", 64, "requests of one organization waiting their turn, per kind: 429 beyond"),
            ("--max-connections", 1000, "open connections and requests in all: 503 beyond"),
            ("--max-client-connections", 0, "open connections of one client address (0: a quarter of "
             "--max-connections): 429 and closed beyond"),
            ("--request-timeout", 15, "seconds a connection may take to send a request's headers: closed after")):
        lim.add_argument(flag, type=int, default=None, metavar="N", help=f"{what} (default {default})")
    lim.add_argument("--link-allow", action="append", default=[], metavar="CIDR",
                     help="repeatable: links may only target servers whose every address lies in one of these "
                     "networks (default: any; env PULUMI_DBOS_SERVE_LINK_ALLOW, comma-separated)")
    s.set_defaults(fn=cmd_serve, raw_output=True)  # a daemon: its log goes to a file or the journal
    tok = s.add_subparsers(dest="serve_cmd").add_parser("token", help="print a signed bearer token (a JWT)")
    tok.add_argument("--org", required=True, help="the organization (the paths' {org})")
    tok.add_argument("--user", required=True)
    tok.add_argument("--data-dir", dest="data_dir", default=argparse.SUPPRESS, help="serve's data dir")
    tok.add_argument("--ttl-hours", type=float, default=24.0, help="validity in hours, at least 1 (default 24)")
    tok.set_defaults(fn=cmd_serve_token)

