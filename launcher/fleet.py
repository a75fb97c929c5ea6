"""python -m launcher.fleet up|down|status BASE [--apps N] [--replicas R] [--one-host]: a fleet of booted
Debian 12 servers on this machine, for Ansible (deploy/) to provision over SSH as it would
real ones. As root, with systemd-nspawn.

Each host is a launcher/machine.py Machine over the image's fleet layer (sshd, python3),
with a disk (overlay), hostname, machine-id and address of its own, all on one private
bridge (launcher/network.py): `edge1`, `app1`..`appN`, `db1` (the primary), `db2`.. (the
replicas). Every host's /etc/hosts names every host of the fleet. This machine, as root,
reaches each over SSH with a key of its own, and knows each host's key in advance:

    BASE/ssh/id_ed25519        the control key (root's authorized key on every host)
    BASE/ssh/host-keys/NAME    each host's ed25519 host key, made here, written into its
                               disk before each boot (sshd has no other)
    BASE/ssh/known_hosts       every host's name and address with its key: no trust on
                               first use, StrictHostKeyChecking=yes
    BASE/inventory.ini         the Ansible inventory (groups edge, app, db_primary,
                               db_replica, and db for both)
    BASE/group_vars/all.yml    the playbook's settings for hosts with no route off the
                               bridge (packages from the image, wheels from its wheelhouse)
    BASE/hosts.json            each host's name, container, address, ssh target and pids
    BASE/hosts/NAME/           each host's Machine: its disk (upper/), console log

SSH's shared connections (ControlMaster) live in /run/wsgiapp-ssh-IDENT/, a short path:
a unix socket's path has at most 108 bytes."""
import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import psutil

from launcher.machine import WHEELHOUSE, Machine, image
from launcher.network import Network
from launcher.process import ROOT, binary, say

NEEDS = 'needs root and systemd-nspawn (apt-get install systemd-container) to boot its hosts'


def missing():
    """What this machine lacks to run a fleet (NEEDS), or None."""
    if os.geteuid() != 0 or not shutil.which('systemd-nspawn'):
        return NEEDS
    return None


class Fleet:
    def __init__(self, base, apps=3, replicas=1, one_host=False):
        if not 1 <= apps <= 89 or not 0 <= replicas <= 99:  # launcher/network.py's addresses
            raise ValueError(f'a fleet has 1 to 89 app hosts and 0 to 99 replicas, not {apps} and {replicas}')
        self.base = Path(base).resolve()
        # one_host: a single host, `server`, in the edge, app and db_primary groups: the
        # playbook's single server (docs/playbook.rst).
        self.apps, self.replicas, self.one_host = apps, replicas, one_host
        # The bridge's and the containers' names (launcher/network.py), from the directory.
        self.ident = hashlib.sha256(f'fleet:{self.base}'.encode()).hexdigest()[:4]
        self.ssh_dir = self.base / 'ssh'
        self.key = self.ssh_dir / 'id_ed25519'
        self.known_hosts = self.ssh_dir / 'known_hosts'
        self.host_keys = self.ssh_dir / 'host-keys'
        self.control_dir = Path(f'/run/wsgiapp-ssh-{self.ident}')
        self.inventory = self.base / 'inventory.ini'
        self.group_vars = self.base / 'group_vars' / 'all.yml'
        self.hosts_json = self.base / 'hosts.json'

    @cached_property
    def network(self):
        return Network(self.ident)

    # --- names ----------------------------------------------------------------------------
    def groups(self):
        """The inventory's host groups, each a list of host names."""
        if self.one_host:
            return {'edge': ['server'], 'app': ['server'], 'db_primary': ['server'], 'db_replica': []}
        return {'edge': ['edge1'], 'app': [f'app{n}' for n in range(1, self.apps + 1)],
                'db_primary': ['db1'], 'db_replica': [f'db{n}' for n in range(2, self.replicas + 2)]}

    def names(self):
        """The hosts of this fleet's size, in boot order."""
        return list(dict.fromkeys(name for group in self.groups().values() for name in group))

    def present(self):
        """The hosts with a directory in BASE/hosts (running, crashed, or of another size), in
        the fleet's order: edge1, app1.., db1.."""
        directory = self.base / 'hosts'
        return sorted((path.name for path in directory.iterdir()), key=_order) if directory.is_dir() else []

    def machine(self, name):
        """Host `name`'s Machine: its disk gets root's authorized key and its host key before each boot."""
        key, files = self.host_keys / name, {}
        if key.exists():
            files = {'/root/.ssh/authorized_keys': (self.key.with_suffix('.pub').read_bytes(), 0o600),
                     '/etc/ssh/ssh_host_ed25519_key': (key.read_bytes(), 0o600),
                     '/etc/ssh/ssh_host_ed25519_key.pub': (key.with_suffix('.pub').read_bytes(), 0o644)}
        return Machine(self.base / 'hosts' / name, hostname=name, network=self.network, host=name, layers='fleet',
                       persistent=True, files=files,
                       hosts={other: self.network.address(other) for other in self.names()})

    def address(self, name):
        return self.network.address(name)

    # --- up -------------------------------------------------------------------------------
    def up(self):
        """Boot the hosts of this size that do not run (in parallel), remove the hosts beyond
        it, and write the inventory, known_hosts and hosts.json; then check that SSH reaches
        every host. Running hosts are left alone (their /etc/hosts updated if the fleet changed)."""
        if missing():
            raise RuntimeError(f'the fleet {missing()}')
        image('fleet')  # once, before the boots in parallel would each wait for its lock
        wanted = self.names()
        failures = self._parallel(self.remove, [name for name in self.present() if name not in wanted])
        if failures:
            raise RuntimeError('; '.join(f'removing {name}: {error}' for name, error in failures))
        self._keys(wanted)
        self.control_dir.mkdir(mode=0o700, exist_ok=True)
        self.network.create()
        machines = [self.machine(name) for name in wanted]
        for machine in machines:
            if machine.pid:
                machine.write_hosts()  # a running host gets the fleet's names, without a reboot
        to_boot = [machine for machine in machines if not machine.pid]
        try:
            if to_boot:
                say(f'booting {", ".join(machine.host for machine in to_boot)} on {self.network.bridge} '
                    f'({self.network.subnet})')
                failures = self._parallel(lambda machine: machine.start(), to_boot)
                if failures:
                    raise RuntimeError('; '.join(f'{machine.host}: {error}' for machine, error in failures))
        finally:
            self._write_files()
        failures = self._parallel(self._reachable, wanted)
        if failures:
            raise RuntimeError('; '.join(f'{name}: {error}' for name, error in failures))
        say(f'the fleet is up: {len(wanted)} hosts; ansible-playbook -i {self.inventory} '
            f'{ROOT / "deploy" / "site.yml"}')
        return self

    def _reachable(self, name):
        done = self.ssh(name, 'true', timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f'ssh root@{self.address(name)} fails: {done.stderr.strip()}')

    @staticmethod
    def _parallel(function, items):
        """function(item) for every item at once; [(item, exception)] for those that raised."""
        with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
            futures = [(item, pool.submit(function, item)) for item in items]
        return [(item, future.exception()) for item, future in futures if future.exception()]

    def _keys(self, names):
        """The control key, once, and a host key for each host that has none."""
        self.ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.host_keys.mkdir(mode=0o700, exist_ok=True)
        if not self.key.exists():
            _keygen(self.key, f'wsgiapp-fleet-control@{os.uname().nodename}')
        for name in names:
            if not (self.host_keys / name).exists():
                _keygen(self.host_keys / name, f'root@{name}')

    def _write_files(self):
        """known_hosts (every host with a key), the inventory and hosts.json."""
        known = []
        for name in sorted(set(self.present()) | set(self.names()), key=_order):
            public = self.host_keys / f'{name}.pub'
            if public.exists():
                key_type, key = public.read_text().split()[:2]
                known.append(f'{name},{self.address(name)} {key_type} {key}\n')
        self.known_hosts.write_text(''.join(known))
        self.inventory.write_text(self.inventory_text())
        self.group_vars.parent.mkdir(exist_ok=True)
        self.group_vars.write_text(self.group_vars_text())
        self.hosts_json.write_text(json.dumps(self.describe(), indent=2) + '\n')

    def ssh_options(self):
        """ssh's options, the inventory's ansible_ssh_common_args: this fleet's known_hosts
        only, checked strictly; one shared connection per host (ControlPersist, as Ansible's
        default); a dead host noticed within 30 s rather than a hung connection."""
        return ['-o', f'UserKnownHostsFile={self.known_hosts}', '-o', 'StrictHostKeyChecking=yes',
                '-o', 'IdentitiesOnly=yes', '-o', 'ControlMaster=auto', '-o', 'ControlPersist=60s',
                '-o', f'ControlPath={self.control_dir}/%r@%h:%p', '-o', 'ServerAliveInterval=10']

    def inventory_text(self):
        lines = [f'# The fleet in {self.base} (python -m launcher.fleet up): ansible-playbook -i {self.inventory}\n']
        for group, names in self.groups().items():
            lines.append(f'\n[{group}]\n')
            lines += [f'{name} ansible_host={self.address(name)}\n' for name in names]
        lines.append('\n[db:children]\ndb_primary\ndb_replica\n')
        lines.append('\n[all:vars]\nansible_user=root\n'
                     f'ansible_ssh_private_key_file={self.key}\n'
                     f"ansible_ssh_common_args='{' '.join(self.ssh_options())}'\n"
                     'ansible_python_interpreter=/usr/bin/python3\n')
        return ''.join(lines)

    def group_vars_text(self):
        """The inventory's group_vars/all.yml: what these hosts differ in from a user's."""
        return (f'# The fleet in {self.base}: its hosts reach nothing off their bridge.\n'
                '# Debian\'s packages are in their image already (no apt-get update);\n'
                'wsgiapp_apt_update: false\n'
                '# the app\'s wheels are in its wheelhouse (launcher/machine.py WHEELHOUSE);\n'
                f'wsgiapp_pip_env: {{PIP_NO_INDEX: "1", PIP_FIND_LINKS: "{WHEELHOUSE}"}}\n'
                '# this machine asks the edge\'s /readyz, as a load balancer would.\n'
                f'wsgiapp_probers: ["{self.address("bridge")}"]\n'
                '# a new database gets the sample rows, as make run\'s does.\n'
                'wsgiapp_sample_data: true\n')

    def describe(self):
        hosts = []
        for name in self.present():
            machine = self.machine(name)
            hosts.append({'name': name, 'machine': machine.name, 'address': machine.address,
                          'ssh': f'root@{machine.address}', 'pid': machine.pid, 'leader': machine.leader()})
        return {**self.network.describe(), 'inventory': str(self.inventory), 'hosts': hosts}

    # --- one host -------------------------------------------------------------------------
    def ssh(self, name, command, check=False, timeout=60, options=(), **kwargs):
        """`command` (a string for the remote shell, or a list, quoted) run on host `name` over
        SSH, as Ansible reaches it: its key, its known_hosts, strictly. A CompletedProcess."""
        if not isinstance(command, str):
            command = shlex.join(str(part) for part in command)
        # The caller's `options` first: ssh keeps the first value it is given for an option.
        return subprocess.run([binary('ssh'), *options, *self.ssh_options(), '-o', 'BatchMode=yes',
                               '-o', 'ConnectTimeout=10', '-i', str(self.key), f'root@{self.address(name)}', command],
                              capture_output=True, text=True, check=check, timeout=timeout, **kwargs)

    def crash(self, name):
        """A power loss of host `name` (Machine.crash: its init SIGKILLed, its disk kept)."""
        self.machine(name).crash()
        self._close_connection(name)  # the dead host's connection: a new ssh would wait on it
        self._write_files()

    def boot(self, name):
        """Boot host `name` again, from its own disk (its keys, its data)."""
        self.machine(name).start()
        self._write_files()

    def remove(self, name):
        """Power host `name` off and remove it: its machine, its host key."""
        self._close_connection(name)
        self.machine(name).stop()
        for path in (self.host_keys / name, self.host_keys / f'{name}.pub'):
            path.unlink(missing_ok=True)

    def _close_connection(self, name):
        if self.control_dir.is_dir():
            subprocess.run([binary('ssh'), *self.ssh_options(), '-O', 'exit', f'root@{self.address(name)}'],
                           capture_output=True, timeout=10)

    # --- the whole fleet ------------------------------------------------------------------
    def status(self):
        """{name: the nspawn pid, or None} for every host present."""
        return {name: self.machine(name).pid for name in self.present()}

    def down(self):
        """Power every host off and remove everything of the fleet: the hosts, the bridge, the
        keys, the shared connections, the inventory (other files in BASE stay: deploy's secrets)."""
        failures = self._parallel(self.remove, self.present())
        for process in _ssh_masters(self.control_dir):
            process.kill()
        self.network.remove()
        shutil.rmtree(self.control_dir, ignore_errors=True)
        shutil.rmtree(self.ssh_dir, ignore_errors=True)
        for path in (self.inventory, self.hosts_json, self.group_vars):
            path.unlink(missing_ok=True)
        if self.group_vars.parent.is_dir():
            self.group_vars.parent.rmdir()
        with_hosts = self.base / 'hosts'
        if with_hosts.is_dir():
            with_hosts.rmdir()
        if self.base.is_dir() and not any(self.base.iterdir()):
            self.base.rmdir()
        if failures:
            raise RuntimeError('; '.join(f'removing {name}: {error}' for name, error in failures))

    def leftovers(self):
        """What of the fleet is still on this machine: none after down()."""
        found = [item for name in self.present() for item in self.machine(name).leftovers()]
        found += self.network.leftovers()
        found += [f'pid {process.pid} (systemd-nspawn)' for process in _nspawns(self.base / 'hosts')]
        found += [f'pid {process.pid} (ssh master)' for process in _ssh_masters(self.control_dir)]
        found += [str(path) for path in (self.ssh_dir, self.control_dir, self.inventory, self.hosts_json,
                                         self.group_vars.parent, self.base / 'hosts') if path.exists()]
        return found


def _order(name):
    kind = name.rstrip('0123456789')
    return (['edge', 'app', 'db'].index(kind) if kind in ('edge', 'app', 'db') else 3, len(name), name)


def _keygen(path, comment):
    subprocess.run([binary('ssh-keygen'), '-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', str(path)],
                   check=True, capture_output=True)


def _processes(predicate):
    found = []
    for process in psutil.process_iter(['cmdline']):
        if predicate(process.info['cmdline'] or []):
            found.append(process)
    return found


def _nspawns(directory):
    return _processes(lambda cmdline: bool(cmdline) and 'systemd-nspawn' in cmdline[0]
                      and any(part.startswith(f'{directory}/') for part in cmdline))


def _ssh_masters(control_dir):
    """ssh's ControlPersist masters of the fleet: `ssh: /run/wsgiapp-ssh-IDENT/... [mux]`."""
    return _processes(lambda cmdline: bool(cmdline) and cmdline[0].startswith(f'ssh: {control_dir}/'))


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m launcher.fleet', description=__doc__.split('\n\n')[0])
    parser.add_argument('action', choices=['up', 'down', 'status'])
    parser.add_argument('base', type=Path, help='the fleet\'s directory (its keys, inventory, hosts\' disks)')
    parser.add_argument('--apps', type=int, default=3)
    parser.add_argument('--replicas', type=int, default=1)
    parser.add_argument('--one-host', action='store_true',
                        help='one host, `server`, in every group: the single server, by the playbook')
    args = parser.parse_args(argv)
    try:
        fleet = Fleet(args.base, args.apps, args.replicas, one_host=args.one_host)
    except ValueError as error:
        parser.error(str(error))
    if args.action == 'up':
        if missing():
            print(f'the fleet {missing()}', file=sys.stderr)
            return 1
        try:
            fleet.up()
        except RuntimeError as error:
            print(f'the fleet is not up: {error}', file=sys.stderr)
            return 1
        print(fleet.inventory)
        return 0
    if args.action == 'down':
        fleet.down()
        left = fleet.leftovers()
        if left:
            print(f'left behind: {left}', file=sys.stderr)
            return 1
        return 0
    status = fleet.status()
    for name, pid in status.items():
        print(f'{name:6} {fleet.address(name):15} ' + (f'running (systemd-nspawn pid {pid})' if pid else 'not running'))
    if not status:
        print(f'no fleet in {fleet.base}')
    return 0 if status and all(status.values()) else 3


if __name__ == '__main__':
    sys.exit(main())
