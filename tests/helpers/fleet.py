"""What the tests of booted hosts over SSH (test_fleet, test_playbook) share."""
import shutil

import pytest

from launcher.fleet import missing
from launcher.machine import CACHE


def needs_a_fleet():
    """Skip unless this machine can boot a fleet: root, systemd-nspawn, and an image or the
    means to build one."""
    if missing():
        pytest.skip(missing())
    if not shutil.which('debootstrap') and not any(CACHE.glob('base-*')):
        pytest.skip('debootstrap is missing and no image is cached (apt-get install debootstrap)')


def on(fleet, name, command):
    """The command's output on the host, over SSH; it must succeed."""
    done = fleet.ssh(name, command)
    assert done.returncode == 0, f'{name}: {command}: {done.stderr}'
    return done.stdout.strip()
