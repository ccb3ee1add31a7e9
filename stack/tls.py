"""Dask TLS for stacks whose ports others can reach: one self-signed certificate per stack.

The certificate is its own CA: Dask verifies peers against it, so only holders of this
stack's key (its workers, its scheduler, and clients given the files) can talk Dask to it.
The hashserver and database stay plain HTTP: --ssh is the way to protect those.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .errors import StackError

CERT, KEY = "tls.crt", "tls.key"


def make_certificate(folder: Path, name: str) -> Path:
    """Write folder/tls.crt and folder/tls.key (once; kept across down/up)."""
    if (folder / CERT).is_file() and (folder / KEY).is_file():
        return folder
    if shutil.which("openssl") is None:
        raise StackError("openssl is needed to make the stack's TLS certificate", "install it (Debian: apt-get install openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    command = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "3650", "-subj", f"/CN=seamless-stack-{name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
        "-addext", "subjectAltName=DNS:scheduler,DNS:localhost",
        "-keyout", str(folder / KEY), "-out", str(folder / CERT),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"openssl could not make the TLS certificate: {result.stderr.strip()}")
    return folder


def client_variables(folder: str) -> dict[str, str]:
    """What a Dask client (and so a Seamless client) needs to reach a TLS scheduler."""
    return {
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": f"{folder}/{CERT}",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": f"{folder}/{CERT}",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": f"{folder}/{KEY}",
    }
