from seamless_stack.airgap import debian_mirror

DEB822 = """Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
"""


def test_mirror_from_deb822_sources():
    assert debian_mirror([DEB822]) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources_skips_security_and_other_archives():
    lines = "deb http://mirror.example/debian-security bookworm-security main\n" \
            "deb [arch=amd64] https://packages.example/apt stable main\n" \
            "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    assert debian_mirror([lines]) == "http://mirror.example/debian"


def test_no_mirror():
    assert debian_mirror(["# nothing here\n"]) is None
