"""A client polling an app's route every 10 ms in a thread (the rotation tests and ``bench/deploy.py``)."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request


class Poller:
    """GET ``url`` every 10 ms; records (time, ok) of each request (ok: a 200 whose body starts with one of
    ``bodies``: a JSON list or object)."""

    def __init__(self, url: str, bodies: tuple[bytes, ...] = (b"[", b"{")) -> None:
        self.url = url
        self.bodies = bodies
        self.samples: list[tuple[float, bool]] = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop:
            ok = False
            with contextlib.suppress(Exception), urllib.request.urlopen(self.url, timeout=2) as r:  # noqa: S310
                ok = r.status == 200 and r.read()[:1] in self.bodies
            self.samples.append((time.perf_counter(), ok))
            time.sleep(0.01)

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop = True
        self.thread.join(10)

    def failures(self) -> int:
        return sum(1 for _, ok in self.samples if not ok)

    def longest_gap(self, *, to_the_end: bool = False) -> float:
        """Longest time between two successful answers (seconds); ``to_the_end``: failures up to the last
        request count too."""
        oks = [t for t, ok in self.samples if ok]
        if not oks:
            return float("inf")
        if to_the_end:
            oks.append(self.samples[-1][0])
        return max((b - a for a, b in zip(oks, oks[1:], strict=False)), default=0.0 if to_the_end else float("inf"))
