import runpy

from seamless_stack.redact import CREDENTIALS, redact
from seamless_stack.resources import images_dir


def test_url_passwords_are_redacted_and_nothing_else():
    line = '{"url": "http://seamless:Zx-9_aB.c~d@hashserver:60637", "remote_url": "https://seamless:s3cr3t@db:1"}'
    assert redact(line) == '{"url": "http://seamless:***@hashserver:60637", "remote_url": "https://seamless:***@db:1"}'
    for text in ("tls://scheduler:8786", "http://127.0.0.1:60001/healthcheck", "a: b@c", "user@host:22"):
        assert redact(text) == text


def test_the_images_use_the_same_pattern():
    site = images_dir() / "site" / "sitecustomize.py"
    assert runpy.run_path(str(site))["CREDENTIALS"].pattern == CREDENTIALS.pattern
