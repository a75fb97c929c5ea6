"""python -m launcher up|down|status|check|env|sql|logs VAR [--port PORT] [--tls-port PORT] [--metrics-port PORT]:
the servers of `make run`, private to one directory."""
import argparse
import subprocess
import sys
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m launcher", description=__doc__)
    parser.add_argument('action', choices=['up', 'down', 'status', 'check', 'env', 'sql', 'monitor-up', 'logs',
                                           'cluster-up', 'cluster-down', 'cluster-status', 'cluster-deploy',
                                           'cluster-monitor'])
    parser.add_argument('var', type=Path, help='directory for data, logs, secrets and generated configs')
    parser.add_argument('--port', type=int, default=8080, help='HTTP, which redirects to HTTPS')
    parser.add_argument('--tls-port', type=int, default=8443, help='HTTPS')
    parser.add_argument('--metrics-port', type=int, default=9117, help="the app's metrics, on 127.0.0.1")
    parser.add_argument('--apps', type=int, default=3, help='cluster: how many app hosts')
    parser.add_argument('--replicas', type=int, default=1, help='cluster: how many database replicas')
    parser.add_argument('--source', type=Path, help='cluster-deploy: the checkout to deploy (default: this one)')
    parser.add_argument('--id', help="logs: the request's id (its X-Request-ID)")
    args = parser.parse_args(argv)
    if args.action.startswith('cluster-'):
        return cluster(args)
    if args.action == 'logs':
        from launcher.logs import show
        if not args.id:
            parser.error('logs needs --id REQUEST_ID (make logs ID=...)')
        return show(args.var, args.id)
    from launcher.single import Stack
    from wsgiapp.pool import Unavailable
    stack = Stack(args.var, args.port, args.tls_port, args.metrics_port)
    if args.action == 'up':
        try:
            stack.up()
        except (RuntimeError, OSError, subprocess.CalledProcessError, Unavailable) as error:
            print(f'make run failed: {error}', file=sys.stderr)
            return 1
        base = stack.base
        print(f'\nready: {stack.url}/  (certificate authority: {stack.ca})\n'
              f'  curl --cacert {stack.ca} {stack.url}/admins\n'
              f'  metrics (this host only): curl {stack.metrics_url}\n'
              f'  API token for writes: {base / "api-token"}; logs: {base}/*.log; stop: make stop', flush=True)
    elif args.action == 'monitor-up':
        from launcher.monitor import Monitor
        monitor = Monitor.of(stack)
        try:
            monitor.up()
        except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
            print(f'make monitor failed: {error}', file=sys.stderr)
            return 1
        print(f'\nPrometheus: {monitor.url}/targets  alerts: {monitor.url}/alerts  '
              f'dashboard: {monitor.url}/consoles/wsgiapp.html\n  Alertmanager: {monitor.alertmanager_url}/  '
              f'(all on 127.0.0.1; stop: make stop)', flush=True)
    elif args.action == 'down':
        from launcher.monitor import Monitor
        Monitor.of(stack).down()
        stack.down()
    elif args.action == 'check':
        return stack.check()
    elif args.action == 'env':
        # For `eval "$(make -s env)"`: serve, initdb or a script of yours on the private MariaDB.
        for name, value in stack.environ().items():
            print(f"export {name}='{value}'")
    elif args.action == 'sql':
        # A SQL shell as the private MariaDB's administrator, over its unix socket. utf8mb4, as
        # the app speaks: the client's own default, utf8mb3, shows a 4-byte character such as
        # an emoji in a name as '?'.
        import os

        from launcher.process import binary
        os.execv(binary('mariadb'), ['mariadb', f'--socket={stack.mariadb.socket}',
                                     f'--user={stack.mariadb.admin_user}', '--default-character-set=utf8mb4',
                                     'wsgiapp'])
    else:
        return 0 if stack.status() else 3
    return 0


def cluster(args):
    """The cluster's actions (launcher/cluster.py); VAR is its directory, var/cluster for make."""
    from launcher.cluster import Cluster
    from launcher.fleet import missing
    if missing() and args.action in ('cluster-up', 'cluster-deploy', 'cluster-monitor'):
        # One line: the single server (make run) needs none of this.
        print(f'make {args.action.replace("-up", "")} {missing()} (containers); '
              'make run serves on this machine without root', file=sys.stderr)
        return 1
    hosts = Cluster(args.var, apps=args.apps, replicas=args.replicas)
    try:
        if args.action == 'cluster-up':
            hosts.up(capture=False)
            print(f'\nready: {hosts.url}/  (certificate authority: {hosts.ca})\n'
                  f'  curl --cacert {hosts.ca} {hosts.url}/admins\n'
                  f'  inventory: {hosts.fleet.inventory}; what runs where: {hosts.topology_file}\n'
                  f'  status: make cluster-status; deploy: make cluster-deploy; stop: make cluster-stop', flush=True)
        elif args.action == 'cluster-monitor':
            from launcher.monitor import ClusterMonitor
            monitor = ClusterMonitor.of(hosts)
            monitor.up()
            print(f'\nPrometheus: {monitor.url}/targets  alerts: {monitor.url}/alerts  '
                  f'dashboard: {monitor.url}/consoles/wsgiapp.html\n  Alertmanager: {monitor.alertmanager_url}/  '
                  f'(on 127.0.0.1; stop: make cluster-stop)', flush=True)
        elif args.action == 'cluster-deploy':
            hosts.deploy(**({'source': args.source.resolve()} if args.source else {}), capture=False)
        elif args.action == 'cluster-down':
            hosts.down()
            left = hosts.leftovers()
            if left:
                print(f'left behind: {left}', file=sys.stderr)
                return 1
        else:
            return 0 if hosts.status() else 3
    except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
        print(f'make {args.action.replace("-up", "")} failed: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
