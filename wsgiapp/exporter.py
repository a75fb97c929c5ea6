"""The app's metrics for Prometheus, on a listener of their own (WSGIAPP_METRICS_LISTEN,
127.0.0.1:9117 by default), never on the public site. Each scrape sums the workers' files
(wsgiapp/metrics.py) and asks uwsgi's stats server (its unix socket) how its workers are:
busy or idle, respawned, how many requests they are in, and how many connections wait in
the listen queue.

It runs as uwsgi's mule (conf/uwsgi.ini: `mule = wsgiapp.exporter:mule`), a process that
uwsgi's master forks, respawns and stops with the workers, and that answers while every
worker is busy; or by hand: `python -m wsgiapp metrics`."""
import json
import os
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from wsgiapp import metrics

CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'


def read_uwsgi_stats(path, timeout=0.5):
    """uwsgi's stats: the JSON its `stats` socket writes to each connection, then closes
    (OSError or ValueError when it cannot be read). The launcher and the tests read it here too."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(path))
        return json.loads(b''.join(iter(lambda: client.recv(65536), b'')))


def uwsgi_stats(path, timeout=0.5):
    """read_uwsgi_stats, or None when uwsgi does not answer (a scrape says uwsgi_up 0)."""
    try:
        return read_uwsgi_stats(path, timeout)
    except (OSError, ValueError):
        return None


def uwsgi_lines(stats):
    """Prometheus lines for uwsgi's own state; uwsgi_up 0 when its stats cannot be read."""
    lines = ['# HELP uwsgi_up Whether uwsgi\'s stats server answered this scrape.', '# TYPE uwsgi_up gauge',
             f'uwsgi_up {0 if stats is None else 1}']
    if stats is None:
        return lines
    workers = stats.get('workers', [])
    states = {'busy': 0, 'idle': 0}
    for worker in workers:
        state = worker.get('status') if worker.get('status') in states else 'other'
        states[state] = states.get(state, 0) + 1
    lines += ['# HELP uwsgi_workers uwsgi workers by state.', '# TYPE uwsgi_workers gauge']
    lines += [f'uwsgi_workers{{state="{state}"}} {count}' for state, count in sorted(states.items())]
    # Counted by uwsgi, not by the app: a core is in a request from reading it to the end of
    # its answer, and the master clears a dead worker's. Nothing for the app to add per request.
    in_flight = sum(core.get('in_request', 0) for worker in workers for core in worker.get('cores', []))
    lines += ['# HELP wsgiapp_requests_in_flight Requests uwsgi\'s workers are reading or answering now.',
              '# TYPE wsgiapp_requests_in_flight gauge', f'wsgiapp_requests_in_flight {in_flight}']
    lines += ['# HELP uwsgi_worker_respawns_total Times uwsgi respawned a worker.',
              '# TYPE uwsgi_worker_respawns_total counter',
              f'uwsgi_worker_respawns_total {sum(worker.get("respawn_count", 1) - 1 for worker in workers)}',
              '# HELP uwsgi_listen_queue Connections waiting in the socket\'s accept queue.',
              '# TYPE uwsgi_listen_queue gauge',
              f'uwsgi_listen_queue {stats.get("listen_queue", 0)}',
              '# HELP uwsgi_listen_queue_errors_total Connections the full accept queue refused.',
              '# TYPE uwsgi_listen_queue_errors_total counter',
              f'uwsgi_listen_queue_errors_total {stats.get("listen_queue_errors", 0)}']
    return lines


def scrape(directory, stats_socket):
    started = time.perf_counter()
    lines = uwsgi_lines(uwsgi_stats(stats_socket) if stats_socket else None)
    lines += ['# HELP wsgiapp_scrape_seconds Time this scrape took.', '# TYPE wsgiapp_scrape_seconds gauge',
              f'wsgiapp_scrape_seconds {time.perf_counter() - started:.6f}']
    return metrics.exposition(metrics.collect(directory), lines)


def handler_for(directory, stats_socket):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.partition('?')[0] != '/metrics':
                self.send_error(404, 'only /metrics is here')
                return
            body = scrape(directory, stats_socket).encode('utf-8')
            self.send_response(200)
            self.send_header('Content-Type', CONTENT_TYPE)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # Prometheus scrapes every few seconds: no line per scrape
            pass
    return Handler


def listen_address(value):
    host, _, port = value.rpartition(':')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        sys.exit('metrics: WSGIAPP_METRICS_LISTEN must be HOST:PORT, e.g. 127.0.0.1:9117')
    return host.strip('[]'), int(port)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # http.server's 5 would refuse scrapers that arrive together


def serve(directory, stats_socket, listen):
    """Serve until the process is stopped; while the address is taken, say so and retry."""
    while True:
        try:
            server = Server(listen_address(listen), handler_for(directory, stats_socket))
        except OSError as error:
            print(f'metrics: cannot listen on {listen}: {error}; trying again in 5 s', file=sys.stderr, flush=True)
            time.sleep(5)
            continue
        print(f'metrics: serving {directory} on http://{listen}/metrics', file=sys.stderr, flush=True)
        server.serve_forever()


def mule():
    """uwsgi's mule: the user the workers are (uwsgi forks mules from its master, which keeps
    root under master-as-root, and drops privileges only in its workers), then serve."""
    if os.geteuid() == 0:
        uid, gid = metrics.workers_ids()
        if uid is not None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
    directory = os.environ.get('WSGIAPP_METRICS_DIR')
    if not directory:  # metrics off: an idle mule, so the ini needs no second form
        while True:
            signal.pause()
    serve(directory, metrics.uwsgi_option('stats'), os.environ.get('WSGIAPP_METRICS_LISTEN', '127.0.0.1:9117'))


def main(args):
    directory = os.environ.get('WSGIAPP_METRICS_DIR')
    if not directory:
        sys.exit('metrics: WSGIAPP_METRICS_DIR is not set (the directory uwsgi\'s workers write to)')
    stats_socket = os.path.join(os.environ.get('WSGIAPP_RUN_DIR', '/run/wsgiapp'), 'stats.sock')
    try:
        serve(directory, stats_socket, args.listen)
    except KeyboardInterrupt:
        pass
