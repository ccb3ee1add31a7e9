#!/usr/bin/env python3
"""Host-side helper of the services job (Python standard library only: any cluster node has it).

  seamless_stack_node.py ports 4 START END [P]  hashserver, database, scheduler, dashboard ports
                                               free on this node (the scheduler's is P if given)
  seamless_stack_node.py address               this node's address as other nodes reach it
  seamless_stack_node.py relay SOCKET NAME     serve sbatch/scancel for the containerised scheduler

The relay is how dask-jobqueue, running inside the scheduler container, submits worker jobs:
the site's own sbatch/scancel run here, on the host, where they work. It only submits jobs
named `NAME-worker` and cancels only jobs it submitted itself; on exit it cancels them all.
Every submission's outcome goes into submissions.json in its working directory (the stack's
workers folder): `seamless-stack status` shows refusals from there.
"""

import json
import os
import random
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time


def free_ports(count: int, start: int, end: int, exclude: tuple[int, ...] = ()) -> list[int]:
    candidates = [port for port in range(start, end + 1) if port not in exclude]
    random.shuffle(candidates)
    chosen = []
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
        chosen.append(port)
        if len(chosen) == count:
            return chosen
    sys.exit(f"only {len(chosen)} free ports in {start}-{end} on {socket.gethostname()}, {count} needed")


def node_address() -> str:
    """The address of the interface that routes to the Slurm controller (what other nodes reach)."""
    controller = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    match = re.search(r"^SlurmctldHost\[0\]\s*=\s*([^\s(]+)", controller, re.M)
    target = match.group(1) if match else "8.8.8.8"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((socket.gethostbyname(target), 6817))
            return sock.getsockname()[0]
        except OSError:
            return socket.gethostbyname(socket.gethostname())


class Relay(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, name: str):
        self.job_name = f"{name}-worker"
        self.submitted: set[str] = set()
        self.lock = threading.Lock()
        self.record = {"submitted": 0, "refused": 0, "refused_in_a_row": 0, "last_error": "", "last_error_at": 0}
        super().__init__(path, RelayHandler)

    def note_submission(self, ok: bool, stderr: str) -> None:
        with self.lock:
            self._note(ok, stderr)

    def _note(self, ok: bool, stderr: str) -> None:
        record = self.record
        record["submitted" if ok else "refused"] += 1
        record["refused_in_a_row"] = 0 if ok else record["refused_in_a_row"] + 1
        if not ok:
            record["last_error"] = " ".join(stderr.split())[-500:]
            record["last_error_at"] = int(time.time())
        with open("submissions.json.tmp", "w") as f:
            json.dump(record, f)
        os.replace("submissions.json.tmp", "submissions.json")


class RelayHandler(socketserver.StreamRequestHandler):
    def handle(self):
        request = json.loads(self.rfile.readline())
        server: Relay = self.server
        if request.get("command") == "sbatch":
            script = request["script"]
            # Name the job, whatever the script says, so `down` and the relay can find it.
            result = subprocess.run(["sbatch", "--job-name", server.job_name], input=script, capture_output=True, text=True)
            job = re.search(r"(\d+)", result.stdout)
            if result.returncode == 0 and job:
                server.submitted.add(job.group(1))
            server.note_submission(result.returncode == 0 and job is not None, result.stderr or result.stdout)
        elif request.get("command") == "scancel" and str(request.get("job_id")) in server.submitted:
            result = subprocess.run(["scancel", str(request["job_id"])], capture_output=True, text=True)
            server.submitted.discard(str(request["job_id"]))
        else:
            result = subprocess.CompletedProcess([], 1, "", f"refused: {request.get('command')!r}")
        answer = {"code": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
        self.wfile.write(json.dumps(answer).encode() + b"\n")


def relay(path: str, name: str) -> None:
    if os.path.exists(path):
        os.unlink(path)
    server = Relay(path, name)
    os.chmod(path, 0o600)

    def stop(*_):
        if server.submitted:
            subprocess.run(["scancel", *sorted(server.submitted)], capture_output=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "ports":
        count, start, end = int(args[0]), int(args[1]), int(args[2])
        fixed = int(args[3]) if len(args) > 3 and args[3] else None
        if fixed is None:
            ports = free_ports(count, start, end)
        else:
            with socket.socket() as sock:
                try:
                    sock.bind(("0.0.0.0", fixed))
                except OSError:
                    sys.exit(f"scheduler port {fixed} is in use on {socket.gethostname()}")
            ports = free_ports(count - 1, start, end, exclude=(fixed,))  # the fixed one is not drawn
            ports.insert(2, fixed)
        print(" ".join(map(str, ports)))
    elif command == "address":
        print(node_address())
    elif command == "relay":
        relay(args[0], args[1])
    else:
        sys.exit(f"unknown command {command!r}")
