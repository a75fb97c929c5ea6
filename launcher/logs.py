"""The JSON log lines: nginx's access logs (conf/nginx/: `log_format ... escape=json`) and
the app's own (wsgiapp/app.py, Application.log), which carry the same request id; and
`make logs ID=...`: one request's path across them, on `make run`'s stack and on the
cluster's edge and app hosts (nginx's files there, and uwsgi's journal)."""
import json
import subprocess
import sys
from pathlib import Path


def entries(text):
    """The JSON objects among `text`'s lines; other lines (uwsgi's own) are skipped."""
    found = []
    for line in text.splitlines():
        if line.startswith('{'):
            try:
                found.append(json.loads(line))
            except ValueError:
                pass  # a line cut short while it is being written
    return found


def read(path, offset=0):
    """The JSON objects of log file `path` from byte `offset` on (none if it is not there)."""
    try:
        with open(path, 'rb') as f:
            f.seek(offset)
            return entries(f.read().decode('utf-8', errors='replace'))
    except FileNotFoundError:
        return []


def by_id(items, request_id):
    return [item for item in items if item.get('request_id') == request_id]


def single(var, request_id):
    """(where, log, entry) for `request_id` in `make run`'s logs under `var`."""
    return [('this host', name, entry) for name, path in [('nginx', var / 'nginx-access.log'),
                                                          ('uwsgi', var / 'uwsgi.log')]
            for entry in by_id(read(path), request_id)]


# nginx's access logs on a cluster host, by the syslog tag its journal lines carry
# (conf/nginx/): the files have every line; nginx drops a syslog line that journald has no
# room for yet, which under load is most of them (docs/operations.rst).
ACCESS_LOGS = {'/var/log/nginx/wsgiapp.access.log': 'wsgiapp_access',
               '/var/log/nginx/wsgiapp-app.access.log': 'wsgiapp_link'}


def host_lines(host, request_id):
    """(host, source, entry) for `request_id` on a cluster host: the edge's and the link's
    access lines from nginx's files (and the ones logrotate moved aside last), the app's
    lines from wsgiapp.service's journal (its stderr: a stream, not dropped datagrams)."""
    files = [path + suffix for path in ACCESS_LOGS for suffix in ('.1', '')]
    # -F: the id is a literal; -s: a host has only the files of its role.
    out = host.run(['grep', '-sF', '--with-filename', request_id, *files], check=False)
    found = []
    for line in out.splitlines():
        path, _, text = line.partition(':')
        source = ACCESS_LOGS[path.removesuffix('.1')]
        found += [(host.name, source, entry) for entry in by_id(entries(text), request_id)]
    out = host.run(['journalctl', '-u', 'wsgiapp.service', '-o', 'json', '--no-pager', '--grep', request_id],
                   check=False)
    for record in entries(out):
        message = record.get('MESSAGE')
        if isinstance(message, str):  # bytes that are not UTF-8: no line of ours
            found += [(host.name, 'uwsgi', entry) for entry in by_id(entries(message), request_id)]
    return found


def cluster(base, request_id):
    from launcher.cluster import Cluster
    topology = json.loads((base / 'topology.json').read_text())
    hosts = Cluster(base, apps=len(topology['app']), replicas=0)  # the database hosts are not read
    return [line for host in [hosts.edge, *hosts.apps] for line in host_lines(host, request_id)]


def trace(var, request_id):
    """Every line about `request_id` on the stacks under `var` (make run's, the cluster's),
    in time order."""
    var = Path(var)
    found = single(var, request_id)
    if (var / 'cluster' / 'topology.json').exists():
        try:
            found += cluster(var / 'cluster', request_id)
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            found.append(('cluster', 'make logs', {'time': '', 'message': f'not read: {error}'}))
    return sorted(found, key=lambda line: str(line[2].get('time', '')))


def show(var, request_id):
    lines = trace(var, request_id)
    for where, source, entry in lines:
        print(f'{where:12} {source:16} {json.dumps(entry)}')
    if not lines:
        print(f'no log line has the request id {request_id!r} (it is the answer\'s X-Request-ID)', file=sys.stderr)
    return 0 if lines else 1
