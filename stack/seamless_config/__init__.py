"""Seamless projects use a stack through Seamless' own configuration (`seamless.config.init()`).

`connect` writes the files seamless-config 0.3.2 and remote-http-launcher 0.4.5 read (see
../shared/DESIGN.md section 6), and api.py's hooks keep them true through `up`, `tunnel`
and `down`. One module per job: names (projects, cluster, keys), content (what the files
say), record (which projects use a stack), disk (where the files live and writing them),
hooks (the lifecycle) and commands (connect, disconnect, status). This face hands on the
names the CLI, api.py and the tests use.
"""

from .commands import MODES_NOTE, check_reachable, connect, disconnect, down_status, security_note, status_lines
from .content import client_files, cluster_definition, cluster_yaml, project_lines, worker_frontends
from .disk import cluster_file, form_of, launcher_client_dir, needs_tunnel, write_files
from .hooks import refresh, stack_down, tunnel_closed, tunnel_opened
from .names import (QUEUE, SERVICES, Project, cluster_name, launcher_key, pure_dask_key, ssh_hostname,
                    valid_host as _valid_host)
from .record import Record, connected, load, save, tunnel_pid
