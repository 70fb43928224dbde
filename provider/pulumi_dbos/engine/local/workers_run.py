"""The entry point of the local engine's detached workers (``workers.spawn_worker`` starts them)::

    python -m pulumi_dbos.engine.local.workers_run refill DATA_DIR TEMPLATE SIZE [--run-as USER]
    python -m pulumi_dbos.engine.local.workers_run watch DATA_DIR [--run-as USER]

``refill`` fills the warm pool of one template (``pool``); ``watch`` takes base backups by WAL volume and the
instances' first repository backups while the data dir's instances run (``autobackup``). Each holds a lock
file, so a second one exits at once. Not a user command: nothing here is part of the CLI.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .. import proc
from .paths import Layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pulumi_dbos.engine.local.workers_run")
    parser.add_argument("job", choices=("refill", "watch"))
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--run-as", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(message)s")
    layout = Layout(args.data_dir, proc.RunAs(args.run_as))
    if not (args.data_dir / "catalog.db").exists():
        return 0  # removed meanwhile
    if args.job == "refill":  # each job imports only what it runs: a refill starts after every provision
        from .pool import Pool

        template, size = Path(args.rest[0]), int(args.rest[1])
        made = Pool(layout, template, size).refill()
        if made:
            logging.info("pool of %s: %d entries made", template.parent.name, made)
    else:
        from .autobackup import watch

        watch(layout)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # a data dir removed under a worker's feet: nothing to report to anyone
        logging.getLogger("pulumi_dbos.engine").warning("worker stopped: %s", exc)
        sys.exit(1)
