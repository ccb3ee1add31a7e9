#!/bin/sh
# Start the bed: host keys, authorized key (from $AUTHORIZED_KEY), dockerd, then sshd.
set -e
ssh-keygen -A >/dev/null
if [ -n "$AUTHORIZED_KEY" ]; then
    printf '%s\n' "$AUTHORIZED_KEY" > /home/seamless/.ssh/authorized_keys
    chown seamless:seamless /home/seamless/.ssh/authorized_keys
    chmod 600 /home/seamless/.ssh/authorized_keys
fi
mkdir -p /run/sshd
# vfs: overlay on overlay does not work; vfs always does (slow, disk-hungry, fine for tests).
# --cgroupns host means nested containers' cgroups live in the HOST's hierarchy: keep them
# under their own parent, not the host engine's /docker (remote_host.stop removes them first).
dockerd --storage-driver vfs --cgroup-parent /seamless-testbed >/var/log/dockerd.log 2>&1 &
exec /usr/sbin/sshd -D -e
