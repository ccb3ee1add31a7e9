"""The security tests' verdict on an intruder's request that got no HTTP answer: a refusal at
the TLS or connection level passes however urllib names it; an answer, a timeout or a broken
probe does not (test_slurm_over_ssh_adaptive_workers once failed on URLError where only
SSLError was accepted)."""

import pytest

from tests.integration.test_security import refused


@pytest.mark.parametrize("answer", ["SSLError", "URLError(SSLError)", "URLError(ConnectionResetError)", "RemoteDisconnected",
                                    "ConnectionResetError", "URLError(ConnectionRefusedError)", "SSLEOFError"])
def test_refusals(answer):
    assert refused(answer)


@pytest.mark.parametrize("answer", [200, 401, 403, "URLError(TimeoutError)", "TimeoutError", "URLError", "NameError",
                                    "URLError(gaierror)", "", None])
def test_not_refusals(answer):
    assert not refused(answer)
