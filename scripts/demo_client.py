"""A Seamless client that knows only the environment (SEAMLESS_REMOTE_CLIENTS, SEAMLESS_DASK_*)."""
import warnings

warnings.filterwarnings("ignore")  # distributed's warning about the client's Python patch version

from seamless_config.extern_clients import set_remote_clients_from_env

set_remote_clients_from_env(include_dask=True)

from seamless.transformer import direct


@direct
def triangle(n):
    import socket

    return f"triangle({n}) = {n * (n + 1) // 2}, computed on {socket.gethostname()}"


print(triangle(100))
