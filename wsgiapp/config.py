"""Settings, read once from the environment: nothing secret lives in code or git."""
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import unquote_to_bytes


class ConfigError(ValueError):
    """A setting is malformed. The message names the variable, never its value."""


@dataclass(frozen=True)
class Settings:
    database: Optional[dict]   # MySQLdb.connect() keyword arguments, None when unusable
    database_problem: str      # why `database` is None, naming the variable
    api_token: Optional[str]   # None: writes are disabled
    pool_size: int = 8         # connections per process
    pool_timeout: float = 2.0  # seconds a request waits for a free connection
    connect_timeout: int = 2   # seconds
    read_timeout: int = 10     # seconds, also used as the write timeout
    max_body: int = 65536      # bytes
    cache_seconds: int = 1     # how long nginx (a shared cache) may answer a read without the app
    stale_if_error: int = 60   # how long past that it may answer while the database is away
    replica_databases: tuple = ()  # connect() kwargs of each replica (DATABASE_REPLICA_URL)
    replica_wait: float = 0.5  # how long a read with a token waits for its replica to catch up
    replica_max_lag: float = 5.0  # how stale a read without a token may be
    # Signs consistency tokens (token_key() below); None: no token is trusted. Derived from
    # the secrets above or WSGIAPP_TOKEN_SECRET, so neither compared nor shown (__repr__).
    token_key: Optional[bytes] = field(default=None, compare=False)
    # Where each uwsgi worker keeps its metrics (wsgiapp/metrics.py); None: no metrics.
    metrics_dir: Optional[str] = None

    def __repr__(self):  # never show the password or the token, e.g. in a traceback
        return (f'Settings(database={"set" if self.database else None}, '
                f'api_token={"set" if self.api_token else None}, pool_size={self.pool_size}, '
                f'pool_timeout={self.pool_timeout}, connect_timeout={self.connect_timeout}, '
                f'read_timeout={self.read_timeout}, max_body={self.max_body}, '
                f'cache_seconds={self.cache_seconds}, stale_if_error={self.stale_if_error}, '
                f'replica_databases={len(self.replica_databases)}, replica_wait={self.replica_wait}, '
                f'replica_max_lag={self.replica_max_lag})')


# The numbers: variable -> (Settings field, default, minimum, maximum, type).
NUMBERS = {
    'WSGIAPP_POOL_SIZE': ('pool_size', 8, 1, 1000, int),
    'WSGIAPP_POOL_TIMEOUT': ('pool_timeout', 2.0, 0.0, 60.0, float),
    'WSGIAPP_DB_CONNECT_TIMEOUT': ('connect_timeout', 2, 1, 60, int),
    'WSGIAPP_DB_READ_TIMEOUT': ('read_timeout', 10, 1, 3600, int),
    'WSGIAPP_MAX_BODY': ('max_body', 65536, 1024, 64 * 1024 * 1024, int),
    'WSGIAPP_CACHE_SECONDS': ('cache_seconds', 1, 0, 3600, int),
    'WSGIAPP_STALE_IF_ERROR': ('stale_if_error', 60, 0, 86400, int),
    'WSGIAPP_REPLICA_WAIT': ('replica_wait', 0.5, 0.0, 10.0, float),
    'WSGIAPP_REPLICA_MAX_LAG': ('replica_max_lag', 5.0, 0.0, 3600.0, float),
}

DATABASE_URL_FORM = 'mysql://USER:PASSWORD@HOST[:PORT]/DBNAME or mysql://USER:PASSWORD@/DBNAME?unix_socket=PATH'
ENCODE_HINT = ("percent-encode every reserved character in the user and password, "
               "e.g. urllib.parse.quote(password, safe='')")
# Unencoded in a user or password, these end or split the part of the URL they are in: the
# URL would mean something else, so it is refused rather than guessed at.
RESERVED_IN_USERINFO = frozenset('@/?#[]')
STRAY_PERCENT = re.compile(r'%(?![0-9A-Fa-f]{2})')
HOST_PORT = re.compile(r'(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]*))(?::(?P<port>[0-9]{1,5}))?')


class _Malformed(Exception):
    """What is wrong with DATABASE_URL, in words that never quote it."""


def parse_database_url(url, name='DATABASE_URL'):
    """mysql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?OPTIONS] -> connect() kwargs; OPTIONS are
    unix_socket=PATH and TLS's ssl-mode, ssl-ca, ssl-cert, ssl-key (_tls() below).

    User and password may hold any character, percent-encoded. Whatever the text, the only
    exception is a ConfigError that names the variable (`name`) and the expected form, never
    the value.
    """
    try:
        kwargs = _parse(url.strip())
    except _Malformed as problem:
        # Where a password would be, however malformed the rest: up to the last '@'.
        userinfo = url.partition('://')[2].rpartition('@')[0]
        unencoded = RESERVED_IN_USERINFO & set(userinfo) or STRAY_PERCENT.search(userinfo)
        raise ConfigError(f'{name} {problem}; expected {DATABASE_URL_FORM}'
                          + (f'; {ENCODE_HINT}' if unencoded else '')) from None
    check_tls_files(kwargs, name)
    return kwargs


def _parse(url):
    scheme, sep, rest = url.partition('://')
    if not sep or scheme.lower() not in ('mysql', 'mariadb'):
        raise _Malformed('does not start with mysql://')
    if '#' in rest:
        raise _Malformed('has an unencoded "#"')
    # The user and host part ends at the first '/' or '?' (RFC 3986), so an unencoded one in
    # the password cuts it short; the checks below then fail rather than misread it.
    end = min([i for i in (rest.find('/'), rest.find('?')) if i >= 0] or [len(rest)])
    authority, path_and_query = rest[:end], rest[end:]
    userinfo, at, host_port = authority.rpartition('@')
    if not at:
        raise _Malformed('has no USER@ before the host')
    if RESERVED_IN_USERINFO & set(userinfo):
        raise _Malformed('has an unencoded reserved character in the user or password')
    user, colon, password = userinfo.partition(':')
    if not user:
        raise _Malformed('names no user')
    kwargs = {'user': _decode(user, 'user')}
    if colon:
        kwargs['password'] = _decode(password, 'password')

    host = HOST_PORT.fullmatch(host_port)
    if not host:
        raise _Malformed('has a malformed host or port (a name or [IPv6 address], then :NUMBER)')
    if host['ipv6'] or host['name']:
        kwargs['host'] = host['ipv6'] or host['name']
    if host['port'] is not None:
        if 'host' not in kwargs:
            raise _Malformed('has a port but no host')
        if not 1 <= int(host['port']) <= 65535:
            raise _Malformed('has a port that is not a number from 1 to 65535')
        kwargs['port'] = int(host['port'])

    if not path_and_query.startswith('/'):
        raise _Malformed('names no database')
    path, _, query = path_and_query[1:].partition('?')
    database = _decode(path, 'database name')
    if not database or '/' in database:
        raise _Malformed('names no database')
    kwargs['database'] = database
    options = {}
    for option in filter(None, query.split('&')):
        key, _, value = option.partition('=')
        key = OPTIONS.get(key)
        if not key or not value:
            raise _Malformed(f'has an option other than {KNOWN_OPTIONS}')
        options[key] = _decode(value, key)  # the last one of a name counts
    if 'unix_socket' in options:
        kwargs['unix_socket'] = options.pop('unix_socket')
    if 'host' not in kwargs and 'unix_socket' not in kwargs:
        raise _Malformed('names no host, and no ?unix_socket=PATH')
    kwargs.update(_tls(options))
    return kwargs


# The query's options: the names of the MySQL and MariaDB command-line clients (--ssl-ca...).
# ssl_ca... (SQLAlchemy's and mysqlclient's spelling) is ssl-ca.
OPTIONS = {'unix_socket': 'unix_socket', **{name: name for name in ('ssl-mode', 'ssl-ca', 'ssl-cert', 'ssl-key')},
           **{name.replace('-', '_'): name for name in ('ssl-mode', 'ssl-ca', 'ssl-cert', 'ssl-key')}}
KNOWN_OPTIONS = 'unix_socket=PATH, ssl-mode=MODE, ssl-ca=PATH, ssl-cert=PATH and ssl-key=PATH'
# ssl-mode's values, as MySQL's clients spell them. PREFERRED is refused: it falls back to
# clear text, unnoticed. With MariaDB Connector/C (what mysqlclient is built on here) both
# VERIFY_CA and VERIFY_IDENTITY check the chain and the name (MYSQL_OPT_SSL_VERIFY_SERVER_CERT).
SSL_MODES = ('DISABLED', 'REQUIRED', 'VERIFY_CA', 'VERIFY_IDENTITY')
TLS_FILES = {'ssl-ca': 'ca', 'ssl-cert': 'cert', 'ssl-key': 'key'}


def _tls(options):
    """connect() kwargs for the ssl-* options: ssl={'ca', 'cert', 'key'} and ssl_mode. Asked
    for at all (any ssl-* option), TLS is verified unless ssl-mode says less: VERIFY_IDENTITY,
    the chain to ssl-ca (or the system's CAs) and the server's name."""
    mode = options.pop('ssl-mode', None)
    if mode is not None:
        mode = mode.upper()
        if mode == 'PREFERRED':
            raise _Malformed('has ssl-mode=PREFERRED, which falls back to clear text unnoticed; '
                             'use VERIFY_IDENTITY (or REQUIRED)')
        if mode not in SSL_MODES:
            raise _Malformed(f'has an ssl-mode other than {", ".join(SSL_MODES)}')
    if mode == 'DISABLED':
        if options:
            raise _Malformed('has ssl-mode=DISABLED with ssl-ca, ssl-cert or ssl-key')
        return {}
    if ('ssl-cert' in options) != ('ssl-key' in options):
        raise _Malformed('has one of ssl-cert and ssl-key without the other')
    if mode is None and not options:
        return {}
    tls = {'ssl_mode': mode or 'VERIFY_IDENTITY'}
    if options:
        tls['ssl'] = {TLS_FILES[key]: path for key, path in options.items()}
    return tls


def check_tls_files(kwargs, name):
    """ConfigError naming `name` and the option when a file of ssl={...} cannot be read: found
    at start-up, not at the first connection."""
    for key, path in (kwargs.get('ssl') or {}).items():
        try:
            with open(path, 'rb'):
                pass
        except OSError as error:
            option = next(option for option, field in TLS_FILES.items() if field == key)
            raise ConfigError(f'{name}: the {option} file cannot be read ({error.strerror})') from None


def _decode(text, what):
    """Percent-decoded UTF-8. A '%' that starts no %XX escape was meant literally, and would
    be read differently by other tools: refused, like a byte sequence that is not UTF-8."""
    if STRAY_PERCENT.search(text):
        raise _Malformed(f'has a "%" in the {what} that starts no %XX escape')
    try:
        return unquote_to_bytes(text).decode('utf-8')
    except UnicodeDecodeError:
        raise _Malformed(f'has a {what} that is not UTF-8 once percent-decoded') from None


def number(environ, name):
    """The value of one of NUMBERS, its default when unset, or ConfigError naming it."""
    _, default, minimum, maximum, kind = NUMBERS[name]
    raw = environ.get(name, '').strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f'{name} must be a number from {minimum} to {maximum}') from None
    if not minimum <= value <= maximum:  # also refuses nan
        raise ConfigError(f'{name} must be a number from {minimum} to {maximum}')
    return value


def from_environ(environ=None):
    """Build Settings. A bad DATABASE_URL disables the database routes (503); a bad number
    raises ConfigError, and nothing else is raised."""
    environ = os.environ if environ is None else environ
    url = environ.get('DATABASE_URL', '')
    database, problem = None, ''
    if not url.strip():
        problem = 'DATABASE_URL is not set'
    else:
        try:
            database = parse_database_url(url)
        except ConfigError as error:
            problem = str(error)
    return Settings(
        database=database,
        database_problem=problem,
        replica_databases=replica_urls(environ.get('DATABASE_REPLICA_URL', '')),
        api_token=environ.get('WSGIAPP_API_TOKEN') or None,
        token_key=token_key(environ),
        metrics_dir=environ.get('WSGIAPP_METRICS_DIR') or None,
        **{field: number(environ, name) for name, (field, *_) in NUMBERS.items()},
    )


def replica_urls(value):
    """DATABASE_REPLICA_URL: one or more URLs of DATABASE_URL's form, comma-separated (a comma
    in a password is percent-encoded, %2C). A malformed one is a ConfigError: uwsgi refuses
    to start, rather than send every read to the primary unnoticed."""
    return tuple(parse_database_url(url, 'DATABASE_REPLICA_URL') for url in value.split(',') if url.strip())


# The label of the key derived from WSGIAPP_API_TOKEN: a key for this one use, from which
# neither the API token nor a key for anything else can be computed.
TOKEN_KEY_LABEL = b'wsgiapp consistency-token key v1'


def token_key(environ):
    """The key that signs consistency tokens (replicas.sign_position): WSGIAPP_TOKEN_SECRET
    when set, else one derived from WSGIAPP_API_TOKEN (HMAC-SHA256 under it, of a label), so
    one secret is enough; None when neither is set: then no token is trusted, and every read
    that carries one goes to the primary at once. Every app host of a deployment must get the
    same secret, or a host will not trust the tokens the others issue."""
    secret = environ.get('WSGIAPP_TOKEN_SECRET') or environ.get('WSGIAPP_API_TOKEN')
    if not secret:
        return None
    return hmac.new(secret.encode('utf-8'), TOKEN_KEY_LABEL, hashlib.sha256).digest()
