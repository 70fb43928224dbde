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
    """``n`` ports free now, below the kernel's ephemeral range (an outgoing connection never takes one of those
    between this choice and weed's bind) and above the engine's ranges (15432-22999)."""
    import random

    chosen: list[int] = []
    while len(chosen) < n:
        port = random.randrange(23000, 32000)  # noqa: S311 - not security
        if port in chosen:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
    return chosen


def bucket_exists(endpoint: str, bucket: str, access: str, secret: str, ca_file: Path,
                  region: str = "us-east-1") -> bool:
    """``HEAD /<bucket>`` signed with AWS signature v4 (what any S3 client sends): 200 when the bucket is
    there. Only for the tests' readiness check; the product speaks S3 through pgBackRest."""
    import hashlib
    import hmac
    import ssl
    import urllib.error
    import urllib.request

    now = dt.datetime.now(dt.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": endpoint, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["HEAD", f"/{bucket}", "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed,
                           payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(f"https://{endpoint}/{bucket}", method="HEAD", headers={
        "x-amz-content-sha256": payload, "x-amz-date": amz_date,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={signed}, Signature={signature}"})
    try:
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(ca_file)), timeout=5) as r:  # noqa: S310
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _ready(port: int, log: Path) -> bool:
    """The S3 endpoint answers and weed said every component (and so the pre-created bucket) is ready: the
    port alone opens before the bucket exists (pgBackRest then met 404 NoSuchBucket)."""
    try:
        if "All enabled components are running" not in log.read_text(errors="replace"):
            return False
    except OSError:
        return False
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
        while time.monotonic() < deadline and proc.poll() is None and not _ready(https, root / "weed.log"):
            time.sleep(0.2)
        if proc.poll() is None and _ready(https, root / "weed.log"):
            break
        proc.kill()
        proc.wait()
        log.close()
        if attempt == 2:
            raise RuntimeError(f"SeaweedFS did not start:\n{(root / 'weed.log').read_text()[-3000:]}")
    server = S3Server(endpoint=f"127.0.0.1:{https}", bucket=BUCKET, access_key=access, secret_key=secret,
                      ca_file=crt, data=root / "data")
    deadline = time.monotonic() + timeout
    while not bucket_exists(server.endpoint, BUCKET, access, secret, crt):  # the bucket, not only the port
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"SeaweedFS's bucket never appeared:\n{(root / 'weed.log').read_text()[-3000:]}")
        time.sleep(0.2)
    try:
        yield server
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
