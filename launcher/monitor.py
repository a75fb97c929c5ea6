"""`make monitor`: Prometheus beside `make run`'s stack, with an exporter per part, every one
on loopback: the app's metrics (uwsgi's mule), nginx (stub_status on a unix socket), MariaDB
(an account of its own with monitoring grants only), the host (node exporter) and the HTTPS
site probed from outside (blackbox exporter: its answer and its certificate's expiry).
Prometheus loads conf/prometheus/wsgiapp.rules.yml and its console (the dashboard) from
conf/prometheus/consoles. Everything lives in VAR/monitor; `make stop` stops it too."""
import json
import os
import signal
import subprocess
import urllib.request

from launcher.process import ROOT, binary, free_port, pid_alive, say, secret_file, tails, terminate
from launcher.wait import wait_for

RULES = ROOT / 'conf' / 'prometheus' / 'wsgiapp.rules.yml'
CONSOLES = ROOT / 'conf' / 'prometheus' / 'consoles'
# The monitoring account: what mysqld_exporter's collectors read, and nothing of the data.
EXPORTER_USER = 'exporter'
EXPORTER_GRANTS = 'PROCESS, REPLICATION CLIENT, SLAVE MONITOR'
# The usual ports of each part, on 127.0.0.1; tests give free ones.
PORTS = {'prometheus': 9090, 'nginx': 9113, 'mysqld': 9104, 'node': 9100, 'blackbox': 9115}


class Monitor:
    def __init__(self, stack, ports=None):
        self.stack = stack
        self.base = stack.base / 'monitor'
        self.ports = dict(ports or {name: free_port() for name in PORTS})
        self.url = f'http://127.0.0.1:{self.ports["prometheus"]}'

    def pidfile(self, name):
        return self.base / f'{name}.pid'

    def log(self, name):
        return self.base / f'{name}.log'

    def commands(self):
        """What each part runs: its binary and its flags."""
        listen = {name: f'127.0.0.1:{port}' for name, port in self.ports.items()}
        return {
            'nginx': ['prometheus-nginx-exporter', f'-web.listen-address={listen["nginx"]}',
                      f'-nginx.scrape-uri=unix:{self.stack.nginx.status_socket}:/stub_status'],
            'mysqld': ['prometheus-mysqld-exporter', f'--web.listen-address={listen["mysqld"]}',
                       f'--config.my-cnf={self.base / "exporter.cnf"}', '--collect.slave_status',
                       '--collect.info_schema.innodb_metrics'],
            'node': ['prometheus-node-exporter', f'--web.listen-address={listen["node"]}',
                     '--collector.disable-defaults', '--collector.cpu', '--collector.meminfo',
                     '--collector.filesystem', '--collector.loadavg', '--collector.netdev', '--collector.time'],
            'blackbox': ['prometheus-blackbox-exporter', f'--web.listen-address={listen["blackbox"]}',
                         f'--config.file={self.base / "blackbox.yml"}'],
            'prometheus': ['prometheus', f'--web.listen-address={listen["prometheus"]}',
                           f'--config.file={self.base / "prometheus.yml"}',
                           f'--storage.tsdb.path={self.base / "data"}', '--storage.tsdb.retention.time=2d',
                           f'--web.console.templates={CONSOLES}',
                           f'--web.console.libraries={CONSOLES}'],
        }

    def prometheus_config(self):
        """Every target of this host, scraped each 5 s: alerts within seconds, not minutes."""
        def job(name, target, **more):
            return {'job_name': name, 'static_configs': [{'targets': [target], 'labels': {'host': 'localhost'}}],
                    **more}
        metrics = self.stack.metrics_url.split('/')[2]
        mysqld = job('mysqld', f'127.0.0.1:{self.ports["mysqld"]}')
        mysqld['static_configs'][0]['labels']['role'] = 'primary'
        return {
            'global': {'scrape_interval': '5s', 'evaluation_interval': '5s', 'scrape_timeout': '4s'},
            'rule_files': [str(RULES)],
            'scrape_configs': [
                job('prometheus', f'127.0.0.1:{self.ports["prometheus"]}'),
                job('wsgiapp', metrics),
                job('nginx', f'127.0.0.1:{self.ports["nginx"]}'),
                mysqld,
                job('node', f'127.0.0.1:{self.ports["node"]}'),
                {'job_name': 'blackbox', 'metrics_path': '/probe', 'params': {'module': ['https_site']},
                 'static_configs': [{'targets': [self.stack.url + '/healthz'], 'labels': {'host': 'localhost'}}],
                 'relabel_configs': [
                     {'source_labels': ['__address__'], 'target_label': '__param_target'},
                     {'source_labels': ['__param_target'], 'target_label': 'instance'},
                     {'target_label': '__address__', 'replacement': f'127.0.0.1:{self.ports["blackbox"]}'}]},
            ],
        }

    def blackbox_config(self):
        return {'modules': {'https_site': {'prober': 'http', 'timeout': '3s', 'http': {
            'valid_status_codes': [200], 'fail_if_not_ssl': True,
            'tls_config': {'ca_file': str(self.stack.ca)}}}}}

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

    def up(self, seconds=60):
        if not self.stack.uwsgi.pid():
            raise RuntimeError('the stack is not running: `make run` first')
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o700)
        self.exporter_account()
        # JSON is YAML: the configs need no YAML library.
        (self.base / 'prometheus.yml').write_text(json.dumps(self.prometheus_config(), indent=1))
        (self.base / 'blackbox.yml').write_text(json.dumps(self.blackbox_config(), indent=1))
        (self.base / 'ports.json').write_text(json.dumps(self.ports))
        for name, command in self.commands().items():
            if pid_alive(self.pidfile(name)):
                continue
            with open(self.log(name), 'ab') as log:
                process = subprocess.Popen([binary(command[0]), *command[1:]], stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=log, start_new_session=True)
            self.pidfile(name).write_text(f'{process.pid}\n')
        say(f'waiting for Prometheus to see its {len(PORTS) + 1} targets up')
        wait_for(lambda: self.down_targets() == [], seconds, 'every target up in Prometheus',
                 interval=0.5, detail=lambda: f'down: {self.down_targets()}\n' + tails(
                     *[self.log(name) for name in self.commands()]))

    def query(self, path):
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.loads(response.read())['data']

    def down_targets(self):
        """The scrape jobs whose target is not up, or ['prometheus'] while it does not answer."""
        try:
            targets = self.query('/api/v1/targets?state=active')['activeTargets']
        except OSError:
            return ['prometheus']
        if len(targets) < len(PORTS) + 1:
            return ['(not all loaded yet)']
        return [target['labels']['job'] for target in targets if target['health'] != 'up']

    def firing(self):
        """{alert name: its labels} of the alerts firing now."""
        return {alert['labels']['alertname']: alert['labels'] for alert in self.query('/api/v1/alerts')['alerts']
                if alert['state'] == 'firing'}

    def screenshot(self, path, width=1100, height=1500):
        """The dashboard as a PNG, taken by headless Chromium (docs/_static/dashboard.png)."""
        subprocess.run([binary('chromium'), '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                        f'--window-size={width},{height}', f'--screenshot={path}',
                        self.url + '/consoles/wsgiapp.html'],
                       check=True, capture_output=True, timeout=60)

    def down(self):
        for name in reversed(list(self.commands())):
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
            if any(pid_alive(started.pidfile(name)) for name in PORTS):
                return started
        except (OSError, ValueError):
            pass
        ports = {}
        for name, port in PORTS.items():
            with socket.socket() as probe:
                try:
                    probe.bind(('127.0.0.1', port))
                except OSError:
                    port = free_port()
            ports[name] = port
        return cls(stack, ports)
