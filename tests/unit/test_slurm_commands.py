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
    facts = commands.parse_probe("HOME /home/u\nPARTITIONS main debug \n", "login")
    assert facts.home == "/home/u" and facts.partitions == ["main", "debug"] and facts.nodes == ()
    # captured on the test cluster: sinfo's node names, then their addresses from getent
    facts = commands.parse_probe("HOME /home/u\nPARTITIONS main \nNODES c1 c2\nADDRESSES 192.168.32.2 192.168.32.3 \n", "login")
    assert facts.nodes == ("c1", "c2", "192.168.32.2", "192.168.32.3"), "the services' certificate names them all"
    with pytest.raises(StackError, match="apptainer not found on login: install Apptainer"):
        commands.parse_probe("MISSING apptainer\nHOME /home/u\nPARTITIONS main\n", "login")
    with pytest.raises(StackError, match="unexpected answer"):
        commands.parse_probe("Welcome to the cluster!\n", "login")


def test_services_report():
    report = '{"job_id": "7", "node": "c1", "address": "10.0.0.2", "ports": {"hashserver": 1, "database": 2, "scheduler": 3, "dashboard": 4}}'
    assert commands.parse_services(report)["node"] == "c1"
    assert commands.parse_services("  \n") is None
    with pytest.raises(StackError, match="unreadable report"):
        commands.parse_services('{"job_id": "7"}')
