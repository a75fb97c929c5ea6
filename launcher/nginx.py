"""nginx with a config generated from conf/nginx/wsgiapp.conf: the same site, with only
the listen addresses, the certificate, the paths and the logs moved to the launcher's own."""
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from deploy.filter_plugins.wsgiapp_conf import edge_site  # the playbook's edge uses the same
from launcher import procs
from launcher.process import ROOT, binary, pid_alive, say, tail, tails, terminate
from launcher.wait import wait_for

SITE = ROOT / 'conf' / 'nginx' / 'wsgiapp.conf'
LINK = ROOT / 'conf' / 'nginx' / 'wsgiapp-link.conf'
APP_SITE = ROOT / 'conf' / 'nginx' / 'wsgiapp-app.conf'
# The access log's copy to the journal (a server's /dev/log): a line of its own, dropped here.
SYSLOG = '    access_log syslog:server=unix:/dev/log,nohostname,tag=%s;\n'
# The edge keeps at least this many idle connections to the app hosts open, per nginx worker;
# an edge with a limit on requests in flight (limit_conn) keeps as many as it admits, so
# that no connection opened under load is closed again for want of room (each new one is a
# TLS handshake on both ends: at 32 under 256 clients, 17 of every 100 requests made one).
KEEPALIVE = 32
def url_host(address):
    """An address as the host part of a URL: an IPv6 one in brackets."""
    return f'[{address}]' if ':' in address else address


class Nginx:
    """`base` holds the generated config, the pid file and the logs (written by nginx's
    master, root when we are root); `run_dir` holds what its workers read and write (the
    static files, the temp files). As root the workers run as www-data, as Debian's nginx
    does, and run_dir must be a place www-data can reach: see single.py."""

    def __init__(self, base, port, upstream, tls_port, certificate, address='127.0.0.1', user='default',
                 run_dir=None, link=None, wrap=(), probers=(), in_flight=None):
        self.base = Path(base).resolve()
        self.address = address
        self.port = port
        self.tls_port = tls_port
        # A unix socket's path (one host), or server lines of app hosts (an edge) with
        # `link`: the (certificate, key, CA) of the mutual-TLS link to them.
        self.upstream = upstream
        self.link = link
        self.wrap = list(wrap)  # e.g. `ip netns exec edge`: where nginx runs
        # Addresses besides the host's own that may ask /readyz (the launcher's, on an edge).
        self.probers = list(probers)
        # The site's limit on requests in flight (limit_conn), when not the file's.
        self.in_flight = in_flight
        self.certificate = certificate  # (fullchain, key, chain) paths
        # nginx's workers: www-data as root (the directive only applies when started as root)
        self.user = ('www-data' if os.geteuid() == 0 else None) if user == 'default' else user
        self.run_dir = Path(run_dir) if run_dir else self.base / 'run'
        self.static = self.run_dir / 'static'
        self.conf = self.base / 'nginx.conf'
        self.site = self.base / 'nginx-site.conf'
        self.link_conf = self.base / 'nginx-link.conf'
        self.pidfile = self.base / 'nginx.pid'
        self.error_log = self.base / 'nginx-error.log'
        self.access_log = self.base / 'nginx-access.log'
        self.status_socket = self.run_dir / 'nginx-status.sock'  # stub_status, for `make monitor`
        self.url = f'https://{address}:{tls_port}'
        self.http_url = f'http://{address}:{port}'

    def pid(self):
        return pid_alive(self.pidfile)

    def site_text(self):
        site = SITE.read_text()
        fullchain, key, chain = self.certificate
        for old, new in [('listen 80;', f'listen {self.address}:{self.port};'),
                         ('listen 443 ssl http2;', f'listen {self.address}:{self.tls_port} ssl http2;'),
                         # The redirect names this server's own address, never the client's Host.
                         ('return 301 https://$server_name$request_uri;',
                          f'return 301 https://{url_host(self.address)}:{self.tls_port}$request_uri;'),
                         ('/etc/letsencrypt/live/example.com/fullchain.pem', str(fullchain)),
                         ('/etc/letsencrypt/live/example.com/privkey.pem', str(key)),
                         ('/etc/letsencrypt/live/example.com/chain.pem', str(chain)),
                         ('root /var/www/html;', f'root {self.run_dir / "acme"};'),
                         ('/srv/wsgiapp/conf/static', str(self.static)),
                         ('    server unix:/run/wsgiapp/uwsgi.sock;\n', self.upstream_lines()),
                         ('    ::1       1;\n', '    ::1       1;\n' + ''.join(f'    {a} 1;\n' for a in self.probers)),
                         ('/var/log/nginx/wsgiapp.access.log', str(self.access_log)),
                         (SYSLOG % 'wsgiapp_access wsgiapp', ''),  # no journal here: the file only
                         ('/var/lib/nginx/wsgiapp-cache', str(self.run_dir / 'nginx-cache')),
                         ('/var/log/nginx/wsgiapp.error.log', str(self.error_log)),
                         ('unix:/run/wsgiapp-nginx-status.sock', f'unix:{self.status_socket}')]:
            if old not in site:
                raise RuntimeError(f'conf/nginx/wsgiapp.conf no longer contains {old!r}')
            site = site.replace(old, new)
        if self.in_flight is not None:
            old = re.search(r'limit_conn wsgiapp_in_flight \d+;', site)
            if not old:
                raise RuntimeError('conf/nginx/wsgiapp.conf no longer contains limit_conn wsgiapp_in_flight')
            site = site.replace(old.group(0), f'limit_conn wsgiapp_in_flight {self.in_flight};')
        return edge_site(site, self.link_conf) if self.link else site

    def upstream_lines(self):
        if isinstance(self.upstream, (str, Path)):
            return f'    server unix:{self.upstream};\n'
        # An edge: the app hosts, and idle connections to them kept for the next requests
        # (the link lasts: conf/nginx/wsgiapp-link.conf), each for up to 60 s (below the app
        # host's keepalive_timeout, so the edge closes first) and 10,000 requests.
        return (''.join(f'    server {line};\n' for line in self.upstream)
                + f'    keepalive {max(KEEPALIVE, self.in_flight or 0)};\n    keepalive_timeout 60s;\n'
                '    keepalive_requests 10000;\n')

    def link_text(self):
        text = LINK.read_text()
        for name, path in zip(('edge.pem', 'edge.key', 'ca.pem'), self.link):
            text = text.replace(f'/etc/wsgiapp/link/{name}', str(path))
        return text

    def conf_text(self):
        temp = self.run_dir / 'nginx-temp'
        # As root, workers drop to www-data as Debian's nginx does; otherwise they run as us.
        user = f'user {self.user};\n' if self.user else ''
        return (
            f'# Generated from conf/nginx/wsgiapp.conf by launcher/nginx.py: edit that file instead.\n'
            f'{user}worker_processes 1;\npid {self.pidfile};\nerror_log {self.error_log} warn;\n'
            'events { worker_connections 4096; }\n'
            'http {\n    include /etc/nginx/mime.types;\n    default_type application/octet-stream;\n'
            '    sendfile on;\n    tcp_nopush on;\n    keepalive_timeout 65;\n'
            + ''.join(f'    {kind}_temp_path {temp}/{kind};\n'
                      for kind in ('client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'))
            + f'    include {self.site};\n}}\n')

    def render(self):
        """Write the config; copy the static files where the workers can read them."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / 'nginx-temp').mkdir(exist_ok=True)
        (self.run_dir / 'acme').mkdir(exist_ok=True)
        shutil.rmtree(self.static, ignore_errors=True)
        shutil.copytree(ROOT / 'conf' / 'static', self.static)
        self.site.write_text(self.site_text())
        if self.link:
            self.link_conf.write_text(self.link_text())
        shutil.copy('/etc/nginx/uwsgi_params', self.base / 'uwsgi_params')
        self.conf.write_text(self.conf_text())

    def _nginx(self, *args):
        return subprocess.run([*self.wrap, binary('nginx'), '-p', str(self.base), '-c', str(self.conf), *args],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)

    def start(self):
        running = self.pid()
        if running and self.rendered():
            say(f'nginx is already running (pid {running}, {self.url}/)')
            return
        self.render()
        if running:
            # Another port or an edited site file: nginx re-reads its config on SIGHUP,
            # finishing the requests in flight; a config it cannot load leaves the old one.
            say(f'nginx is running (pid {running}): reloading it to serve {self.url}/')
            self.reload()
            self._wait_listening()
            return
        say(f'starting nginx on {self.url}/ and {self.http_url}/ (config: {self.conf})')
        done = self._nginx()
        if done.returncode != 0:
            raise RuntimeError(f'nginx did not start:\n{done.stderr}{tail(self.error_log)}')

    def rendered(self):
        """Whether the files on disk are the config as it would be written now."""
        files = [(self.site, self.site_text), (self.conf, self.conf_text)]
        if self.link:
            files.append((self.link_conf, self.link_text))
        return all(path.exists() and path.read_text() == text() for path, text in files)

    def workers(self):
        """The pids of the master's children (its workers and cache processes)."""
        return {child.pid for child in procs.children(self.pid())}

    def reload(self, seconds=60):
        """Apply a changed config and return once every old worker has exited: the requests
        they had in flight are finished, and only workers with the new config remain."""
        done = self._nginx('-t')
        if done.returncode != 0:
            raise RuntimeError(f'the new nginx config is invalid, nginx keeps the old one:\n{done.stderr}')
        old = self.workers()
        os.kill(self.pid(), signal.SIGHUP)

        def only_new_workers():
            workers = self.workers()
            return workers and not workers & old
        wait_for(only_new_workers, seconds, 'the old nginx workers did not finish',
                 detail=lambda: f'old workers {sorted(old)}, workers now {sorted(self.workers())}\n'
                 + tails(self.error_log))

    def _wait_listening(self, seconds=10):
        def listening():
            with socket.create_connection((self.address, self.tls_port), timeout=1):
                return True
        wait_for(listening, seconds, f'nginx did not start listening on {self.url}',
                 detail=lambda: tails(self.error_log))

    def stop(self):
        pid = self.pid()
        if pid:
            # SIGQUIT is nginx's graceful stop: requests in flight are finished first.
            terminate('nginx', pid, signal.SIGQUIT, 15, signal.SIGTERM)
        self.pidfile.unlink(missing_ok=True)


class AppNginx(Nginx):
    """The nginx of an app host (conf/nginx/wsgiapp-app.conf): the far end of the edge's
    link, mutual TLS on `address:port`, passing to uwsgi's unix socket `upstream`; `link`
    is (this host's certificate, its key, the link's CA)."""

    def __init__(self, base, address, port, upstream, link, run_dir=None, wrap=()):
        super().__init__(base, None, upstream, port, certificate=None, address=address, run_dir=run_dir,
                         link=link, wrap=wrap)

    def site_text(self):
        site = APP_SITE.read_text()
        cert, key, ca = self.link
        for old, new in [('listen 3031 ssl;', f'listen {self.address}:{self.tls_port} ssl;'),
                         ('/etc/wsgiapp/link/app.pem', str(cert)),
                         ('/etc/wsgiapp/link/app.key', str(key)),
                         ('/etc/wsgiapp/link/ca.pem', str(ca)),
                         ('unix:/run/wsgiapp/uwsgi.sock', f'unix:{self.upstream}'),
                         ('/var/log/nginx/wsgiapp-app.access.log', str(self.access_log)),
                         (SYSLOG % 'wsgiapp_link wsgiapp_link', ''),
                         ('/var/log/nginx/wsgiapp-app.error.log', str(self.error_log)),
                         ('unix:/run/wsgiapp-nginx-status.sock', f'unix:{self.status_socket}')]:
            if old not in site:
                raise RuntimeError(f'conf/nginx/wsgiapp-app.conf no longer contains {old!r}')
            site = site.replace(old, new)
        return site

    def render(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / 'nginx-temp').mkdir(exist_ok=True)
        self.base.mkdir(parents=True, exist_ok=True)
        self.site.write_text(self.site_text())
        shutil.copy('/etc/nginx/uwsgi_params', self.base / 'uwsgi_params')
        self.conf.write_text(self.conf_text())

    def rendered(self):
        return all(path.exists() and path.read_text() == text()
                   for path, text in [(self.site, self.site_text), (self.conf, self.conf_text)])

    def start(self):
        super().start()
        self._wait_listening()
