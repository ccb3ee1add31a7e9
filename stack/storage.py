"""Storage directories, made and checked where the services run, with one shell script.

The same script serves this machine, a remote Docker host and a Slurm login node, so
"not a directory", "cannot be created" and "not writable" read the same everywhere.
"""

from __future__ import annotations

from typing import Callable

from .errors import StackError
from .shell import Shell, quote

TIGHTENED = "TIGHTENED"
PROBLEMS = {"NOTDIR": "is not a directory", "NOMKDIR": "cannot be created", "NOWRITE": "is not writable",
            "NOCHOWN": "cannot be given to the services' user"}


def absolute(raw: str, home: str) -> str:
    """A path as given for another machine: `~/x` and relative paths are in that user's home."""
    if raw.startswith("/"):
        return raw
    return home if raw == "~" else f"{home}/{raw[2:] if raw.startswith('~/') else raw}"


def prepare_script(path: str, owner: tuple[int, int] | None) -> str:
    """Create the directory if missing (0700), prove it writable, take group and other
    access away from an existing one (TIGHTENED), print its real path.

    Only the top folder: nobody else can enter it then, whatever the modes beneath (the
    services keep new files owner-only too), and a huge buffer store is not walked.

    When root prepares storage for services that run unprivileged, the directory (and
    whatever in it root owns, e.g. from earlier stacks) is handed to the services' UID:GID.
    """
    give = ""
    if owner:
        uid, gid = owner
        give = (f'if [ "$(id -u)" = 0 ] && [ "$(id -u)" != {uid} ]; then '
                f'find "$d" \\( ! -uid {uid} -o ! -gid {gid} \\) -exec chown -h {uid}:{gid} {{}} + 2>/dev/null '
                f'|| {{ echo NOCHOWN; exit 0; }}; fi; ')
    return (f'd={quote(path)}; [ -e "$d" ] && [ ! -d "$d" ] && {{ echo NOTDIR; exit 0; }}; '
            f'mkdir -p -m 700 -- "$d" 2>/dev/null || {{ echo NOMKDIR; exit 0; }}; '
            f'[ -w "$d" ] && [ -x "$d" ] || {{ echo NOWRITE; exit 0; }}; {give}'
            f'[ -n "$(find "$d" -maxdepth 0 -perm /077)" ] && chmod go-rwx "$d" 2>/dev/null && printf "{TIGHTENED} "; '
            f'cd -- "$d" && pwd -P')


def prepare_dirs(shell: Shell, home: str, dirs: dict[str, str], owner: tuple[int, int] | None = None,
                 progress: Callable[[str], None] = lambda line: None) -> dict[str, str]:
    """what -> absolute path, each directory created and checked there, and owner-only."""
    resolved = {}
    for what, raw in dirs.items():
        path = absolute(raw, home)
        answer = shell.run(prepare_script(path, owner), what=f"preparing {what}").strip()
        if answer.startswith(TIGHTENED + " "):
            answer = answer[len(TIGHTENED) + 1:]
            progress(f"{what} {answer} was open to others: made owner-only (chmod go-rwx), as a stack's data is")
        if answer in PROBLEMS:
            where = "" if str(shell) == "this machine" else f" on {shell}"
            raise StackError(f"{what} {path}{where} {PROBLEMS[answer]}", f"choose another {what}, or fix its permissions")
        resolved[what] = answer
    return resolved


# Free space in a storage folder: below FULL_MB a problem (`status` exits 1), below LOW_MB a
# warning that `status` prints (LOW starts its text). The hashserver refuses (507) a write
# that would leave less than RESERVE_MB (images/guard: MIN_FREE_BYTES), so a folder it fills
# ends between the two and `status` fails.
FULL_MB, LOW_MB, LOW, RESERVE_MB = 256, 2048, "space is low:", 128


def storage_problems(shell: Shell, dirs: dict[str, str]) -> dict[str, str]:
    """service -> what is wrong with its storage now (missing, not writable, full) or soon will
    be (LOW: little free space); empty when fine. One shell call for all."""
    script = " ".join(f'if [ -d {quote(p)} ]; then [ -w {quote(p)} ] || echo "{s} NOWRITE"; '
                      f'echo "{s} FREE $(df -Pk {quote(p)} | awk \'NR==2 {{print $4}}\')"; else echo "{s} MISSING"; fi;'
                      for s, p in dirs.items())
    problems = {}
    for line in shell.run(script, what="checking storage").splitlines():
        if len(line.split()) < 2 or line.split()[0] not in dirs:
            continue  # not ours (a login shell's chatter)
        service, code, *value = line.split()
        free = int(value[0]) // 1024 if code == "FREE" and value and value[0].isdigit() else None
        if code in ("MISSING", "NOWRITE"):
            problems[service] = f"{dirs[service]} {'is gone' if code == 'MISSING' else 'is not writable'}"
        elif free is not None and free < FULL_MB:
            problems.setdefault(service, f"{dirs[service]} is full ({free} MB free; the hashserver refuses writes that would "
                                         f"leave less than {RESERVE_MB} MB): free space there")
        elif free is not None and free < LOW_MB:
            problems.setdefault(service, f"{LOW} {dirs[service]} has {free} MB free (`status` fails under {FULL_MB} MB)")
    return problems
