"""The fleet (launcher/fleet.py): booted Debian 12 hosts on one bridge, which this machine
reaches over real SSH, as Ansible will, with host keys known in advance. One small fleet
(edge1, app1, db1) for the module; the last test takes it down and looks for what is left."""
import shlex
import subprocess
from pathlib import Path

import pytest

from launcher.fleet import Fleet
from launcher.process import ROOT
from tests.helpers.fleet import needs_a_fleet, on

pytestmark = [pytest.mark.server]
NAMES = ['edge1', 'app1', 'db1']


@pytest.fixture(scope='module')
def fleet(tmp_path_factory):
    needs_a_fleet()
    fleet = Fleet(tmp_path_factory.mktemp('fleet'), apps=1, replicas=0)
    try:
        yield fleet.up()
    finally:
        fleet.down()



def test_the_inventory_names_every_host_in_its_groups(fleet):
    text = fleet.inventory.read_text()
    address = {name: fleet.address(name) for name in NAMES}
    for group, name in (('edge', 'edge1'), ('app', 'app1'), ('db_primary', 'db1')):
        assert f'[{group}]\n{name} ansible_host={address[name]}\n' in text
    assert '[db_replica]\n\n' in text and '[db:children]\ndb_primary\ndb_replica\n' in text
    assert f'ansible_ssh_private_key_file={fleet.key}\n' in text


def test_ssh_with_the_inventory_s_arguments_and_strict_host_key_checking_reaches_each_host(fleet):
    text = fleet.inventory.read_text()
    arguments = shlex.split(text.split("ansible_ssh_common_args='")[1].split("'")[0])
    assert 'StrictHostKeyChecking=yes' in arguments
    for name in NAMES:
        # No shared connection: a fresh one, whose host key is checked.
        done = subprocess.run(['ssh', '-o', 'ControlPath=none', *arguments, '-o', 'BatchMode=yes', '-i', str(fleet.key),
                               f'root@{fleet.address(name)}', 'hostname'], capture_output=True, text=True, timeout=30)
        assert (done.returncode, done.stdout.strip()) == (0, name), done.stderr


def test_a_host_with_another_key_is_refused(fleet):
    """known_hosts is what makes the check strict: edge's key under app1's address fails."""
    known = fleet.known_hosts.read_text().splitlines()
    edge_key = next(line for line in known if line.startswith('edge1,')).split(' ', 1)[1]
    forged = fleet.known_hosts.with_name('forged_known_hosts')
    forged.write_text(f'{fleet.address("app1")} {edge_key}\n')
    done = fleet.ssh('app1', 'true', options=['-o', 'ControlPath=none', '-o', f'UserKnownHostsFile={forged}'])
    assert done.returncode == 255 and 'HOST IDENTIFICATION HAS CHANGED' in done.stderr, done.stderr


def test_ansible_reaches_every_host(fleet):
    ansible = ROOT / '.venv' / 'bin' / 'ansible'
    if not ansible.exists():
        pytest.skip('ansible is not in .venv')
    done = subprocess.run([ansible, '-i', fleet.inventory, 'all', '-m', 'ping', '-o'], capture_output=True,
                          text=True, timeout=120, cwd=fleet.base)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(f'{name} | SUCCESS' in done.stdout for name in NAMES), done.stdout


def test_each_host_has_its_own_host_key_machine_id_and_hostname(fleet):
    seen = {name: (on(fleet, name, 'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub'),
                   on(fleet, name, 'cat /etc/machine-id'), on(fleet, name, 'hostname')) for name in NAMES}
    for column in range(3):
        assert len({values[column] for values in seen.values()}) == len(NAMES), seen
    assert [seen[name][2] for name in NAMES] == NAMES
    for name in NAMES:  # the one host key sshd has, the one made for it here, private
        assert on(fleet, name, 'ls /etc/ssh/ | grep ^ssh_host_') == 'ssh_host_ed25519_key\nssh_host_ed25519_key.pub'
        assert on(fleet, name, 'stat -c %a /etc/ssh/ssh_host_ed25519_key') == '600'


def test_no_two_hosts_share_a_cgroup(fleet):
    """Each host's systemd manages a cgroup tree of its own: in a shared one, a host that stops
    removes the others' units' cgroups (they fail: "Failed to attach to cgroup")."""
    cgroups = {name: Path(f'/proc/{fleet.machine(name).leader()}/cgroup').read_text() for name in NAMES}
    assert len(set(cgroups.values())) == len(NAMES), cgroups


def test_an_app_host_reaches_the_database_host_by_name(fleet):
    assert on(fleet, 'app1', 'getent hosts db1').split() == [fleet.address('db1'), 'db1']
    banner = on(fleet, 'app1', 'exec 3<>/dev/tcp/db1/22 && head -c 7 <&3')
    assert banner == 'SSH-2.0'


def test_password_authentication_is_not_offered(fleet):
    """The server lists the methods it accepts when it refuses: publickey only (BatchMode
    alone would fail any password login on the client's side, offered or not)."""
    done = fleet.ssh('db1', 'true', options=['-o', 'ControlPath=none', '-o', 'PreferredAuthentications=password'])
    assert done.returncode == 255 and 'Permission denied (publickey).' in done.stderr, done.stderr
    settings = on(fleet, 'db1', 'sshd -T | grep -E "^(passwordauthentication|permitrootlogin|hostkey) "')
    assert sorted(settings.splitlines()) == ['hostkey /etc/ssh/ssh_host_ed25519_key', 'passwordauthentication no',
                                             'permitrootlogin without-password']


def test_a_second_up_leaves_running_hosts_alone_and_a_bigger_fleet_adds_hosts(fleet):
    pids = fleet.status()
    assert fleet.up().status() == pids
    bigger = Fleet(fleet.base, apps=2, replicas=0).up()
    try:
        assert {name: pid for name, pid in bigger.status().items() if name != 'app2'} == pids
        assert bigger.status()['app2']
        assert f'app2 ansible_host={bigger.address("app2")}' in bigger.inventory.read_text()
        assert on(bigger, 'app1', 'getent hosts app2').split() == [bigger.address('app2'), 'app2']
    finally:
        fleet.up()  # back to edge1, app1, db1
    assert sorted(fleet.status()) == sorted(NAMES) and fleet.status() == pids
    assert 'app2' not in fleet.inventory.read_text() and 'app2' not in fleet.known_hosts.read_text()
    assert fleet.network.leftovers('app2') == []


def test_a_crashed_host_boots_again_from_its_own_disk(fleet):
    on(fleet, 'app1', 'echo before the crash > /root/written && sync')
    machine_id = on(fleet, 'app1', 'cat /etc/machine-id')
    others = {name: pid for name, pid in fleet.status().items() if name != 'app1'}
    fleet.crash('app1')
    assert fleet.machine('app1').pid is None
    assert _nspawns_of(fleet, 'app1') == []
    assert {name: pid for name, pid in fleet.status().items() if name != 'app1'} == others
    assert all(on(fleet, name, 'hostname') == name for name in others)
    assert fleet.ssh('app1', 'true', options=['-o', 'ConnectTimeout=3']).returncode == 255
    fleet.boot('app1')
    # The same host key (StrictHostKeyChecking accepts it), the same disk.
    assert on(fleet, 'app1', 'cat /root/written') == 'before the crash'
    assert on(fleet, 'app1', 'cat /etc/machine-id') == machine_id


def _nspawns_of(fleet, name=''):
    """The command lines of the systemd-nspawn processes of the fleet's hosts (of host `name`)."""
    done = subprocess.run(['pgrep', '-a', 'systemd-nspawn'], capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if f'{fleet.base}/hosts/{name}' in line]


def test_down_leaves_nothing(fleet):
    fleet.down()
    assert fleet.leftovers() == []
    assert _nspawns_of(fleet) == []
    assert subprocess.run(['pgrep', '-f', f'ssh: {fleet.control_dir}'], capture_output=True).returncode == 1
