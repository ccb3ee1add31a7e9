import random
import socket

import pytest

from seamless_stack.errors import StackError
from seamless_stack.ports import allocate_ports, port_is_free

SERVICES = ("hashserver", "database", "scheduler", "dashboard")


def test_ports_are_distinct_and_inside_the_range():
    for seed in range(50):
        ports = allocate_ports(SERVICES, (61000, 61005), is_free=lambda p: True, rng=random.Random(seed))
        assert list(ports) == list(SERVICES)
        assert len(set(ports.values())) == 4
        assert all(61000 <= p <= 61005 for p in ports.values())


def test_busy_and_reserved_ports_are_skipped():
    busy = {61000, 61001}
    ports = allocate_ports(SERVICES, (61000, 61007), is_free=lambda p: p not in busy, reserved={61002, 61003})
    assert set(ports.values()) == {61004, 61005, 61006, 61007}


def test_fixed_port_may_lie_outside_the_range():
    ports = allocate_ports(SERVICES, (61000, 61010), is_free=lambda p: True, fixed={"scheduler": 8786})
    assert ports["scheduler"] == 8786
    assert 8786 not in [ports[s] for s in SERVICES if s != "scheduler"]


def test_fixed_port_that_is_busy_or_reserved_is_refused():
    with pytest.raises(StackError, match="port 8786 for the scheduler is already in use"):
        allocate_ports(SERVICES, (61000, 61010), is_free=lambda p: p != 8786, fixed={"scheduler": 8786})
    with pytest.raises(StackError, match="already in use"):
        allocate_ports(SERVICES, (61000, 61010), is_free=lambda p: True, fixed={"scheduler": 61001}, reserved={61001})


def test_range_too_small():
    with pytest.raises(StackError, match="too small.*4 ports needed, 3"):
        allocate_ports(SERVICES, (61000, 61002), is_free=lambda p: True)


def test_every_port_busy():
    with pytest.raises(StackError, match="no free port left in 61000-61009"):
        allocate_ports(SERVICES, (61000, 61009), is_free=lambda p: p >= 61007)


def test_port_is_free_sees_a_real_listener():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)
