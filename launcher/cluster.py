"""make cluster: an edge, app hosts, a database primary and its replicas, each a booted
Debian 12 server of launcher/fleet.py, provisioned over SSH by deploy/site.yml, the playbook
a user runs with an inventory of their own servers (docs/playbook.rst). `make cluster`,
`make cluster-deploy` (deploy/rolling.yml), `make cluster-status`, `make cluster-stop`.

BASE (var/cluster) holds the fleet (its keys, inventory, the hosts' disks), the control
machine's secrets/ (the CAs, the generated passwords, the API token) and topology.json: what
runs where, and how to reach each host (`machine`: its container, `ssh`: user@address).

The Host classes below are how the tests and the benchmark look at a running host: its
processes as this machine sees them (their pids, to SIGKILL or to count CPU), its logs (its
disk is mounted here), commands and its database over the same SSH as Ansible's."""
import json
import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import psutil

from launcher.fleet import Fleet, missing
from launcher.mariadb import run_sql
from launcher.process import ROOT, binary, say
from launcher.wait import wait_for

ANSIBLE_PLAYBOOK = Path(sys.executable).with_name('ansible-playbook')  # the virtualenv's
MARIADB_SOCKET = '/run/mysqld/mysqld.sock'  # Debian's


def playbook(inventory, name='site.yml', source=None, extra_vars=None, capture=True):
    """ansible-playbook -i INVENTORY deploy/NAME (with the code of checkout `source`, and
    `extra_vars`), as a user runs it: a CompletedProcess (its output captured, or shown)."""
    extra_vars = {**(extra_vars or {}), **({'wsgiapp_source': str(source)} if source else {})}
    extra = [option for key, value in extra_vars.items() for option in ('-e', f'{key}={value}')]
    return subprocess.run([str(ANSIBLE_PLAYBOOK), '-i', str(inventory), str(ROOT / 'deploy' / name), *extra],
                          capture_output=capture, text=True, timeout=1800,
                          env={**os.environ, 'ANSIBLE_CONFIG': str(ROOT / 'deploy' / 'ansible.cfg'),
                               **({'ANSIBLE_NOCOLOR': '1'} if capture else {})})


def recap(output):
    """{host: {'ok': n, 'changed': n, 'failed': n, ...}} from ansible-playbook's PLAY RECAP."""
    lines = output.split('PLAY RECAP')[-1].splitlines()[1:]
    return {line.split()[0]: {key: int(value) for key, value in re.findall(r'(\w+)=(\d+)', line)}
            for line in lines if ':' in line}


class Host:
    """One booted host of the cluster."""
    program = None  # the server it runs, whose main process pid() is

    def __init__(self, cluster, name):
        self.cluster, self.name = cluster, name
        self.fleet = cluster.fleet
        self.address = self.fleet.address(name)

    def machine(self):
        return self.fleet.machine(self.name)

    def path(self, path):
        """A file of the running host, as this machine reads it (its disk, mounted here)."""
        return self.machine().root / path.lstrip('/')

    def run(self, command, check=True, timeout=60):
        """`command` on the host over SSH; its output (it must succeed unless check=False)."""
        done = self.fleet.ssh(self.name, command, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f'{self.name}: {command}: {done.stderr.strip()}')
        return done.stdout.strip()

    def processes(self, name):
        """The host's processes called `name`, as psutil.Process of this machine."""
        leader = self.machine().leader()
        if not leader:
            return []
        found = []
        for process in psutil.Process(leader).children(recursive=True):
            try:
                if process.name() == name:
                    found.append(process)
            except psutil.NoSuchProcess:
                pass
        return found

    def pid(self, name=None):
        """The pid (on this machine) of the main process of `name` (the host's server by
        default): the one whose parent is not another `name`; None when none runs."""
        processes = self.processes(name or self.program)
        pids = {process.pid for process in processes}
        for process in processes:
            try:
                if process.ppid() not in pids:
                    return process.pid
            except psutil.NoSuchProcess:
                pass
        return None

    def crash(self):
        self.fleet.crash(self.name)

    def boot(self):
        self.fleet.boot(self.name)

    def describe(self):
        machine = self.machine()
        return {'name': self.name, 'machine': machine.name, 'ssh': f'root@{self.address}', 'address': self.address,
                'netns': self.fleet.network.netns(self.name)}


class Program:
    """One server of a host (app.uwsgi, app.nginx): its main pid on this machine."""

    def __init__(self, host, name):
        self.host, self.name = host, name

    def pid(self):
        return self.host.pid(self.name)


class EdgeHost(Host):
    program = 'nginx'

    def __init__(self, cluster, name):
        super().__init__(cluster, name)
        self.access_log = self.path('/var/log/nginx/wsgiapp.access.log')
        self.error_log = self.path('/var/log/nginx/wsgiapp.error.log')


class AppHost(Host):
    program = 'uwsgi'

    def __init__(self, cluster, name):
        super().__init__(cluster, name)
        self.port = 3031  # wsgiapp_link_port (deploy/roles/common/defaults/main.yml)
        self.uwsgi, self.nginx = Program(self, 'uwsgi'), Program(self, 'nginx')
        self.access_log = self.path('/var/log/nginx/wsgiapp-app.access.log')  # the link's requests

    def version(self):
        """The release in service: what /srv/wsgiapp links to (the hash of X-App-Version)."""
        return self.run(['readlink', '/srv/wsgiapp'], check=False).rsplit('/', 1)[-1] or None

    def describe(self):
        return {**super().describe(), 'port': self.port, 'version': self.version()}


class DatabaseHost(Host):
    """A MariaDB host. Its administrator (root, by Debian's unix_socket authentication) is
    reached from this machine through an SSH tunnel to the server's unix socket, so that
    run_sql and tests get typed rows, as from a local server."""
    program = 'mariadbd'

    def __init__(self, cluster, name):
        super().__init__(cluster, name)
        self.port = 3306
        self.socket = self.fleet.control_dir / f'{name}.mysql.sock'
        self.tunnel = None

    def admin_kwargs(self):
        self._open_tunnel()
        return {'unix_socket': str(self.socket), 'user': 'root', 'charset': 'utf8mb4', 'autocommit': True}

    def sql(self, *statements, database=None):
        """Run statements as the administrator; the last one's rows."""
        return run_sql(dict(self.admin_kwargs(), **({'database': database} if database else {})), *statements)

    def _open_tunnel(self):
        if self.tunnel and self.tunnel.poll() is None and self.socket.is_socket():
            return
        self.close_tunnel()
        self.tunnel = subprocess.Popen(
            [binary('ssh'), '-N', '-o', 'ExitOnForwardFailure=yes', '-o', 'ControlMaster=no', '-o', 'ControlPath=none',
             '-o', 'StreamLocalBindUnlink=yes', '-L', f'{self.socket}:{MARIADB_SOCKET}',
             *self.fleet.ssh_options(), '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10',
             '-i', str(self.fleet.key), f'root@{self.address}'],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: self.socket.is_socket() or self.tunnel.poll() is not None, 15, f'the tunnel to {self.name}')
        if self.tunnel.poll() is not None:
            raise RuntimeError(f'no tunnel to {self.name}\'s MariaDB: {self.tunnel.stderr.read().decode().strip()}')

    def crash(self):
        self.close_tunnel()
        super().crash()

    def close_tunnel(self):
        if self.tunnel and self.tunnel.poll() is None:
            self.tunnel.terminate()
            self.tunnel.wait(10)
        self.tunnel = None
        self.socket.unlink(missing_ok=True)

    def describe(self):
        return {**super().describe(), 'port': self.port}


class Cluster:
    def __init__(self, base, apps=3, replicas=1):
        self.base = Path(base).resolve()
        self.fleet = Fleet(self.base, apps=apps, replicas=replicas)
        self.network = self.fleet.network
        groups = self.fleet.groups()
        self.edge = EdgeHost(self, groups['edge'][0])
        self.apps = [AppHost(self, name) for name in groups['app']]
        self.db = DatabaseHost(self, groups['db_primary'][0])
        self.replicas = [DatabaseHost(self, name) for name in groups['db_replica']]
        self.edge_address = self.edge.address
        self.url = f'https://{self.edge_address}'
        self.secrets = self.base / 'secrets'
        self.ca = self.secrets / 'web-ca' / 'ca.pem'
        self.topology_file = self.base / 'topology.json'
        self.last_run = None  # the last playbook run's CompletedProcess

    def hosts(self):
        return [self.edge, *self.apps, self.db, *self.replicas]

    def token(self):
        return (self.secrets / 'api-token').read_text().strip()

    def ssl_context(self):
        """A client context that trusts the control machine's web CA (the edge's certificate), and only it."""
        return ssl.create_default_context(cafile=str(self.ca))

    # --- up, deploy, down ---------------------------------------------------------------------
    def up(self, capture=True):
        """Boot the hosts that do not run (and remove those beyond this size), then provision
        every host with deploy/site.yml; a second run changes nothing."""
        if missing():
            raise RuntimeError(f'the cluster {missing()}')
        self.fleet.up()
        self.provision('site.yml', capture=capture)
        self.save()
        return self

    def provision(self, name='site.yml', source=None, extra_vars=None, capture=True):
        """Run a playbook over the hosts; RuntimeError with its output's end if it fails."""
        self.last_run = playbook(self.fleet.inventory, name, source, extra_vars, capture)
        if self.last_run.returncode != 0:
            output = (self.last_run.stdout or '')[-6000:] + (self.last_run.stderr or '')[-2000:]
            raise RuntimeError(f'ansible-playbook deploy/{name} failed (exit {self.last_run.returncode})'
                               + (f':\n{output}' if capture else ''))
        return recap(self.last_run.stdout) if capture else None

    def deploy(self, source=None, capture=True):
        """The code of checkout `source` (this one by default) onto every app host, one at a
        time (deploy/rolling.yml)."""
        from launcher.monitor import ClusterMonitor
        monitor = ClusterMonitor.of(self)
        # make cluster-monitor's Alertmanager, while it runs: each host's alerts silenced in its turn.
        extra = {'wsgiapp_alertmanager_url': monitor.alertmanager_url} if monitor.running() else {}
        recap_ = self.provision('rolling.yml', source=source, extra_vars=extra, capture=capture)
        self.save()
        return recap_

    def down(self):
        from launcher.monitor import ClusterMonitor
        ClusterMonitor.of(self).down()  # make cluster-monitor's, on this machine
        for host in [self.db, *self.replicas]:
            host.close_tunnel()
        self.fleet.down()
        self.topology_file.unlink(missing_ok=True)

    def leftovers(self):
        return self.fleet.leftovers() + ([str(self.topology_file)] if self.topology_file.exists() else [])

    # --- what runs where ------------------------------------------------------------------------
    def save(self):
        topology = {'edge': {**self.edge.describe(), 'url': self.url + '/', 'ca': str(self.ca)},
                    'app': [app.describe() for app in self.apps],
                    'db': {'primary': self.db.describe(), 'replicas': [host.describe() for host in self.replicas]},
                    'network': self.network.describe(),
                    'inventory': str(self.fleet.inventory),
                    'ssh': {'key': str(self.fleet.key), 'known_hosts': str(self.fleet.known_hosts)},
                    'api_token_file': str(self.secrets / 'api-token')}
        self.topology_file.write_text(json.dumps(topology, indent=2) + '\n')

    def status(self):
        """Each host's servers, as its systemd says; True when all are active."""
        up = True
        units = {'edge': ['nginx'], 'app': ['nginx', 'wsgiapp'], 'db': ['mariadb']}
        running = self.fleet.status()
        for host in self.hosts():
            kind = host.name.rstrip('0123456789')
            if not running.get(host.name):
                states = 'not running'
                up = False
            else:
                done = self.fleet.ssh(host.name, ['systemctl', 'is-active', *units[kind]], timeout=20)
                states = ', '.join(f'{unit} {state}' for unit, state in zip(units[kind], done.stdout.split()))
                up = up and done.returncode == 0 and 'inactive' not in done.stdout and 'failed' not in done.stdout
            print(f'{host.name:6} {host.address:15} {states}')
        if up:
            print(f'serving {self.url}/ (certificate authority: {self.ca})')
        return up


def kill_program(host, name):
    """SIGKILL a program's main process and its process group (uwsgi's master and workers;
    mariadbd), from this machine: what a crash does. Its unit's Restart= brings it back."""
    pid = host.pid(name)
    if pid is None:
        raise RuntimeError(f'no {name} runs on {host.name}')
    os.killpg(pid, signal.SIGKILL)
    say(f'{host.name}: {name} {pid} SIGKILLed')
    return pid
