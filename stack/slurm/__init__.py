"""The cluster side of `up slurm`, split by job: command text and its parsing (commands),
running them on the login node (cluster), the services job script (jobscript), SIFs (sif).

Everything the cluster does is a short POSIX shell script run on the login node: locally
when seamless-stack runs there, through SSH (`--login`) from a workstation. So the cluster
needs Slurm's client commands, Apptainer and python3, and nothing of ours but the SIFs and
one small helper we copy into the stack's folder.
"""

from ..resources import DATA

APPTAINER_DIR = DATA / "apptainer"
