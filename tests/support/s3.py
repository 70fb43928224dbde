"""A real S3-compatible object store on 127.0.0.1 for the backup repository's tests and benches: SeaweedFS
(``weed mini``, built from the Go module proxy by scripts/ensure-seaweedfs.sh), over TLS with a throwaway CA.

Not a mock: pgBackRest speaks S3 (signature v4, TLS, multipart) to it as it would to AWS. pgBackRest 2.45
checks the endpoint against the certificate's *DNS* names only, so the certificate names ``127.0.0.1`` as a
DNS name as well as an IP address.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "pulumi-dbos"


def weed_binary() -> str | None:
    """The ``weed`` binary (PATH, else the cache ensure-seaweedfs.sh builds into), or None."""
    found = os.environ.get("PULUMI_DBOS_WEED") or shutil.which("weed")
    if found:
        return found
    cache = Path(os.environ.get("PULUMI_DBOS_CACHE") or Path.home() / ".cache/pulumi-dbos")
    for cand in sorted(cache.glob("seaweedfs-*/bin/weed")):
        if os.access(cand, os.X_OK):
            return str(cand)
    return None


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    ca_file: Path
    data: Path

    def settings(self, prefix: str) -> dict[str, object]:
        """``dbos:backupRepo.s3`` for a repository under ``prefix`` in the bucket."""
        return {"endpoint": self.endpoint, "bucket": self.bucket, "accessKey": self.access_key,
                "secretKey": self.secret_key, "caFile": str(self.ca_file), "path": prefix}


def _cert(tls: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("127.0.0.1"), x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    tls.mkdir(parents=True, exist_ok=True)
    crt, k = tls / "cert.pem", tls / "key.pem"
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(crt, 0o644)  # the CA file: read by pgBackRest as the cluster user
    return crt, k


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _ready(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@contextlib.contextmanager
def seaweedfs(root: Path, timeout: float = 60) -> Iterator[S3Server]:
    """A SeaweedFS with an S3 endpoint over TLS and one bucket, under ``root`` (removed after)."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("SeaweedFS is not built: run scripts/ensure-seaweedfs.sh (make test does)")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    crt, key = _cert(root / "tls")
    access, secret = "pulumidbos", secrets.token_hex(16)
    (root / "s3.json").write_text(json.dumps({"identities": [{
        "name": "pulumi-dbos", "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    os.chmod(root / "s3.json", 0o600)
    for attempt in range(3):  # a port taken between the choice and weed's bind: other ports
        (master, master_g, volume, volume_g, filer, filer_g, s3, s3_g, https, admin, admin_g) = _free_ports(11)
        argv = [weed, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={master}", f"-master.port.grpc={master_g}", f"-volume.port={volume}",
                f"-volume.port.grpc={volume_g}", f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
                f"-s3.port={s3}", f"-s3.port.grpc={s3_g}", f"-s3.port.https={https}", "-s3.port.iceberg=0",
                "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", f"-admin.port={admin}",
                f"-admin.port.grpc={admin_g}", f"-s3.cert.file={crt}", f"-s3.key.file={key}",
                f"-s3.config={root / 's3.json'}", f"-bucket={BUCKET}"]
        log = open(root / "weed.log", "ab")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,  # noqa: S603
                                start_new_session=True, cwd=root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None and not _ready(https):
            time.sleep(0.2)
        if proc.poll() is None and _ready(https):
            break
        proc.kill()
        proc.wait()
        log.close()
        if attempt == 2:
            raise RuntimeError(f"SeaweedFS did not start:\n{(root / 'weed.log').read_text()[-3000:]}")
    try:
        yield S3Server(endpoint=f"127.0.0.1:{https}", bucket=BUCKET, access_key=access, secret_key=secret,
                       ca_file=crt, data=root / "data")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
