"""What the tests of booted hosts over SSH (test_fleet, test_playbook, the host crashes of
the fault suite) share."""
import os
import re
import shutil
import ssl
import subprocess
import sys
from contextlib import contextmanager

import pytest

from launcher.fleet import Fleet, missing
from launcher.machine import CACHE
from launcher.process import ROOT


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


ANSIBLE = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')  # the virtualenv's


def play(fleet, playbook='site.yml', source=None, extra_vars=None):
    """ansible-playbook -i INVENTORY deploy/PLAYBOOK (with the code of `source` instead of this
    checkout, and `extra_vars`): its output and its recap, {host: {ok, changed, failed, ...}}."""
    extra_vars = {**(extra_vars or {}), **({'wsgiapp_source': str(source)} if source else {})}
    extra = [option for name, value in extra_vars.items() for option in ('-e', f'{name}={value}')]
    done = subprocess.run([ANSIBLE, '-i', str(fleet.inventory), str(ROOT / 'deploy' / playbook), *extra],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, 'ANSIBLE_CONFIG': str(ROOT / 'deploy' / 'ansible.cfg'),
                               'ANSIBLE_NOCOLOR': '1'})
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    recap = done.stdout.split('PLAY RECAP')[1]
    return done.stdout, {line.split()[0]: {key: int(value) for key, value in re.findall(r'(\w+)=(\d+)', line)}
                         for line in recap.splitlines()[1:] if ':' in line}


@contextmanager
def provisioned_fleet(tmp_path_factory, apps=2, replicas=1):
    """A fleet (an edge, `apps` app hosts, a primary, `replicas` replicas) booted and provisioned
    by deploy/site.yml, whose first run's (output, recap) is `first_run`; removed afterwards."""
    needs_a_fleet()
    fleet = Fleet(tmp_path_factory.mktemp('hosts'), apps=apps, replicas=replicas)
    try:
        fleet.up()
        fleet.first_run = play(fleet)
        yield fleet
    finally:
        fleet.down()


def secret(fleet, name):
    return (fleet.base / 'secrets' / name).read_text().strip()


class Edge:
    """The fleet's edge as tests/helpers/load.py's Load reaches a stack: its URL and its CA."""

    def __init__(self, fleet):
        self.url = f'https://{fleet.address("edge1")}/'
        self.ca = str(fleet.base / 'secrets' / 'web-ca' / 'ca.pem')

    def ssl_context(self):
        return ssl.create_default_context(cafile=self.ca)


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
