"""No secret in what seamless-stack prints: URL passwords (`scheme://user:secret@host`, how
the stack's secret travels) become `***` in logs it shows, log tails and error lines.

The images do the same for every log line of every service (images/site/sitecustomize.py,
the same pattern: tests/unit/test_redact.py keeps them equal).
"""

from __future__ import annotations

import re

CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*:)[^\s@/'\"]+@")


def redact(text: str) -> str:
    return CREDENTIALS.sub(r"\1***@", text)
