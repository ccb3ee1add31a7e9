"""A tiny Seamless workflow: statistics of a text, as one transformation.

`word_stats(text)` builds a transformation; `.run()` computes it (on a Dask worker of the
stack when the client is configured for one, see tests/conftest.py) and returns the
value; `.compute()` returns the checksum of the result, which the stack stores in its
buffer store under that checksum.
"""

from seamless.transformer import delayed


@delayed
def word_stats(text: str) -> dict:
    words = text.split()
    return {
        "words": len(words),
        "distinct": len({word.lower() for word in words}),
        "longest": max(words, key=len) if words else "",
    }
