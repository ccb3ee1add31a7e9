"""A Seamless client for the whole session, configured for the `seamless_stack` fixture.

The fixture comes from seamless-stack's pytest plugin (`pip install seamless-stack[testing]`);
it brings a throwaway stack up on first use and removes it at the end of the session.
"""

import pytest


@pytest.fixture(scope="session")
def seamless_client(seamless_stack):
    """The stack's variables in os.environ, and this process's Seamless client set up from them."""
    seamless_stack.apply()
    from seamless_config.extern_clients import set_remote_clients_from_env

    assert set_remote_clients_from_env(include_dask=True), "SEAMLESS_REMOTE_CLIENTS is set by apply()"
    yield seamless_stack
    import seamless

    seamless.close()  # before the stack goes: no reconnect attempts against a removed scheduler
