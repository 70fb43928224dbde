"""What a sandbox's own network namespace costs (issue 31, items 3 and 4; ``engine/local/netgate.py``).

Run as root (the sandbox exists only there), with the apps' OS user ``dbosapp``:

(a) start: a sandboxed ``python3 -m http.server``-like app from ``sandbox.spawn`` until its port answers on the
    host's 127.0.0.1, with the namespace (its port relayed in) and without (the host's network, as before);
    medians of BENCH_N (default 10), alternating.
(b) inbound: 300 sequential ``GET /`` on a new connection each, through the relay and direct (median, p99).
(c) outbound: the same from inside the sandbox to a server on the host's 127.0.0.1 (the database's path),
    through the relay and direct.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import free_port, tmpdir  # noqa: E402
from pulumi_dbos.engine import proc  # noqa: E402
from pulumi_dbos.engine.local import runtime, sandbox  # noqa: E402

N = int(os.environ.get("BENCH_N", "10"))
REQUESTS = 300
USER = proc.RunAs(os.environ.get("PULUMI_DBOS_APP_USER", "dbosapp"))
SERVER = """import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header('content-length', '2'); self.end_headers(); self.wfile.write(b'ok')
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()
"""
CLIENT = """import http.client, json, os, time
port, n = int(os.environ['TARGET']), int(os.environ['N'])
out = []
for _ in range(n):
    t = time.perf_counter()
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    c.request('GET', '/'); c.getresponse().read(); c.close()
    out.append((time.perf_counter() - t) * 1000)
print(json.dumps(out))
"""


def _gets(port: int, n: int) -> list[float]:
    import http.client

    out = []
    for _ in range(n):
        t = time.perf_counter()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/")
        c.getresponse().read()
        c.close()
        out.append((time.perf_counter() - t) * 1000)
    return out


def _p(values: list[float]) -> str:
    values = sorted(values)
    return f"median {statistics.median(values):.2f} ms, p99 {values[int(len(values) * 0.99) - 1]:.2f} ms"


def start(work: Path, netns: bool) -> tuple[float, int, int]:
    """(seconds until it answers, pid, port) of a sandboxed server."""
    port = free_port()
    net = sandbox.Net(inbound=(port,)) if netns else None
    t = time.perf_counter()
    pid = sandbox.spawn([runtime.app_python(), "-c", SERVER], user=USER, binds=[], cwd="/tmp",
                        env={"PATH": "/usr/bin:/bin", "PORT": str(port)}, host_cwd=work, log_path=work / "log",
                        limits=sandbox.Limits(256), unit=sandbox.unit_name("bench", f"netns-{port}"), net=net)
    while not runtime.answers(runtime.http_status(port, timeout=1)):
        time.sleep(0.005)
    return time.perf_counter() - t, pid, port


def stop(pid: int, port: int) -> None:
    runtime.stop(pid, grace=5)
    unit = sandbox.unit_name("bench", f"netns-{port}")
    sandbox.kill_unit(unit)
    sandbox.release_unit(unit)


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("run as root: the sandbox (and its namespace) exists only there")
    work = tmpdir("bench-netns-")
    try:
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(N):
            for netns in (True, False):
                secs, pid, port = start(work, netns)
                times[netns].append(secs)
                stop(pid, port)
        for netns in (False, True):
            print(f"(a) start until it answers, {'with' if netns else 'without'} its namespace: "
                  f"median {statistics.median(times[netns]) * 1000:.0f} ms (n={N})")
        for netns in (False, True):
            _, pid, port = start(work, netns)
            try:
                _gets(port, 20)
                print(f"(b) inbound GET, new connection each, {'relayed' if netns else 'direct'}: "
                      f"{_p(_gets(port, REQUESTS))}")
            finally:
                stop(pid, port)

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=host.serve_forever, daemon=True).start()
        hport = host.server_address[1]
        try:
            for netns in (False, True):
                net = sandbox.Net(outbound=((hport, "127.0.0.1", hport),)) if netns else None
                cp = sandbox.run([runtime.app_python(), "-c", CLIENT], user=USER, binds=[], cwd="/tmp",
                                 env={"PATH": "/usr/bin:/bin", "TARGET": str(hport), "N": str(REQUESTS)},
                                 host_cwd=work, limits=sandbox.Limits(256), unit=sandbox.unit_name("bench", "out"),
                                 timeout=300, net=net)
                print(f"(c) outbound GET from inside, new connection each, {'relayed' if netns else 'direct'}: "
                      f"{_p(json.loads(cp.stdout.strip().splitlines()[-1]))}")
        finally:
            host.shutdown()
    finally:
        with contextlib.suppress(OSError):
            import shutil

            shutil.rmtree(work)


if __name__ == "__main__":
    main()
