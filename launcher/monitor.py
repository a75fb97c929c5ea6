"""`make monitor`: Prometheus beside `make run`'s stack, with an exporter per part, every one
on loopback: the app's metrics (uwsgi's mule), nginx (stub_status on a unix socket), MariaDB
(an account of its own with monitoring grants only), the host (node exporter) and the HTTPS
site probed from outside (blackbox exporter: its answer and its certificate's expiry).
Everything lives in VAR/monitor; `make stop` stops it too.

`make cluster-monitor`: the same Prometheus on the control machine, for the cluster: every
host's exporters, which the playbook's monitoring role runs on the host's private address
(deploy/roles/monitoring), listed from topology.json; the edge's site probed from here. It
lives in VAR/cluster/monitor; `make cluster-stop` stops it too.

Both load conf/prometheus/wsgiapp.rules.yml and its console (the dashboard) from
conf/prometheus/consoles, and send their alerts to an Alertmanager of their own
(conf/prometheus/alertmanager.yml)."""
import functools
import json
import os
import signal
import subprocess
import urllib.parse
import urllib.request

from launcher.process import ROOT, binary, free_port, pid_alive, say, secret_file, tails, terminate
from launcher.wait import wait_for

RULES = ROOT / 'conf' / 'prometheus' / 'wsgiapp.rules.yml'
PLAYBOOK_DEFAULTS = ROOT / 'deploy' / 'roles' / 'common' / 'defaults' / 'main.yml'
CONSOLES = ROOT / 'conf' / 'prometheus' / 'consoles'
ALERTMANAGER = ROOT / 'conf' / 'prometheus' / 'alertmanager.yml'
# The monitoring account: what mysqld_exporter's collectors read, and nothing of the data.
EXPORTER_USER = 'exporter'
EXPORTER_GRANTS = 'PROCESS, REPLICATION CLIENT, SLAVE MONITOR'
# The usual ports of each part, on 127.0.0.1; tests give free ones.
PORTS = {'prometheus': 9090, 'alertmanager': 9093, 'nginx': 9113, 'mysqld': 9104, 'node': 9100, 'blackbox': 9115}


@functools.cache
def playbook_defaults():
    """deploy/roles/common/defaults/main.yml: the exporters' ports and flags, set there once
    for the cluster's hosts and read here for the Prometheus that scrapes them (parsed once:
    targets() is asked on every poll while Prometheus starts)."""
    import yaml  # ansible's dependency: in the virtualenv with it
    return yaml.safe_load(PLAYBOOK_DEFAULTS.read_text())


def ports_for(parts, ports=None):
    """`ports` ({part: port}, as a monitor's ports.json has them), with a free port for each of
    `parts` it lacks: all of them for a new monitor, a part added since for a running one."""
    ports = dict(ports or {})
    for name in parts:
        ports.setdefault(name, free_port())
    return ports


class Monitor:
    parts = tuple(PORTS)  # what runs on this machine

    def __init__(self, stack, ports=None):
        self.stack = stack
        self.base = stack.base / 'monitor'
        self.ports = ports_for(self.parts, ports)
        self.url = f'http://127.0.0.1:{self.ports["prometheus"]}'
        self.site, self.ca = stack.url, stack.ca
        self.status_socket = stack.nginx.status_socket

    def pidfile(self, name):
        return self.base / f'{name}.pid'

    def log(self, name):
        return self.base / f'{name}.log'

    def command(self, name):
        """What part `name` runs: its binary and its flags."""
        listen = f'127.0.0.1:{self.ports[name]}'
        return {
            'nginx': lambda: ['prometheus-nginx-exporter', f'-web.listen-address={listen}',
                              f'-nginx.scrape-uri=unix:{self.status_socket}:/stub_status'],
            'mysqld': lambda: ['prometheus-mysqld-exporter', f'--web.listen-address={listen}',
                               f'--config.my-cnf={self.base / "exporter.cnf"}', '--collect.slave_status',
                               '--collect.info_schema.innodb_metrics'],
            'node': lambda: ['prometheus-node-exporter', f'--web.listen-address={listen}',
                             '--collector.disable-defaults',
                             *(f'--collector.{collector}'
                               for collector in playbook_defaults()['wsgiapp_node_exporter_collectors'])],
            'blackbox': lambda: ['prometheus-blackbox-exporter', f'--web.listen-address={listen}',
                                 f'--config.file={self.base / "blackbox.yml"}'],
            'prometheus': lambda: ['prometheus', f'--web.listen-address={listen}',
                                   f'--config.file={self.base / "prometheus.yml"}',
                                   f'--storage.tsdb.path={self.base / "data"}', '--storage.tsdb.retention.time=2d',
                                   f'--web.console.templates={CONSOLES}', f'--web.console.libraries={CONSOLES}'],
            # One Alertmanager, not a cluster of them: no gossip port.
            'alertmanager': lambda: ['prometheus-alertmanager', f'--web.listen-address={listen}',
                                     f'--config.file={ALERTMANAGER}', f'--storage.path={self.base / "alertmanager"}',
                                     '--cluster.listen-address='],
        }[name]()

    def targets(self):
        """(job, address, labels) of every exporter Prometheus scrapes, each labelled with its host."""
        local = {'host': 'localhost'}
        return [('wsgiapp', self.stack.metrics_url.split('/')[2], local),
                *[(name, f'127.0.0.1:{self.ports[name]}', local) for name in ('nginx', 'node')],
                ('mysqld', f'127.0.0.1:{self.ports["mysqld"]}', {**local, 'role': 'primary'})]

    def prometheus_config(self):
        """Every target, scraped each 5 s: alerts within seconds, not minutes; and Prometheus
        and Alertmanager themselves (whether alerts reach their receivers)."""
        jobs = {}
        control = [(job, f'127.0.0.1:{self.ports[job]}', {'host': 'control'}) for job in ('prometheus', 'alertmanager')]
        for job, target, labels in [*control, *self.targets()]:
            jobs.setdefault(job, []).append({'targets': [target], 'labels': labels})
        return {
            'global': {'scrape_interval': '5s', 'evaluation_interval': '5s', 'scrape_timeout': '4s'},
            'rule_files': [str(RULES)],
            'alerting': {'alertmanagers': [{'static_configs': [
                {'targets': [f'127.0.0.1:{self.ports["alertmanager"]}']}]}]},
            'scrape_configs': [
                *[{'job_name': job, 'static_configs': configs} for job, configs in jobs.items()],
                {'job_name': 'blackbox', 'metrics_path': '/probe', 'params': {'module': ['https_site']},
                 'static_configs': [{'targets': [self.site + '/healthz'], 'labels': {'host': 'control'}}],
                 'relabel_configs': [
                     {'source_labels': ['__address__'], 'target_label': '__param_target'},
                     {'source_labels': ['__param_target'], 'target_label': 'instance'},
                     {'target_label': '__address__', 'replacement': f'127.0.0.1:{self.ports["blackbox"]}'}]},
            ],
        }

    def blackbox_config(self):
        return {'modules': {'https_site': {'prober': 'http', 'timeout': '3s', 'http': {
            'valid_status_codes': [200], 'fail_if_not_ssl': True,
            'tls_config': {'ca_file': str(self.ca)}}}}}

    def exporter_account(self):
        """The MariaDB account of mysqld_exporter: monitoring grants, from localhost only, with
        a password of its own in a 0600 file (its my.cnf)."""
        password = secret_file(self.base / 'exporter-password')
        self.stack.mariadb.sql(
            f"CREATE USER IF NOT EXISTS '{EXPORTER_USER}'@'localhost' IDENTIFIED BY '{password}'",
            f"ALTER USER '{EXPORTER_USER}'@'localhost' IDENTIFIED BY '{password}' WITH MAX_USER_CONNECTIONS 3",
            f"GRANT {EXPORTER_GRANTS} ON *.* TO '{EXPORTER_USER}'@'localhost'")
        cnf = self.base / 'exporter.cnf'
        fd = os.open(cnf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as out:
            out.write(f'[client]\nuser={EXPORTER_USER}\npassword={password}\nsocket={self.stack.mariadb.socket}\n')

    def prepare(self):
        if not self.stack.uwsgi.pid():
            raise RuntimeError('the stack is not running: `make run` first')
        self.exporter_account()

    def up(self, seconds=60):
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o700)
        self.prepare()
        # JSON is YAML: the configs need no YAML library.
        (self.base / 'prometheus.yml').write_text(json.dumps(self.prometheus_config(), indent=1))
        (self.base / 'blackbox.yml').write_text(json.dumps(self.blackbox_config(), indent=1))
        (self.base / 'ports.json').write_text(json.dumps(self.ports))
        for name in self.parts:
            command = self.command(name)
            if pid_alive(self.pidfile(name)):
                continue
            with open(self.log(name), 'ab') as log:
                process = subprocess.Popen([binary(command[0]), *command[1:]], stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=log, start_new_session=True)
            self.pidfile(name).write_text(f'{process.pid}\n')
        say(f'waiting for Prometheus to see its {self.expected()} targets up')
        wait_for(lambda: self.down_targets() == [], seconds, 'every target up in Prometheus',
                 interval=0.5, detail=lambda: f'down: {self.down_targets()}\n' + tails(
                     *[self.log(name) for name in self.parts]))

    def query(self, path):
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.loads(response.read())['data']

    def value(self, expr):
        """The one value of PromQL `expr` now, or None when it has no series."""
        result = self.query('/api/v1/query?query=' + urllib.parse.quote(expr))['result']
        return float(result[0]['value'][1]) if result else None

    def down_targets(self):
        """The scrape jobs whose target is not up, or ['prometheus'] while it does not answer;
        and 'alertmanager' while it is not ready or Prometheus has not found it."""
        try:
            targets = self.query('/api/v1/targets?state=active')['activeTargets']
        except OSError:
            return ['prometheus']
        if len(targets) < self.expected():
            return ['(not all loaded yet)']
        down = [f"{target['labels']['job']} on {target['labels']['host']}" for target in targets
                if target['health'] != 'up']
        try:
            urllib.request.urlopen(f'{self.alertmanager_url}/-/ready', timeout=5).close()
        except OSError:
            down.append('alertmanager')
        try:
            discovered = self.query('/api/v1/alertmanagers')['activeAlertmanagers']
        except OSError:
            discovered = []
        if not discovered:
            down.append('(Prometheus has no Alertmanager yet)')
        return down

    def expected(self):
        return len(self.targets()) + 3  # and Prometheus, Alertmanager, and the site's probe

    def alerts(self):
        """(alert name, its labels) of every alert firing now, one per series."""
        return [(alert['labels']['alertname'], alert['labels']) for alert in self.query('/api/v1/alerts')['alerts']
                if alert['state'] == 'firing']

    def firing(self):
        """{alert name: its labels (one series' if it fires for several)} of the alerts firing now."""
        return dict(self.alerts())

    def running(self):
        """Whether this monitor's Alertmanager runs (a deploy has silences to set there)."""
        return bool(pid_alive(self.pidfile('alertmanager')))

    @property
    def alertmanager_url(self):
        return f'http://127.0.0.1:{self.ports["alertmanager"]}'

    def notified(self):
        """(alert name, its labels) of every alert Alertmanager holds, active and not silenced:
        what its receiver is sent."""
        url = f'{self.alertmanager_url}/api/v2/alerts?silenced=false&inhibited=false'
        with urllib.request.urlopen(url, timeout=5) as response:
            return [(alert['labels']['alertname'], alert['labels']) for alert in json.loads(response.read())
                    if alert['status']['state'] == 'active']

    def screenshot(self, path, width=1100, height=1500):
        """The dashboard as a PNG, taken by headless Chromium (docs/_static/dashboard.png)."""
        subprocess.run([binary('chromium'), '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                        f'--window-size={width},{height}', f'--screenshot={path}',
                        self.url + '/consoles/wsgiapp.html'],
                       check=True, capture_output=True, timeout=60)

    def down(self):
        for name in reversed(self.parts):
            pid = pid_alive(self.pidfile(name))
            if pid:
                terminate(name, pid, signal.SIGTERM, 20, signal.SIGKILL)
            self.pidfile(name).unlink(missing_ok=True)

    @classmethod
    def of(cls, stack):
        """The monitor of this stack: on the ports it was started with while any part of it
        runs; else on PORTS, or a free port where one is taken (Debian's own prometheus and
        node exporter services listen on 9090 and 9100 once their packages are installed)."""
        import socket
        try:
            started = cls(stack, json.loads((stack.base / 'monitor' / 'ports.json').read_text()))
            if any(pid_alive(started.pidfile(name)) for name in cls.parts):
                return started
        except (OSError, ValueError):
            pass
        ports = {}
        for name, port in [(name, PORTS[name]) for name in cls.parts]:
            with socket.socket() as probe:
                try:
                    probe.bind(('127.0.0.1', port))
                except OSError:
                    port = free_port()
            ports[name] = port
        return cls(stack, ports)


class ClusterMonitor(Monitor):
    """Prometheus, its Alertmanager and the blackbox exporter on the control machine; every
    other exporter runs on its host (deploy/roles/monitoring), on the ports of
    deploy/roles/common/defaults."""
    parts = ('blackbox', 'alertmanager', 'prometheus')

    def __init__(self, cluster, ports=None):
        self.stack = self.cluster = cluster
        self.base = cluster.base / 'monitor'
        self.ports = ports_for(self.parts, ports)
        self.url = f'http://127.0.0.1:{self.ports["prometheus"]}'
        self.site, self.ca = cluster.url, cluster.ca
        self.status_socket = None  # each host's nginx exporter reads its own

    def targets(self):
        """From topology.json: what each kind of host runs."""
        topology = json.loads(self.cluster.topology_file.read_text())
        kinds = [(topology['edge'], ('nginx', 'node'), {}),
                 *[(app, ('wsgiapp', 'nginx', 'node'), {}) for app in topology['app']],
                 (topology['db']['primary'], ('mysqld', 'node'), {'role': 'primary'}),
                 *[(replica, ('mysqld', 'node'), {'role': 'replica'}) for replica in topology['db']['replicas']]]
        defaults = playbook_defaults()
        ports = {job: defaults[f'wsgiapp_{name}_port'] for job, name in
                 [('wsgiapp', 'metrics'), ('nginx', 'nginx_exporter'), ('mysqld', 'mysqld_exporter'),
                  ('node', 'node_exporter')]}
        return [(job, f'{host["address"]}:{ports[job]}',
                 {'host': host['name'], **(labels if job == 'mysqld' else {})})
                for host, jobs, labels in kinds for job in jobs]

    def prepare(self):
        if not self.cluster.topology_file.exists():
            raise RuntimeError('the cluster is not running: `make cluster` first')
