"""What the tests of booted hosts over SSH (test_fleet, test_playbook, test_server, the
cluster's fault scenarios) share."""
import shutil

import pytest

from launcher.cluster import playbook, recap
from launcher.fleet import Fleet, missing
from launcher.machine import CACHE


def needs_a_fleet():
    """Skip unless this machine can boot a fleet: root, systemd-nspawn, and an image or the
    means to build one."""
    if missing():
        pytest.skip(f'the fleet {missing()}')
    if not shutil.which('debootstrap') and not any(CACHE.glob('base-*')):
        pytest.skip('debootstrap is missing and no image is cached (apt-get install debootstrap)')


def on(fleet, name, command):
    """The command's output on the host, over SSH; it must succeed."""
    done = fleet.ssh(name, command)
    assert done.returncode == 0, f'{name}: {command}: {done.stderr}'
    return done.stdout.strip()


def play(fleet, name='site.yml', source=None, extra_vars=None):
    """ansible-playbook -i INVENTORY deploy/NAME (with the code of `source` instead of this
    checkout, and `extra_vars`), which must succeed: its output and its recap."""
    done = playbook(fleet.inventory, name, source, extra_vars)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    return done.stdout, recap(done.stdout)


def secret(fleet, name):
    return (fleet.base / 'secrets' / name).read_text().strip()


SINGLE_SERVER = pytest.StashKey()


def playbook_server(request, domain):
    """{'machine', 'pebble_root'} as tests/test_deploy.py's deployed_server gives them, for
    the single server the playbook makes: a fleet of one host in every group, provisioned by
    deploy/site.yml for `domain`, its certificate from the control machine's web CA (in
    'pebble_root', the CA a client trusts). One for the whole session, removed at its end."""
    needs_a_fleet()
    config = request.config
    if SINGLE_SERVER not in config.stash:
        fleet = Fleet(request.getfixturevalue('tmp_path_factory').mktemp('one-host'), one_host=True)
        server = config.stash[SINGLE_SERVER] = {}
        config.add_cleanup(fleet.down)
        try:
            fleet.up()
            play(fleet, extra_vars={'wsgiapp_domain': domain})
            server.update(machine=fleet.machine('server'), fleet=fleet,
                          pebble_root=fleet.base / 'secrets' / 'web-ca' / 'ca.pem')
        except Exception as error:
            server['error'] = error
    server = config.stash[SINGLE_SERVER]
    if 'error' in server:
        pytest.fail(f'the playbook\'s single server is not up: {server["error"]}')
    return server
