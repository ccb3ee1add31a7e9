"""Pure logic of the remote and Slurm methods: parsing, paths, job scripts, environment sections."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from seamless_stack import credentials
from seamless_stack.hosts import ENGINE_SOCKET_SCRIPT, engine_socket, listening_ports
from seamless_stack.layout import ROLES
from seamless_stack.plan import ComposeRecord, Deployment, Placement, SlurmRecord
from seamless_stack import slurm_time as walltime
from seamless_stack.slurm.jobscript import lifetimes, services_job_script
from seamless_stack.slurm.sif import sif_name
from seamless_stack.storage import absolute
from seamless_stack.spec import SlurmOptions, build_spec
from seamless_stack.ssh import Destination, Tunnel

PROC_NET_TCP = """  sl  local_address rem_address   st tx_queue rx_queue
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000
   1: 00000000:EA61 00000000:0000 0A 00000000:00000000 00:00000000 00000000
   2: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000
"""


def test_listening_ports_from_proc_net_tcp():
    assert listening_ports(PROC_NET_TCP) == {8080, 60001}


def test_the_engine_socket_is_found_from_docker_host_and_nothing_else_is_taken_for_one(tmp_path):
    """The supervisor's socket: DOCKER_HOST's unix:// path with its group; a tcp:// or ssh://
    engine, or a path that is no socket, gives none (then no supervisor)."""
    import os
    import socket
    import subprocess

    path = tmp_path / "engine.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))

        def found(docker_host: str):
            out = subprocess.run(["sh", "-c", ENGINE_SOCKET_SCRIPT], env={"PATH": os.environ["PATH"], "DOCKER_HOST": docker_host},
                                 capture_output=True, text=True, check=True).stdout
            return engine_socket(out)

        assert found(f"unix://{path}") == (str(path), path.stat().st_gid)
        assert found("tcp://10.0.0.1:2376") is None and found("ssh://me@host") is None
        assert found(f"unix://{tmp_path / 'nothing.sock'}") is None


def test_remote_paths_are_in_the_remote_home():
    assert absolute("~/.seamless/buffers", "/home/a") == "/home/a/.seamless/buffers"
    assert absolute("data/b", "/home/a") == "/home/a/data/b"
    assert absolute("/scratch/b", "/home/a") == "/scratch/b"
    assert absolute("~", "/home/a") == "/home/a"


def test_destination_and_tunnel_command():
    d = Destination.parse("alice@login.hpc:2222")
    assert d.ssh_args()[-1] == "alice@login.hpc" and "2222" in d.ssh_args()
    command = Tunnel(d, {"scheduler": (8786, 60003)}, "10.0.0.7").command()
    assert "127.0.0.1:8786:10.0.0.7:60003" in command and command[-1] == "alice@login.hpc"
    assert "ExitOnForwardFailure=yes" in command


@pytest.mark.parametrize("text, seconds", [
    ("30", 1800), ("05:00", 300), ("05:30", 330), ("72:00:00", 259200),  # MM, MM:SS, HH:MM:SS
    ("1-12", 129600), ("1-12:30", 131400), ("1-00:00:00", 86400), ("2-03:04:05", 183845),  # D-HH, D-HH:MM, D-HH:MM:SS
    ("UNLIMITED", None), ("infinite", None),
])
def test_slurm_times_in_every_documented_form(text, seconds):
    assert walltime.seconds(text) == seconds  # 1-12 is 36 h (it was read as 24 h 12 min)


@pytest.mark.parametrize("text", ["", "1-", "-12", "1:2:3:4", "1-2-3", "12h", "1.5", " : "])
def test_what_is_no_slurm_time(text):
    with pytest.raises(ValueError):
        walltime.seconds(text)
    assert not walltime.is_time(text)


def test_slurm_times_round_trip():
    import random
    rng = random.Random(7)
    for total in [0, 59, 3600, 86399, 86400, 129600, 10 * 86400 + 1] + [rng.randrange(0, 30 * 86400) for _ in range(500)]:
        assert walltime.seconds(walltime.format(total)) == total


def test_worker_lifetime_stays_below_the_walltime():
    lifetime, stagger = lifetimes("01:00:00")
    assert int(lifetime[:-1]) + int(stagger[:-1]) < 3600


def test_sif_names_follow_the_image_tag():
    assert sif_name("seamless-stack/scheduler:abc123") == "scheduler-abc123.sif"
    assert sif_name("seamless-stack/worker-custom:ff00") == "worker-custom-ff00.sif"


def _deployment(**kw):
    base = dict(name="s", method="remote", placement=Placement("big", {"hashserver": 1, "database": 2, "scheduler": 3, "dashboard": 4}),
                compose=ComposeRecord(images={}, uid=1, gid=1), workers=1, threads=2, bind="127.0.0.1", buffer_dir="/b",
                database_dir="/d", env_file="/e", settings={}, ssh_destination="big", access="ssh")
    return Deployment(**{**base, **kw})


def test_ssh_access_writes_only_the_ssh_section_until_a_tunnel_exists():
    d = _deployment()
    assert set(d.connection().variables()) == {k for k in d.connection().variables() if k.startswith("SEAMLESS_SSH_")}
    tunnelled = d.connection(local_ports={"hashserver": 5577, "database": 5522, "scheduler": 8786, "dashboard": 8787}).variables()
    assert tunnelled["SEAMLESS_DASK_SCHEDULER"] == "tcp://127.0.0.1:8786"
    assert tunnelled["SEAMLESS_SSH_DASK_SCHEDULER_PORT"] == "3", "the SSH section keeps the remote ports"


def test_direct_wildcard_bind_uses_the_host_name_and_credentials_add_the_client_side(tmp_path):
    folder = credentials.ensure(tmp_path / "s.tls", "s", ("big",)).folder
    v = _deployment(access="direct", bind="0.0.0.0", credentials_dir=str(folder)).connection().variables()
    assert v["SEAMLESS_DASK_SCHEDULER"] == "tls://big:3" and v["SEAMLESS_DATABASE_IP"] == "big"
    assert v["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"] == f"{folder}/client.key"
    assert v["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == f"{folder}/ca.crt"
    secret = (folder / "http.secret").read_text().strip()
    buffer = json.loads(v["SEAMLESS_REMOTE_CLIENTS"])["buffer"][0]["url"]
    assert buffer == f"https://seamless:{secret}@big:1", "a public bind: https, the secret in the URL"
    assert v["SSL_CERT_FILE"] == f"{folder}/bundle.pem"


def test_a_loopback_stack_speaks_https_too_so_the_secret_goes_only_to_the_stack(tmp_path):
    folder = credentials.ensure(tmp_path / "s.tls", "s").folder
    d = _deployment(access="direct", bind="127.0.0.1", credentials_dir=str(folder))
    v = d.connection().variables()
    assert json.loads(v["SEAMLESS_REMOTE_CLIENTS"])["database"][0]["url"].startswith("https://seamless:")
    assert v["SSL_CERT_FILE"] == f"{folder}/bundle.pem" and v["SEAMLESS_DASK_SCHEDULER"].startswith("tls://")
    tunnelled = _deployment(credentials_dir=str(folder)).connection(local_ports={"hashserver": 5577, "database": 5522,
                                                                                 "scheduler": 8786, "dashboard": 8787})
    assert tunnelled.http_url(5577, with_secret=False) == "https://127.0.0.1:5577", "through SSH tunnels as well"
    insecure = _deployment(access="direct", bind="127.0.0.1").connection().variables()
    assert "SSL_CERT_FILE" not in insecure and insecure["SEAMLESS_DASK_SCHEDULER"].startswith("tcp://")


def test_services_job_script():
    spec = build_spec(name="s", method="slurm", remote="login", access="ssh", threads=2,
                      slurm=SlurmOptions(partition="main", account="proj", max_jobs=5, job_extra=("--gres=gpu:1",)),
                      environ={"HOME": "/home/u"})
    sifs = {"hashserver": "/s/h.sif", "database": "/s/d.sif", "scheduler": "/s/s.sif", "worker": "/s/s.sif"}
    d = _deployment(method="slurm", compose=None, slurm=SlurmRecord(stack_dir="/home/u/st", sifs=sifs, mode="adaptive", login="login"))
    script = services_job_script(spec, d, "seamless-s-services")
    assert script.startswith("#!/bin/bash\n#SBATCH --job-name=seamless-s-services\n")
    assert "#SBATCH --partition=main" in script and "#SBATCH --account=proj" in script
    jobqueue = json.loads(next(line for line in script.splitlines() if line.startswith("export SS_JOBQUEUE="))[len("export SS_JOBQUEUE="):].strip("'"))
    assert jobqueue["adapt"] == {"minimum_jobs": 0, "maximum_jobs": 5} and jobqueue["cores"] == 2 and jobqueue["processes"] == 1
    assert jobqueue["job_extra_directives"] == ["--export=PATH,HOME,USER,LOGNAME,LANG", "--gres=gpu:1"], "nothing else of the shell"
    assert "#SBATCH --export=PATH,HOME,USER,LOGNAME,LANG\n" in script, "the services job takes nothing else of the shell either"
    assert "--lifetime" in jobqueue["worker_extra_args"] and "--no-dashboard" in jobqueue["worker_extra_args"]
    assert "/s/s.sif python3" in jobqueue["python"]
    # Seamless' thread layout: 2 Seamless workers x throttle 3 = 6 Dask threads on 2 CPUs
    extra = jobqueue["worker_extra_args"]
    assert extra[extra.index("--nthreads") + 1] == "6" and "SEAMLESS_WORKER_TRANSFORMATION_THROTTLE=3" in jobqueue["python"]
    assert "export SS_THREADS=2\n" in script and "export SS_DASK_THREADS=6\n" in script and "export SS_THROTTLE=3\n" in script


def test_compose_workers_get_seamless_thread_layout():
    from seamless_stack.backends.compose import ComposeBackend
    d = _deployment(method="local", threads=2, throttle=4, compose=ComposeRecord(images={r: "i" for r in ROLES}, uid=1, gid=1))
    variables = ComposeBackend.compose_environment(SimpleNamespace(deployment=d))
    assert (variables["THREADS"], variables["DASK_THREADS"], variables["THROTTLE"]) == ("2", "8", "4")
    compose = (Path(__file__).parents[2] / "compose" / "compose.yaml").read_text()
    assert "THREADS: ${DASK_THREADS" in compose and "SEAMLESS_WORKER_TRANSFORMATION_THROTTLE: ${THROTTLE" in compose
    assert "SEAMLESS_STACK_SEAMLESS_WORKERS: ${THREADS" in compose, "the plugin starts THREADS Seamless workers"


@pytest.mark.parametrize("options, message", [
    (SlurmOptions(time="soon"), "is not a Slurm time"),
    (SlurmOptions(memory="lots"), "is not a memory size"),
    (SlurmOptions(min_jobs=3, max_jobs=2), "make no range"),
])
def test_invalid_slurm_options(options, message):
    from seamless_stack.errors import StackError
    with pytest.raises(StackError, match=message):
        build_spec(name="s", method="slurm", slurm=options, environ={"HOME": "/h"})


def test_credentials_are_owner_only_kept_for_the_names_they_hold_and_rotated_on_demand(tmp_path):
    folder = tmp_path / "s.tls"
    first = credentials.ensure(folder, "s", ("node7", "10.0.0.7", "node8"))
    secret, ca, server = first.secret, (folder / "ca.crt").read_text(), (folder / "server.crt").read_text()
    again = credentials.ensure(folder, "s", ("node7", "10.0.0.7"))
    assert {"node7", "10.0.0.7"} <= again.names() and again.secret == secret and (folder / "ca.crt").read_text() == ca
    assert (folder / "server.crt").read_text() == server
    assert folder.stat().st_mode & 0o777 == 0o700
    assert all(path.stat().st_mode & 0o077 == 0 for path in folder.iterdir()), "every file 0600"
    rotated = credentials.ensure(folder, "s", rotate=True)
    assert rotated.secret != secret and (folder / "ca.crt").read_text() != ca


def test_the_ca_certifies_only_the_stacks_names_and_a_name_outside_them_makes_new_credentials(tmp_path):
    import subprocess
    folder, lines = tmp_path / "s.tls", []
    creds = credentials.ensure(folder, "s", ("node7", "10.0.0.7", "::1"))
    assert {"node7", "10.0.0.7", "::1", "127.0.0.1", "localhost", "hashserver"} <= creds.permitted()

    def verify(certificate):
        return subprocess.run(["openssl", "verify", "-CAfile", str(folder / "bundle.pem"), str(certificate)],
                              capture_output=True, text=True)

    assert verify(folder / "server.crt").returncode == 0 and verify(folder / "client.crt").returncode == 0
    # whoever got hold of the CA key cannot make a certificate the bundle (SSL_CERT_FILE) accepts for another server
    for alt in ("DNS:example.org", "IP:10.9.9.9", "DNS:node7.example.org.evil"):
        subprocess.run(["openssl", "req", "-x509", *credentials.KEY, "-CA", str(folder / "ca.crt"), "-CAkey",
                        str(folder / "ca.key"), "-subj", "/CN=rogue", "-addext", f"subjectAltName={alt}",
                        "-keyout", str(tmp_path / "rogue.key"), "-out", str(tmp_path / "rogue.crt")], check=True, capture_output=True)
        refused = verify(tmp_path / "rogue.crt")
        assert refused.returncode != 0 and "permitted subtree violation" in refused.stdout + refused.stderr, alt
    ca, secret = (folder / "ca.crt").read_text(), creds.secret
    credentials.ensure(folder, "s", ("node7",), progress=lines.append)
    assert lines == [] and (folder / "ca.crt").read_text() == ca, "a permitted name changes nothing"
    moved = credentials.ensure(folder, "s", ("node9",), progress=lines.append)
    assert "node9" in moved.permitted() and (folder / "ca.crt").read_text() != ca and moved.secret != secret
    assert len(lines) == 1 and "may not certify node9" in lines[0] and "source the environment again" in lines[0], lines


def test_storage_is_made_owner_only_and_an_open_folder_is_tightened(tmp_path):
    from seamless_stack.shell import shell_for
    from seamless_stack.storage import prepare_dirs
    lines = []
    new, opened = tmp_path / "new" / "buffers", tmp_path / "open"
    opened.mkdir(mode=0o777)
    opened.chmod(0o775)
    dirs = prepare_dirs(shell_for(None), str(tmp_path), {"buffers": str(new), "database": str(opened)}, progress=lines.append)
    assert dirs == {"buffers": str(new), "database": str(opened)}
    assert new.stat().st_mode & 0o777 == 0o700 and opened.stat().st_mode & 0o777 == 0o700
    assert len(lines) == 1 and lines[0].startswith(f"database {opened} was open to others: made owner-only"), lines
    again = []
    prepare_dirs(shell_for(None), str(tmp_path), {"database": str(opened)}, progress=again.append)
    assert again == [], "nothing to say the second time"


def test_certificates_live_months_the_ca_signs_no_other_ca_and_up_renews_with_the_same_keys(tmp_path):
    import subprocess
    folder = tmp_path / "s.tls"
    creds = credentials.ensure(folder, "s")

    def text(file):
        return subprocess.run(["openssl", "x509", "-in", str(folder / file), "-noout", "-text"], capture_output=True,
                              text=True, check=True).stdout

    assert "CA:TRUE, pathlen:0" in text("ca.crt")
    for file in ("server.crt", "client.crt"):
        days = subprocess.run(["openssl", "x509", "-in", str(folder / file), "-noout", "-checkend", str(91 * 86400)])
        assert days.returncode == 1, f"{file} lives no longer than 90 days"
    # a client certificate about to end: the next ensure (at `up`) signs it again, same key, same CA and secret
    key, ca, secret = (folder / "client.key").read_text(), (folder / "ca.crt").read_text(), creds.secret
    subprocess.run(["openssl", "req", "-x509", "-key", str(folder / "client.key"), "-CA", str(folder / "ca.crt"),
                    "-CAkey", str(folder / "ca.key"), "-days", "2", "-subj", "/CN=old", "-out", str(folder / "client.crt")],
                   check=True, capture_output=True)
    before = (folder / "client.crt").read_text()
    credentials.ensure(folder, "s")
    assert (folder / "client.crt").read_text() != before and (folder / "client.key").read_text() == key
    assert (folder / "ca.crt").read_text() == ca and credentials.Credentials(folder).secret == secret
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(folder / "ca.crt"), str(folder / "client.crt")],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    assert all(path.stat().st_mode & 0o077 == 0 for path in folder.iterdir())


def test_docker_engines_before_28_are_named_for_their_loopback_publishing():
    from seamless_stack.docker_tools import loopback_publishing_warning
    assert "Docker engine 26.1.5 on big lets other hosts" in loopback_publishing_warning("26.1.5", " on big")
    assert "fixed in Docker 28" in loopback_publishing_warning("20.10.24+dfsg1")
    assert loopback_publishing_warning("28.2.2") is None and loopback_publishing_warning("") is None


def test_a_port_someone_else_took_is_named():
    from seamless_stack.backends.compose import port_taken
    proxy = ("Error response from daemon: driver failed programming external connectivity on endpoint seamless-x-hashserver-1: "
             "Bind for 127.0.0.1:60123 failed: port is already allocated")
    kernel = "Error starting userland proxy: listen tcp4 127.0.0.1:60124: bind: address already in use"
    assert port_taken(proxy) == ("127.0.0.1", 60123) and port_taken(kernel) == ("127.0.0.1", 60124)
    assert port_taken("no such image") is None


def test_a_record_saved_before_its_placement_is_one_line_for_every_command():
    from seamless_stack.errors import StackError
    d = _deployment(method="slurm", compose=None, placement=None,
                    slurm=SlurmRecord(stack_dir="/s", sifs={}, mode="adaptive", login="login"))
    with pytest.raises(StackError, match=r"stack 's' is still starting, or its `up` was interrupted.*down --name s"):
        d.connection()


def test_stream_blames_the_side_that_failed():
    from seamless_stack.shell import CommandFailed, stream
    with pytest.raises(CommandFailed, match="receiving side"):
        stream(["sh", "-c", "head -c 50000000 /dev/zero"], ["sh", "-c", "echo refused >&2; exit 3"], lambda line: None)
    with pytest.raises(CommandFailed, match="this machine"):
        stream(["sh", "-c", "echo broken >&2; exit 4"], ["sh", "-c", "cat > /dev/null"], lambda line: None)
    assert stream(["sh", "-c", "printf 12345"], ["sh", "-c", "cat > /dev/null"], lambda line: None) == 5


def test_the_node_helper_draws_only_the_ports_it_needs():
    import subprocess
    import sys
    from seamless_stack.resources import DATA
    helper = DATA / "apptainer" / "seamless_stack_node.py"
    import socket
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        base = probe.getsockname()[1]
    # three free ports in the range and a fixed scheduler port outside it: enough
    out = subprocess.run([sys.executable, str(helper), "ports", "4", str(base), str(base + 2), str(base + 10)],
                         capture_output=True, text=True)
    if out.returncode != 0 and ("in use" in out.stderr or "free ports" in out.stderr):
        pytest.skip("a port of the probe range is busy on this machine")
    assert out.returncode == 0, out.stderr
    ports = [int(p) for p in out.stdout.split()]
    assert ports[2] == base + 10 and sorted(ports[:2] + ports[3:]) == [base, base + 1, base + 2]


def test_a_taken_local_port_of_a_tunnel_is_named_in_one_line():
    """OpenSSH's two lines about a local forward it cannot listen on become one that names the port."""
    from seamless_stack.ssh import _TAKEN

    said = ("bind [127.0.0.1]:60123: Address already in use\n"
            "channel_setup_fwd_listener_tcpip: cannot listen to port: 60123\nCould not request local forwarding.\n")
    match = _TAKEN.search(said)
    assert match and (match[1] or match[2]) == "60123"
    assert _TAKEN.search("bind [127.0.0.1]:80: Permission denied\n") is None
    assert (lambda m: m[1] or m[2])(_TAKEN.search("cannot listen to port: 5577\n")) == "5577"


def test_storage_free_space_is_a_warning_when_low_and_a_problem_when_full(tmp_path, monkeypatch):
    from seamless_stack import storage
    from seamless_stack.shell import shell_for
    dirs = {"hashserver": str(tmp_path), "database": str(tmp_path / "gone")}
    assert storage.storage_problems(shell_for(None), dirs) == {"database": f"{tmp_path / 'gone'} is gone"}
    monkeypatch.setattr(storage, "LOW_MB", 10**12)  # every real disk is "low" now
    low = storage.storage_problems(shell_for(None), dirs)["hashserver"]
    assert low.startswith(storage.LOW) and "MB free" in low
    monkeypatch.setattr(storage, "FULL_MB", 10**12)
    full = storage.storage_problems(shell_for(None), dirs)["hashserver"]
    assert full.startswith(f"{tmp_path} is full (") and "free space there" in full
