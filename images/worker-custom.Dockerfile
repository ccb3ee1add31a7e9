# A worker image with the user's own libraries on top of ours ("build your project-specific
# environment, then add specific libraries"). The lock stays a constraint, so dask,
# distributed and seamless keep the versions the scheduler runs.
ARG WORKER_IMAGE
FROM ${WORKER_IMAGE}
USER 0:0
COPY requirements.txt /opt/seamless-stack/worker-requirements.txt
RUN --mount=type=secret,id=ca --mount=type=secret,id=pip_index \
    pip-install --constraint /opt/seamless-stack/lock.txt --requirement /opt/seamless-stack/worker-requirements.txt
USER 65534:65534
