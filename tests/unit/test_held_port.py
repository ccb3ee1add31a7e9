"""The scheduler's port is held from its process' first moment to its last (images/site/sitecustomize.py):
a connection made while the scheduler starts or stops waits in the queue instead of meeting a
closed port behind a forwarder that has already accepted it."""
import socket
import subprocess
import sys
import textwrap

from seamless_stack.resources import images_dir

SITE = images_dir() / "site"

# What the scheduler's process does with the port, in the order distributed does it: its TCP
# listener binds (here: the duplicate), later stops (closes it); the port must listen throughout.
CHILD = textwrap.dedent("""
    import socket, sys, sitecustomize as site
    held = site._HELD
    if held is None:
        print("none", flush=True); sys.exit(0)
    class Netutil:
        def bind_sockets(self, port, address=None, **kwargs):
            raise AssertionError("the held port is not bound again")
    listener = site._HeldPortNetutil(Netutil(), held).bind_sockets(held.getsockname()[1], address="0.0.0.0")[0]
    print("held", flush=True)
    sys.stdin.readline()
    listener.close()  # the scheduler stops its listener while it shuts down
    print("stopped", flush=True)
    sys.stdin.readline()
""")


def start(port: int) -> subprocess.Popen:
    env = {"PYTHONPATH": str(SITE), "SEAMLESS_STACK_HOLD_PORT": f"127.0.0.1:{port}", "PATH": "/usr/bin:/bin",
           "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def connects(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_port_queues_connections_from_start_to_exit_and_a_second_process_holds_nothing():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    scheduler = start(port)
    try:
        assert scheduler.stdout.readline().strip() == "held"
        assert connects(port), "queued, though nothing accepts yet"
        other = start(port)  # a health check in the same container: the port is taken, nothing held
        assert other.communicate(timeout=30)[0].strip() == "none" and other.returncode == 0
        scheduler.stdin.write("\n")
        scheduler.stdin.flush()
        assert scheduler.stdout.readline().strip() == "stopped"
        assert connects(port), "the listener closed its duplicate: the port still listens until the process ends"
    finally:
        scheduler.stdin.close()
        scheduler.wait(timeout=30)
    assert not connects(port), "released when the process ends"


def test_without_the_variable_nothing_is_held():
    out = subprocess.run([sys.executable, "-c", "import sitecustomize as s; print(s._HELD)"], capture_output=True,
                         text=True, env={"PYTHONPATH": str(SITE), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}, check=True)
    assert out.stdout.strip() == "None"
