"""Loaded by every Python process in the seamless-stack images (PYTHONPATH): no secret in a log.

Seamless logs its remote clients' URLs, which carry the stack's secret as the password of
`scheme://user:secret@host` (seamless_dask's worker setup prints them at INFO); anything
else may log such a URL too. Every log line any handler formats has such passwords replaced
by `***`, whatever the logger. (seamless-stack's own CLI uses the same pattern,
stack/redact.py; a unit test keeps the two equal.)
"""
import logging
import re

CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*:)[^\s@/'\"]+@")


def redact(text: str) -> str:
    return CREDENTIALS.sub(r"\1***@", text)


_format = logging.Formatter.format


def _redacted(self, record):
    return redact(_format(self, record))


logging.Formatter.format = _redacted
