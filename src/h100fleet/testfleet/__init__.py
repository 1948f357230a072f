"""The offline local test fleet: node images, systemd containers and the host services they use.

Only the Debian mirror and PyPI are reachable from the machines this project is tested on, so node images are
built here (debootstrap + docker import) and every container runs systemd as PID 1 without --privileged.
"""
