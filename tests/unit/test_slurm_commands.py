"""Slurm command building and output parsing, on captured output (no cluster)."""

import pytest

from seamless_stack.errors import StackError
from seamless_stack.slurm import commands


def test_squeue_rows_become_jobs():
    out = "101|seamless-s-services|RUNNING|c1|c1\n102|seamless-s-worker|PENDING||(Resources)\n\n"
    services, worker = commands.parse_squeue(out)
    assert services == commands.Job("101", "seamless-s-services", "RUNNING", "c1", "c1") and services.is_services
    assert not worker.is_services and commands.describe(worker) == "pending (Resources)"
    assert commands.describe(services) == "running on c1"
    assert commands.parse_squeue("") == []


def test_squeue_and_scancel_commands_quote_their_names():
    assert "-n a-services,a-worker " in commands.squeue_command(["a-services", "a-worker"])
    cancel = commands.scancel_command(["a-services", "a-worker"], ["17"])
    assert cancel.count("scancel -u") == 2 and "scancel 17" in cancel and cancel.endswith("true")


@pytest.mark.parametrize("out, job_id", [("4242\n", "4242"), ("4242;cluster\n", "4242")])
def test_job_id_from_sbatch(out, job_id):
    assert commands.parse_job_id(out) == job_id


def test_sbatch_noise_is_an_error():
    with pytest.raises(StackError, match="not a job ID"):
        commands.parse_job_id("sbatch: error: Batch job submission failed\n")


def test_probe_reports_home_partitions_and_missing_tools():
    facts = commands.parse_probe("HOME /home/u\nPARTITION main* 2 2000 infinite\nPARTITION debug 4+ 8000 1-00:00:00\nPARTITION main* 2 1500 infinite\n", "login")
    assert facts.home == "/home/u" and facts.partitions == ["main", "debug"] and facts.nodes == ()
    assert facts.partition(None) == commands.Partition("main", 2, 1500, default=True), "the default, smallest node"
    assert facts.partition("debug") == commands.Partition("debug", 4, 8000, max_time=86400)
    assert facts.partition("gpu") is None
    # captured on the test cluster: sinfo's node names, then their addresses from getent
    facts = commands.parse_probe("HOME /home/u\nPARTITION main* 2 2000\nNODES c1 c2\nADDRESSES 192.168.32.2 192.168.32.3 \n", "login")
    assert facts.nodes == ("c1", "c2", "192.168.32.2", "192.168.32.3"), "the services' certificate names them all"
    with pytest.raises(StackError, match="apptainer not found on login: install Apptainer"):
        commands.parse_probe("MISSING apptainer\nHOME /home/u\nPARTITION main 2 2000\n", "login")
    with pytest.raises(StackError, match="unexpected answer"):
        commands.parse_probe("Welcome to the cluster!\n", "login")


def test_services_report():
    report = '{"job_id": "7", "node": "c1", "address": "10.0.0.2", "ports": {"hashserver": 1, "database": 2, "scheduler": 3, "dashboard": 4}}'
    assert commands.parse_services(report)["node"] == "c1"
    assert commands.parse_services("  \n") is None
    with pytest.raises(StackError, match="unreadable report"):
        commands.parse_services('{"job_id": "7"}')


def test_default_job_sizes_shrink_to_the_nodes_explicit_ones_are_refused():
    from dataclasses import replace

    from seamless_stack.slurm.fit import fit
    from seamless_stack.spec import SlurmOptions, StackSpec

    facts = commands.ClusterFacts("/home/u", ["main"], resources=(commands.Partition("main", 2, 2000, default=True),))
    spec, notes = fit(StackSpec(method="slurm", slurm=SlurmOptions()), facts)
    assert (spec.threads, spec.slurm.cpus, spec.slurm.memory, spec.slurm.worker_memory) == (2, 2, "2000M", "1024MiB")
    assert any(note.startswith("worker jobs ask for 3 CPUs by default; nodes in partition main have 2 CPUs") for note in notes)
    roomy = commands.ClusterFacts("/home/u", ["big"], resources=(commands.Partition("big", 64, 256000, default=True),))
    assert fit(StackSpec(method="slurm", slurm=SlurmOptions()), roomy) == (StackSpec(method="slurm", slurm=SlurmOptions()), [])
    with pytest.raises(StackError, match="worker jobs ask for 4 CPUs; nodes in partition main have 2 CPUs") as refused:
        fit(StackSpec(method="slurm", threads=4, slurm=SlurmOptions()), facts)
    assert "use --threads 2 or --worker-queue" in refused.value.fix
    short = commands.ClusterFacts("/home/u", ["main"], resources=(commands.Partition("main", 2, 2000, True, 24 * 3600),))
    spec, notes = fit(StackSpec(method="slurm", threads=1, slurm=replace(SlurmOptions(), memory="1G", worker_memory="1GiB", cpus=1)), short)
    assert spec.slurm.time == "24:00:00" and spec.slurm.worker_walltime == "01:00:00"
    assert notes == ["the services job asks for a walltime of 72:00:00 by default; partition main allows 24:00:00: using --time 24:00:00"]
    with pytest.raises(StackError, match="worker jobs ask for a walltime of 30:00:00; partition main allows 24:00:00") as refused:
        fit(StackSpec(method="slurm", slurm=replace(SlurmOptions(), worker_walltime="30:00:00")), short)
    assert refused.value.fix == "use --worker-walltime 24:00:00 or --worker-queue with bigger nodes"
    with pytest.raises(StackError, match="services job asks for 8 CPUs"):
        fit(StackSpec(method="slurm", slurm=replace(SlurmOptions(), cpus=8)), facts)
    single_node = StackSpec(method="slurm", threads=4, slurm=replace(SlurmOptions(), local_workers=1, cpus=2, memory="1G"))
    assert fit(single_node, facts)[0].threads == 4, "workers inside the services job: no worker jobs to size"


def test_sbatch_test_only_answers():
    options = {"cores": 3, "memory": "4GB", "walltime": "01:00:00", "queue": None}
    facts = commands.ClusterFacts("/home/u", ["main"], resources=(commands.Partition("main", 2, 2000, default=True),))
    ok = "sbatch: Job 12 to start at 2026-11-26T06:00:00 using 2 processors on nodes c2 in partition main\nEXIT 0\n"
    assert commands.parse_test_only(ok, options, facts).startswith("Job 12 to start at")
    refused = ("sbatch: error: CPU count per node can not be satisfied\n"
               "sbatch: error: Batch job submission failed: Requested node configuration is not available\nEXIT 1\n")
    with pytest.raises(StackError, match=r"Slurm would refuse the worker jobs \(3 CPUs, 4GB, 01:00:00\) in partition main "
                                         r"\(nodes there have 2 CPUs, 2000 MB\): CPU count per node can not be satisfied"):
        commands.parse_test_only(refused, options, facts)


def test_submission_record():
    assert commands.parse_submissions("") is None and commands.parse_submissions("{trunc") is None
    assert commands.parse_submissions('{"submitted": 1, "refused": 2, "refused_in_a_row": 2, "last_error": "x"}')["refused"] == 2


def test_the_cluster_side_names_are_the_ones_the_services_job_writes():
    """ClusterFiles is the one list of the stack folder's names; the job script and the node
    helper (shell and Python that run on the cluster) must spell them the same way."""
    from seamless_stack.layout import NODE_HELPER, ClusterFiles
    from seamless_stack.slurm import APPTAINER_DIR

    files = ClusterFiles("$SS_STACK_DIR")
    script = (APPTAINER_DIR / "services-job.sh").read_text()
    assert f'"{files.services}.tmp"' in script and f'"{files.workers}"' in script
    assert f'node_helper="{files.node_helper}"' in script
    relay = (APPTAINER_DIR / NODE_HELPER).read_text()
    assert '"submissions.json")' in relay and files.submissions.endswith("/workers/submissions.json")


def test_what_the_services_job_started_again_is_counted_from_its_log():
    from seamless_stack.slurm import APPTAINER_DIR

    script = (APPTAINER_DIR / "services-job.sh").read_text()
    assert 'log "$(date -u +%FT%TZ) $name ended (exit $code): starting it again in ${delay}s"' in script, "the line parsed here"
    log = ("[services] node n1 (10.0.0.2), ports: ...\n"
           "[services] 2026-12-07T22:10:01Z hashserver ended (exit 137): starting it again in 0s\n"
           "[services] 2026-12-07T22:10:05Z hashserver ended (exit 1): starting it again in 2s\n"
           "[services] 2026-12-07T22:11:00Z scheduler ended (exit 0): starting it again in 0s\n")
    restarts = commands.parse_restarts(log)
    assert restarts["hashserver"] == [("2026-12-07T22:10:01Z", "137"), ("2026-12-07T22:10:05Z", "1")]
    now = 1796681700.0  # 2026-12-07T22:15:00Z
    assert commands.ended_lately(restarts["hashserver"], 600, now) == ["137", "1"]
    assert commands.ended_lately(restarts["hashserver"], 297, now) == ["1"], "22:10:01 is older than 297 s"
    assert commands.restart_notes(restarts) == [
        "the services job started hashserver again 2 time(s) (last at 2026-12-07T22:10:05Z, it had ended with exit 1; "
        "`seamless-stack logs services`)",
        "the services job started scheduler again 1 time(s) (last at 2026-12-07T22:11:00Z, it had ended with exit 0; "
        "`seamless-stack logs services`)"]
    assert commands.parse_restarts("") == {}
