"""`python -m wsgiapp check`: diagnose a deployment, naming the fix for each classic fault
of an nginx + uwsgi + MySQL setup. Exit status 1 when something needs fixing."""
import grp
import os
import pwd
import re
import socket
import stat

import MySQLdb

from wsgiapp import config
from wsgiapp.envfile import read_env_file
from wsgiapp.pool import connect_kwargs, describe
from wsgiapp.schema import TABLES

DEFAULT_RUN_DIR = '/run/wsgiapp'
DEFAULT_ENV_FILE = '/etc/wsgiapp/env'  # the systemd unit's EnvironmentFile=
ENCODE_COMMAND = """python3 -c 'import urllib.parse, sys; print(urllib.parse.quote(sys.argv[1], safe=""))' PASSWORD"""
MAX_STATIC_FILES = 10000  # enough for any static directory; a root of / would walk forever
# Permission bits for (owner, group, others).
READ = (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)
WRITE = (stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH)
SEARCH = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)  # x on a directory: may pass through it


class Report:
    def __init__(self, out):
        self.out = out
        self.failed = 0

    def ok(self, what):
        self.out(f'ok    {what}')

    def fail(self, what, fix):
        self.failed += 1
        self.out(f'FAIL  {what}\n      fix: {fix}')


# Users and permissions

def _groups(user):
    return {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem} | {user.pw_gid}


def _may(info, user, groups, bits):
    """Whether `user` (in `groups`) has the permission `bits` on a file with this stat: the
    kernel's rule, where only the first class that applies (owner, group, others) counts."""
    if user.pw_uid == 0:
        return True
    owner, group, others = bits
    if info.st_uid == user.pw_uid:
        return bool(info.st_mode & owner)
    if info.st_gid in groups:
        return bool(info.st_mode & group)
    return bool(info.st_mode & others)


def _user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _owner(info):
    return f'{_user_name(info.st_uid)}:{_group_name(info.st_gid)}'


def _described(path, info):
    return f'{path} (owner {_owner(info)}, mode {stat.S_IMODE(info.st_mode):o})'


# The environment file

def check_env_file(report, path):
    """The variables the file gives uwsgi, or {} when it cannot be read."""
    try:
        variables, problems = read_env_file(path)
    except PermissionError:
        report.fail(f'environment file {path} is not readable by this user (it should be root-only, mode 600)',
                    f'run the check as root: sudo .venv/bin/python -m wsgiapp check --env-file {path}')
        return {}
    except UnicodeDecodeError:
        report.fail(f'environment file {path} is not UTF-8', 'write it in UTF-8: systemd skips what is not')
        return {}
    except OSError as error:
        report.fail(f'environment file {path}: {error.strerror}',
                    "pass --env-file with the file the unit's EnvironmentFile= names")
        return {}
    for problem in problems:
        report.fail(f'environment file {path}: {problem}: systemd skips it and uwsgi never sees it',
                    'write it as KEY=VALUE on one line, without "export"')
    report.ok(f'read {len(variables)} variables from {path}, as systemd gives them to uwsgi')
    return variables


def _env_file(path):
    if path is not None:
        return path or None  # --env-file '': none
    return DEFAULT_ENV_FILE if os.path.exists(DEFAULT_ENV_FILE) else None


# uwsgi

def check_ini(report, path):
    try:
        with open(path, encoding='utf-8') as ini:
            lines = [line.strip() for line in ini]
    except OSError as error:
        report.fail(f'uwsgi config {path}: {error.strerror}', 'pass --ini with the path of your uwsgi .ini file')
        return
    first = next((line for line in lines if line and not line.startswith((';', '#'))), '')
    if first != '[uwsgi]':
        report.fail(f'uwsgi config {path} does not start with the [uwsgi] section header',
                    'add a line "[uwsgi]" at the top: without it uwsgi does not read the options')
    else:
        report.ok(f'uwsgi config {path} has its [uwsgi] header')
    if any(re.match(r'chmod-socket\s*=\s*0?666\b', line) for line in lines):
        report.fail(f'uwsgi config {path} sets chmod-socket = 666: every local user can talk to the app',
                    "use chmod-socket = 660 with chown-socket = USER:www-data (nginx's group)")


def check_socket(report, path, nginx_user):
    try:
        info = os.stat(path)
    except OSError:
        report.fail(f'uwsgi socket {path} does not exist (nginx would answer 502)',
                    'start uwsgi (systemctl start wsgiapp, or make run) and point uwsgi_pass at the same path')
        return
    if not stat.S_ISSOCK(info.st_mode):
        report.fail(f'{path} is not a socket', 'remove it and restart uwsgi')
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(path)
        except OSError as error:
            report.fail(f'uwsgi socket {path} refuses connections ({error.strerror}): uwsgi is not running',
                        'start uwsgi; a stale socket file is left by a uwsgi killed without vacuum')
            return
    report.ok(f'uwsgi socket {path} accepts connections')
    if info.st_mode & stat.S_IWOTH:
        report.fail(f'uwsgi socket {path} is world-writable: every local user can talk to the app',
                    "chmod-socket = 660 and chown-socket = USER:www-data (nginx's group)")
    if nginx_user is None:
        return
    if _may(info, nginx_user, _groups(nginx_user), WRITE):  # connecting to a unix socket needs write
        report.ok(f'nginx user {nginx_user.pw_name} may connect to {path}')
    else:
        report.fail(f'nginx user {nginx_user.pw_name} may not connect to {_described(path, info)}: '
                    'nginx would answer 502',
                    f'chown-socket = USER:{_group_name(nginx_user.pw_gid)} and chmod-socket = 660 in uwsgi.ini')


def check_socket_group(report, path, nginx_user):
    """Everyone in the socket's group may talk to the app directly, past nginx's limits."""
    try:
        info = os.stat(path)
    except OSError:
        return  # check_socket has said so
    if not stat.S_ISSOCK(info.st_mode) or not info.st_mode & stat.S_IWGRP:
        return
    name = _group_name(info.st_gid)
    try:
        members = set(grp.getgrgid(info.st_gid).gr_mem)
    except KeyError:
        members = set()
    members |= {user.pw_name for user in pwd.getpwall() if user.pw_gid == info.st_gid}  # as primary group
    # nginx's user connects; the socket's owner, the uwsgi user, must be in the group to hand it over.
    nginx, owner = nginx_user.pw_name, _user_name(info.st_uid)
    others = sorted(members - {nginx, owner})
    if others:
        report.fail(f"the uwsgi socket's group {name} has members besides nginx's user {nginx}: "
                    f'{", ".join(others)}; each may talk to the app directly, past nginx',
                    f"give the socket a group of its own that only nginx's user is in: groupadd wsgiapp-sock && "
                    f'adduser {nginx} wsgiapp-sock; in the unit, SupplementaryGroups=wsgiapp-sock and '
                    f'WSGIAPP_SOCKET_OWNER={owner}:wsgiapp-sock; then systemctl restart wsgiapp && '
                    'systemctl reload nginx')
    else:
        report.ok(f"the uwsgi socket's group {name} has no members besides nginx's user and the socket's owner")


def check_uwsgi_user(report, pidfile, given, private_stack):
    """uwsgi, from its pid file, serves as some user other than root: its master, or, when the
    master keeps root (master-as-root), every worker it forked."""
    try:
        with open(pidfile, encoding='ascii') as file:
            pid = int(file.read().strip())
    except FileNotFoundError:
        if given:
            report.fail(f'uwsgi pid file {pidfile} does not exist',
                        "start uwsgi, or pass --pidfile with the path of uwsgi's pidfile option")
        else:
            report.ok(f'no uwsgi pid file at {pidfile}: which user uwsgi runs as is not checked (--pidfile)')
        return
    except (OSError, ValueError):
        report.fail(f'uwsgi pid file {pidfile} is unreadable or holds no pid',
                    "run the check as root, or pass --pidfile with the path of uwsgi's pidfile option")
        return
    uids = _uids(pid)
    if uids is None:
        report.fail(f'uwsgi pid file {pidfile} names pid {pid}, which is not running',
                    'start uwsgi; a pid file is left behind by a uwsgi killed without vacuum')
        return
    workers = {worker: _uids(worker) for worker in _forked(pid)}
    if '0' not in uids:  # real, effective, saved and filesystem uid
        report.ok(f'uwsgi (pid {pid}) runs as {_user_name(int(uids[1]))}, not root')
    elif workers and all(worker_uids and '0' not in worker_uids for worker_uids in workers.values()):
        # master-as-root (conf/uwsgi.ini): the master reads no request and keeps root only to
        # re-execute on a reload; the workers, which parse every request, are not root.
        users = sorted({_user_name(int(worker_uids[1])) for worker_uids in workers.values()})
        report.ok(f"uwsgi's workers (pids {', '.join(map(str, sorted(workers)))}) run as {', '.join(users)}, "
                  f'not root; its master (pid {pid}) keeps root to reload and reads no request')
    else:  # everywhere, a private stack too
        report.fail(f'uwsgi (pid {pid}) runs as root: a hole in the app or its libraries is a root shell',
                    'run it as its own user: User=wsgiapp in the systemd unit (conf/systemd/wsgiapp.service), '
                    "or conf/uwsgi.ini's uid and gid when started as root")


def _uids(pid):
    """A process's real, effective, saved and filesystem uids (strings), or None."""
    try:
        with open(f'/proc/{pid}/status', encoding='ascii', errors='replace') as status:
            return next(line.split()[1:] for line in status if line.startswith('Uid:'))
    except (OSError, StopIteration):
        return None


def _forked(pid):
    """The children of `pid` that run its own program: uwsgi's workers. (/proc directly: a
    server's virtualenv has the app and uwsgi only.)"""
    try:
        program = os.readlink(f'/proc/{pid}/exe')
    except OSError:
        return []
    found = []
    for entry in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{entry}/stat', encoding='ascii', errors='replace') as stat_file:
                parent = int(stat_file.read().rsplit(')', 1)[1].split()[1])
            if parent == pid and os.readlink(f'/proc/{entry}/exe') == program:
                found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


# nginx

def _read_conf(path):
    """An nginx file without its comments. Raises OSError."""
    with open(path, encoding='utf-8', errors='replace') as conf:
        return re.sub(r'#[^\n]*', '', conf.read())


def _servers(text):
    """The body of each `server { ... }` block."""
    bodies = []
    for start in re.finditer(r'\bserver\s*\{', text):
        depth, end = 1, start.end()
        while depth and end < len(text):
            depth += {'{': 1, '}': -1}.get(text[end], 0)
            end += 1
        bodies.append(text[start.end():end])
    return bodies


def _listens(server):
    """{port: is default_server} for a server block's listen directives; none is port 80."""
    ports = {}
    for address, *flags in (params.split() for params in re.findall(r'\blisten\s+([^;]+);', server)):
        if address.startswith('unix:'):
            continue
        port = re.search(r'(?:^|:)(\d+)$', address)  # 80, 127.0.0.1:8080, [::]:80; an address alone is 80
        port = int(port.group(1)) if port else 80
        ports[port] = ports.get(port, False) or 'default_server' in flags or 'default' in flags
    return ports or {80: False}


def check_nginx(report, path, socket_path):
    """The site's text without comments, or None when it cannot be read."""
    try:
        text = _read_conf(path)
    except OSError as error:
        report.fail(f'nginx site {path}: {error.strerror}', 'pass --nginx-conf with the path of your nginx site file')
        return None
    if 'uwsgi_pass' not in text:
        report.fail(f'nginx site {path} has no uwsgi_pass',
                    'add: location / { include uwsgi_params; uwsgi_pass unix:SOCKET; }')
        return text
    if not re.search(r'include\s+\S*uwsgi_params\s*;', text):
        report.fail(f'nginx site {path} does not include uwsgi_params: uwsgi gets no PATH_INFO, '
                    'REQUEST_METHOD or headers', 'add "include uwsgi_params;" next to uwsgi_pass')
    else:
        report.ok(f'nginx site {path} includes uwsgi_params')
    # uwsgi_pass unix:PATH, or uwsgi_pass NAME with `server unix:PATH;` in its upstream block.
    passes = re.findall(r'(?:uwsgi_pass|server)\s+unix:([^;\s]+)\s*[;\s]', text)
    if socket_path and passes and os.path.abspath(socket_path) not in map(os.path.abspath, passes):
        report.fail(f'nginx passes to {", ".join(passes)} but uwsgi listens on {socket_path}',
                    'make uwsgi_pass and uwsgi\'s socket option name the same path')
    return text


def check_default_site(report, site_path, site, sites_dir):
    """Another enabled site that is the default server for one of our ports gets every
    request whose Host names none of ours: with server_name _, that is every request."""
    ours = {}
    for server in _servers(site):
        for port, default in _listens(server).items():
            ours[port] = ours.get(port, False) or default
    if not ours:
        return
    try:
        names = sorted(os.listdir(sites_dir))  # nginx's include glob loads them in this order
    except OSError:
        return  # no sites-enabled: not Debian's layout, nothing to compare
    same_dir = os.path.dirname(os.path.abspath(site_path)) == os.path.abspath(sites_dir)
    conflicts = 0
    for name in names:
        path = os.path.join(sites_dir, name)
        if name.startswith('.') or os.path.realpath(path) == os.path.realpath(site_path):
            continue
        try:
            text = _read_conf(path)
        except OSError:
            continue
        # Without default_server anywhere, the first server loaded for a port is its default.
        loads_first = same_dir and name < os.path.basename(site_path)
        stolen = sorted(port for server in _servers(text) for port, default in _listens(server).items()
                        if port in ours and (default or (loads_first and not ours[port])))
        if stolen:
            conflicts += 1
            ports = ', '.join(map(str, sorted(set(stolen))))
            report.fail(f"nginx's default site {path} also answers port {ports}: every request gets "
                        "its page (for Debian's default, nginx's welcome page) instead of wsgiapp",
                        f'rm {path} && nginx -t && systemctl reload nginx')
    if not conflicts:
        report.ok(f'no other site in {sites_dir} answers port {", ".join(map(str, sorted(ours)))} before wsgiapp')


def static_roots(site):
    """The paths of the site's alias and root directives: the files nginx serves itself. A
    path inside another one is left out: it is checked with that one."""
    paths = {os.path.normpath(path) for path in re.findall(r'\b(?:alias|root)\s+([^;\s]+)\s*;', site or '')
             if '$' not in path}
    return sorted(path for path in paths if not _under(path, paths))


def _chain(path):
    """Every directory the kernel passes through to open `path`, from / down, symlinks resolved."""
    directories = []
    path = os.path.realpath(path)
    while os.path.dirname(path) != path:
        path = os.path.dirname(path)
        directories.append(path)
    return directories[::-1]


def _walk(root):
    """(directories, files) nginx may open under a static root (a file or a directory)."""
    if not os.path.isdir(root):
        return [], [root]
    directories, files = [], []
    for directory, _, names in os.walk(root):
        directories.append(directory)
        files.extend(os.path.join(directory, name) for name in names)
        if len(files) > MAX_STATIC_FILES:
            break
    return directories, files


def _under(path, directories):
    return any(path.startswith(directory.rstrip(os.sep) + os.sep) for directory in directories)


def check_reach(report, nginx_user, socket_path, statics):
    """nginx's workers open the socket and the static files by path, as nginx's user: every
    directory above them needs x for that user (a checkout under /root or in a `mktemp -d`
    directory has none), and every static file needs r."""
    targets = []  # (what, nginx's answer when it cannot, path, directories under it, files under it)
    if os.path.isdir(os.path.dirname(os.path.abspath(socket_path))):  # else check_socket says it is missing
        targets.append((f'the uwsgi socket {socket_path}', 502, socket_path, [], []))
    for root in statics:
        try:
            os.stat(root)
        except FileNotFoundError:
            report.fail(f'nginx serves static files from {root}, which does not exist (404)',
                        "point the site's alias and root at the checkout's conf/static, or put the checkout "
                        'at /srv/wsgiapp')
            continue
        except OSError:
            pass  # not reachable by whoever runs the check either: the chain below names the directory
        targets.append((f'the static files in {root}', 403, root, *_walk(root)))
    groups = _groups(nginx_user)
    user = nginx_user.pw_name
    blocked = {}  # directory -> (its stat, what it hides)
    unreadable = {}  # static root -> its files nginx's user may not read
    for what, answer, path, directories, files in targets:
        for directory in _chain(path) + directories:
            if _under(directory, blocked):
                continue  # one directory in the way is enough to name: the first from the top
            try:
                info = os.stat(directory)
            except OSError:
                break  # missing, or hidden from whoever runs the check: said elsewhere
            if not _may(info, nginx_user, groups, SEARCH):
                blocked.setdefault(directory, (info, {}))[1][what] = answer
        for file in files:
            if _under(file, blocked):
                continue
            try:
                info = os.stat(file)
            except OSError:  # a dangling symlink: nginx answers 404, nothing to open
                continue
            if not _may(info, nginx_user, groups, READ):
                unreadable.setdefault(path, []).append(_described(file, info))
    for directory, (info, hidden) in blocked.items():
        report.fail(f'nginx user {user} may not enter {_described(directory, info)}, so it cannot reach '
                    + ' or '.join(f'{what} (nginx answers {answer})' for what, answer in hidden.items()),
                    f'put the checkout and the socket where {user} can reach them, such as /srv/wsgiapp and '
                    f'/run/wsgiapp, or chmod o+x {directory}')
    for root, files in unreadable.items():
        report.fail(f'nginx user {user} may not read {len(files)} static file(s) in {root}, such as {files[0]} '
                    '(nginx answers 403)', f'chmod -R a+rX {root}')
    if targets and not blocked and not unreadable:
        report.ok(f'nginx user {user} may reach ' + ' and '.join(what for what, *_ in targets))


# The application's settings

def check_settings(report, environ):
    """Each malformed number on a line of its own, then the database (with those at their defaults)."""
    malformed = set()
    for name in config.NUMBERS:
        try:
            config.number(environ, name)
        except config.ConfigError as error:
            malformed.add(name)
            report.fail(f'{error}: uwsgi would not start',
                        f'correct {name} in the environment file, or remove it for the default')
    check_database(report, {key: value for key, value in environ.items() if key not in malformed})


def check_database(report, environ):
    try:
        settings = config.from_environ(environ)
    except config.ConfigError as error:  # DATABASE_REPLICA_URL: malformed, or a TLS file unreadable
        report.fail(f'{error}: uwsgi would not start', 'correct DATABASE_REPLICA_URL (docs/configuration.rst)')
        environ = {key: value for key, value in environ.items() if key != 'DATABASE_REPLICA_URL'}
        settings = config.from_environ(environ)
    if settings.database is None:
        if environ.get('DATABASE_URL', '').strip():
            fix = ('write DATABASE_URL as mysql://USER:PASSWORD@HOST/DBNAME, user and password percent-encoded: '
                   + ENCODE_COMMAND)
        else:
            fix = ('set DATABASE_URL=mysql://USER:PASSWORD@HOST/DBNAME in the uwsgi environment '
                   '(EnvironmentFile= in the systemd unit, or --env-file)')
        report.fail(settings.database_problem, fix)
        return
    for n, replica in enumerate(settings.replica_databases, 1):
        con = _connect(report, settings, replica, f'DATABASE_REPLICA_URL (replica {n})')
        if con is not None:
            con.close()
            report.ok(f'DATABASE_REPLICA_URL (replica {n}) connects' + _tls_said(replica))
    con = _connect(report, settings, None, 'DATABASE_URL')
    if con is None:
        return
    try:
        cursor = con.cursor()
        cursor.execute('SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()')
        present = {name for (name,) in cursor.fetchall()}
        missing = [table for table in TABLES if table not in present]
        if not missing:
            report.ok(f'DATABASE_URL connects{_tls_said(settings.database)} and {" and ".join(TABLES)} exist')
        else:
            report.fail(f'the database has no {" and no ".join(missing)} table',
                        'run: python -m wsgiapp initdb (then GRANT the app user on it: docs/deploy.rst, step 2)')
    finally:
        con.close()


def _tls_said(kwargs):
    mode = kwargs.get('ssl_mode')
    return f' over TLS ({mode})' if mode else ''


def _connect(report, settings, server, variable):
    """A connection to `server` (the primary when None), or None and a failure saying why:
    a certificate not trusted or not for that name is an error, never a fallback to clear text."""
    try:
        return MySQLdb.connect(**connect_kwargs(settings, server, connect_timeout=2, read_timeout=2))
    except MySQLdb.OperationalError as error:
        code = error.args[0] if error.args else 0
        if code in (1044, 1045, 1698):
            fix = (f'check the user and password in {variable} and the GRANT (docs/deploy.rst, step 2); '
                   'a server with require_secure_transport refuses a login without TLS the same way: '
                   'add ?ssl-ca=PATH (docs/configuration.rst)')
        elif code == 1049:
            fix = f'create the database named in {variable}, or fix its name'
        elif code == 2026:
            fix = (f'TLS failed: ssl-ca in {variable} must be the CA that signed the server\'s certificate, '
                   'and HOST a name or address on that certificate (docs/configuration.rst)')
        else:
            fix = f'start MariaDB, or fix the host, port or unix_socket in {variable}'
        report.fail(f'the database refused or could not be reached ({variable}): {describe(error)}', fix)
        return None


def run_checks(report, args, environ):
    env_file = _env_file(args.env_file)
    if env_file:
        environ = {**environ, **check_env_file(report, env_file)}  # as systemd would hand them to uwsgi
    else:
        report.ok('no environment file: checking this process\'s environment (--env-file)')
    run_dir = environ.get('WSGIAPP_RUN_DIR') or DEFAULT_RUN_DIR
    socket_path = args.socket or os.path.join(run_dir, 'uwsgi.sock')
    try:
        nginx_user = pwd.getpwnam(args.nginx_user)
    except KeyError:
        nginx_user = None
        report.fail(f'there is no user {args.nginx_user!r} to check the socket and files against',
                    "pass --nginx-user with the user in nginx's 'user' directive")
    check_ini(report, args.ini)
    check_socket(report, socket_path, nginx_user)
    site = check_nginx(report, args.nginx_conf, socket_path)
    if site is not None:
        check_default_site(report, args.nginx_conf, site, args.nginx_sites_enabled)
    if nginx_user is not None:
        check_reach(report, nginx_user, socket_path, [args.static_root] if args.static_root else static_roots(site))
        check_socket_group(report, socket_path, nginx_user)
    check_uwsgi_user(report, args.pidfile or os.path.join(run_dir, 'uwsgi.pid'), bool(args.pidfile),
                     args.private_stack)
    check_settings(report, environ)


def main(args, environ=None, out=print):
    environ = os.environ if environ is None else environ
    report = Report(out)
    try:
        run_checks(report, args, environ)
    except BrokenPipeError:
        raise  # the reader has gone (check | head): nothing more can be said to it
    except Exception as error:  # a diagnosis must end in a verdict, never in a traceback
        report.fail(f'the check itself failed: {type(error).__name__}: {error}',
                    'fix what it names, or run the check as root; the lines above still stand')
    out(f'{report.failed} problem(s) found' if report.failed else 'all checks passed')
    return 1 if report.failed else 0


def add_arguments(parser):
    parser.add_argument('--ini', default='conf/uwsgi.ini', help='uwsgi config (default: %(default)s)')
    parser.add_argument('--socket',
                        help='uwsgi socket (default: $WSGIAPP_RUN_DIR/uwsgi.sock or /run/wsgiapp/uwsgi.sock)')
    parser.add_argument('--pidfile',
                        help="uwsgi's pid file (default: $WSGIAPP_RUN_DIR/uwsgi.pid or /run/wsgiapp/uwsgi.pid)")
    parser.add_argument('--env-file',
                        help=f"the unit's EnvironmentFile=, read as systemd reads it; its values override this "
                             f"process's environment (default: {DEFAULT_ENV_FILE} when it exists; '' for none)")
    parser.add_argument('--nginx-conf', default='/etc/nginx/sites-enabled/wsgiapp',
                        help='nginx site file (default: %(default)s)')
    parser.add_argument('--nginx-sites-enabled', default='/etc/nginx/sites-enabled',
                        help='where nginx finds the other sites that may take our port (default: %(default)s)')
    parser.add_argument('--nginx-user', default='www-data',
                        help="the user nginx's workers run as (default: %(default)s)")
    parser.add_argument('--static-root',
                        help="the static files nginx serves (default: the site's alias and root paths)")
    parser.add_argument('--private-stack', action='store_true',
                        help='a development stack (make run) that runs as whoever started it, even root')
