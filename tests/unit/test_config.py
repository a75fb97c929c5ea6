"""Settings come from the environment; a bad DATABASE_URL never leaks its password."""
import hashlib
import hmac
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgiapp import config


@pytest.mark.parametrize('url, expected', [
    ('mysql://app:pw@db.example:3307/shop',
     {'user': 'app', 'password': 'pw', 'host': 'db.example', 'port': 3307, 'database': 'shop'}),
    ('mysql://app@localhost/shop', {'user': 'app', 'host': 'localhost', 'database': 'shop'}),
    ('mysql://a%40b:p%40ss%3Aw%2Fo%25rd%23@h/d',
     {'user': 'a@b', 'password': 'p@ss:w/o%rd#', 'host': 'h', 'database': 'd'}),
    ('mysql://u:p@localhost/d?unix_socket=/run/mysqld/mysqld.sock',
     {'user': 'u', 'password': 'p', 'host': 'localhost', 'database': 'd', 'unix_socket': '/run/mysqld/mysqld.sock'}),
    ('mysql://u:p@/d?unix_socket=/tmp/x.sock',
     {'user': 'u', 'password': 'p', 'database': 'd', 'unix_socket': '/tmp/x.sock'}),
    ('mysql://u:@h/d', {'user': 'u', 'password': '', 'host': 'h', 'database': 'd'}),
    ('mariadb://u:p@[::1]:3306/d', {'user': 'u', 'password': 'p', 'host': '::1', 'port': 3306, 'database': 'd'}),
    # RFC 3986 allows ':' and the sub-delimiters unencoded in a password; non-ASCII as is.
    ("mysql://u:a:b!$&'()*+,;=é@h/d", {'user': 'u', 'password': "a:b!$&'()*+,;=é", 'host': 'h', 'database': 'd'}),
])
def test_database_url_forms(url, expected):
    assert config.parse_database_url(url) == expected


@given(st.text(min_size=1), st.text())
def test_any_user_and_password_percent_encoded_round_trip(user, password):
    url = f"mysql://{quote(user, safe='')}:{quote(password, safe='')}@db.example:3306/app"
    assert config.parse_database_url(url) == {
        'user': user, 'password': password, 'host': 'db.example', 'port': 3306, 'database': 'app'}


@pytest.mark.parametrize('url, reserved', [
    ('postgres://u:topsecret@h/d', False),
    ('mysql://u:topsecret@h/', False),
    ('mysql://u:topsecret@h', False),
    ('mysql://:topsecret@h/d', False),
    ('mysql://u:topsecret@h:99999/d', False),
    ('mysql://u:topsecret@h:0/d', False),
    ('mysql://u:topsecret@h:port/d', False),
    ('mysql://u:topsecret@h:/d', False),
    ('mysql://u:topsecret@:3306/d', False),
    ('mysql://u:topsecret@/d', False),
    ('mysql://u:topsecret@h/d?ssl=1', False),
    ('mysql://u:topsecret@h/d?unix_socket=', False),
    ('mysql://u:topsecret@h/a%2Fb', False),
    ('mysql://u:topsecret@h/d#frag', False),
    ('mysql://u:top%FFsecret@h/d', False),
    ('topsecret', False),
    ('mysql:topsecret', False),
    ('mysql://', False),
    ('mysql://u:top[secret@h/d', True),
    ('mysql://u:top]secret@h/d', True),
    ('mysql://u:top#secret@h/d', True),
    ('mysql://u:top?secret@h/d', True),
    ('mysql://u:top/secret@h/d', True),
    ('mysql://u:top@secret@h/d', True),
    ('mysql://u:100%topsecret@h/d', True),
    ('mysql://u:[topsecret]@[::1]/d', True),
])
def test_malformed_database_url_names_the_variable_not_the_password(url, reserved):
    settings = config.from_environ({'DATABASE_URL': url})
    assert settings.database is None
    assert settings.database_problem.startswith('DATABASE_URL ')
    assert 'mysql://USER:PASSWORD@HOST' in settings.database_problem  # the expected form
    assert 'topsecret' not in settings.database_problem and 'secret' not in settings.database_problem
    assert ("quote(password, safe='')" in settings.database_problem) == reserved


@given(st.text(alphabet=st.sampled_from('mysql:/@[]#?%&=_:.-09aé ' + chr(0)), max_size=40) | st.text())
def test_any_text_in_database_url_is_a_setting_or_a_config_error(url):
    for text in (url, 'mysql://' + url):
        try:
            kwargs = config.parse_database_url(text)
        except config.ConfigError as error:
            assert str(error).startswith('DATABASE_URL ')
        else:
            assert kwargs['user'] and kwargs['database']
        assert config.from_environ({'DATABASE_URL': text})  # never raises for DATABASE_URL


def test_defaults_and_overrides():
    defaults = config.from_environ({})
    assert (defaults.pool_size, defaults.pool_timeout, defaults.max_body) == (8, 2.0, 65536)
    assert defaults.api_token is None and defaults.database_problem == 'DATABASE_URL is not set'
    tuned = config.from_environ({'WSGIAPP_POOL_SIZE': '3', 'WSGIAPP_POOL_TIMEOUT': '0.5',
                                 'WSGIAPP_DB_CONNECT_TIMEOUT': '4', 'WSGIAPP_DB_READ_TIMEOUT': '7',
                                 'WSGIAPP_MAX_BODY': '2048', 'WSGIAPP_API_TOKEN': 't'})
    assert (tuned.pool_size, tuned.pool_timeout, tuned.connect_timeout, tuned.read_timeout,
            tuned.max_body, tuned.api_token) == (3, 0.5, 4, 7, 2048, 't')


@pytest.mark.parametrize('name, value', [('WSGIAPP_POOL_SIZE', 'many'), ('WSGIAPP_POOL_SIZE', '0'),
                                         ('WSGIAPP_MAX_BODY', '-1'), ('WSGIAPP_POOL_TIMEOUT', 'soon'),
                                         ('WSGIAPP_POOL_TIMEOUT', 'nan'), ('WSGIAPP_DB_READ_TIMEOUT', '9' * 5000)])
def test_bad_numbers_fail_loudly_at_start_naming_the_variable(name, value):
    with pytest.raises(config.ConfigError, match=name):
        config.from_environ({name: value})


@given(st.sampled_from(sorted(config.NUMBERS)), st.text())
def test_a_number_is_a_value_in_range_or_a_config_error(name, raw):
    try:
        value = config.number({name: raw}, name)
    except config.ConfigError as error:
        assert name in str(error)
    else:
        _, _, minimum, maximum, _ = config.NUMBERS[name]
        assert minimum <= value <= maximum


def test_repr_hides_password_and_token():
    settings = config.from_environ({'DATABASE_URL': 'mysql://u:hunter2@h/d', 'WSGIAPP_API_TOKEN': 'tok-xyz'})
    assert 'hunter2' not in repr(settings) and 'tok-xyz' not in repr(settings)


FORM = 'mysql://USER:PASSWORD@HOST[:PORT]/DBNAME or mysql://USER:PASSWORD@/DBNAME?unix_socket=PATH'
HINT = "percent-encode every reserved character in the user and password, e.g. urllib.parse.quote(password, safe='')"


def problem_of(url, name='DATABASE_URL'):
    with pytest.raises(config.ConfigError) as caught:
        config.parse_database_url(url, name) if name != 'DATABASE_URL' else config.parse_database_url(url)
    return str(caught.value)


@pytest.mark.parametrize('url, problem, hint', [
    ('mysql', 'does not start with mysql://', False),
    ('mysql:/u:p@h/d', 'does not start with mysql://', False),
    ('mysqlx://u:p@h/d', 'does not start with mysql://', False),
    ('http://u:p@h/d?x=mysql://u:p@h/d', 'does not start with mysql://', True),
    ('mysql://u:p@h/d#x', 'has an unencoded "#"', False),
    ('mysql://u:p#@h/d', 'has an unencoded "#"', True),
    ('mysql://h/d', 'has no USER@ before the host', False),
    ('mysql://?u@h/d', 'has no USER@ before the host', True),
    ('mysql:///u@h/d', 'has no USER@ before the host', True),
    ('mysql://u:p@ss@h/d', 'has an unencoded reserved character in the user or password', True),
    ('mysql://u:[p]@h/d', 'has an unencoded reserved character in the user or password', True),
    ('mysql://:p@h/d', 'names no user', False),
    ('mysql://@h/d', 'names no user', False),
    ('mysql://u%:p@h/d', 'has a "%" in the user that starts no %XX escape', True),
    ('mysql://u:p%zz@h/d', 'has a "%" in the password that starts no %XX escape', True),
    ('mysql://u:p@h/d%', 'has a "%" in the database name that starts no %XX escape', False),
    ('mysql://u:p@/d?unix_socket=/a%b', 'has a "%" in the unix_socket that starts no %XX escape', False),
    ('mysql://u%FF:p@h/d', 'has a user that is not UTF-8 once percent-decoded', False),
    ('mysql://u:%C3%28@h/d', 'has a password that is not UTF-8 once percent-decoded', False),
    ('mysql://u:p@h/%FF', 'has a database name that is not UTF-8 once percent-decoded', False),
    ('mysql://u:p@/d?unix_socket=%FF', 'has a unix_socket that is not UTF-8 once percent-decoded', False),
    ('mysql://u:p@h h/d', 'has a malformed host or port (a name or [IPv6 address], then :NUMBER)', False),
    ('mysql://u:p@[::1/d', 'has a malformed host or port (a name or [IPv6 address], then :NUMBER)', False),
    ('mysql://u:p@h:123456/d', 'has a malformed host or port (a name or [IPv6 address], then :NUMBER)', False),
    ('mysql://u:p@:3306/d', 'has a port but no host', False),
    ('mysql://u:p@h:0/d', 'has a port that is not a number from 1 to 65535', False),
    ('mysql://u:p@h:65536/d', 'has a port that is not a number from 1 to 65535', False),
    ('mysql://u:p@h', 'names no database', False),
    ('mysql://u:p@h/', 'names no database', False),
    ('mysql://u:p@h?unix_socket=/s', 'names no database', False),
    ('mysql://u:p@h/a/b', 'names no database', False),
    ('mysql://u:p@h/a%2Fb', 'names no database', False),
    ('mysql://u:p@h/d?ssl=1', 'has an option other than ' + config.KNOWN_OPTIONS, False),
    ('mysql://u:p@h/d?unix_socket=', 'has an option other than ' + config.KNOWN_OPTIONS, False),
    ('mysql://u:p@h/d?unix_socket', 'has an option other than ' + config.KNOWN_OPTIONS, False),
    ('mysql://u:p@h/d?Unix_socket=/s', 'has an option other than ' + config.KNOWN_OPTIONS, False),
    ('mysql://u:p@h/d?unix_socket=/s&x=1', 'has an option other than ' + config.KNOWN_OPTIONS, False),
    ('mysql://u:p@/d', 'names no host, and no ?unix_socket=PATH', False),
    ('mysql://u@h?unix_socket=/s?x', 'names no database', False),
    ('mysql://u:p@/d?', 'names no host, and no ?unix_socket=PATH', False),
])
def test_each_malformed_url_says_what_is_wrong(url, problem, hint):
    expected = f'DATABASE_URL {problem}; expected {FORM}' + (f'; {HINT}' if hint else '')
    assert problem_of(url) == expected
    assert problem_of(url, 'DATABASE_REPLICA_URL') == expected.replace('DATABASE_URL', 'DATABASE_REPLICA_URL', 1)


@pytest.mark.parametrize('url, expected', [
    ('MySQL://u@h/d', {'user': 'u', 'host': 'h', 'database': 'd'}),
    ('MARIADB://u@h/d', {'user': 'u', 'host': 'h', 'database': 'd'}),
    ('  mysql://u@h/d\n', {'user': 'u', 'host': 'h', 'database': 'd'}),
    ('mysql://u@h:1/d', {'user': 'u', 'host': 'h', 'port': 1, 'database': 'd'}),
    ('mysql://u@h:65535/d', {'user': 'u', 'host': 'h', 'port': 65535, 'database': 'd'}),
    ('mysql://u@h:00080/d', {'user': 'u', 'host': 'h', 'port': 80, 'database': 'd'}),
    ('mysql://u@10.0.0.1:3306/d', {'user': 'u', 'host': '10.0.0.1', 'port': 3306, 'database': 'd'}),
    ('mysql://u@[fe80::1%25eth0]/d', None),  # a zone id is not in HOST_PORT: refused below
    ('mysql://u@/d?unix_socket=/run/a?b', {'user': 'u', 'database': 'd', 'unix_socket': '/run/a?b'}),
    ('mysql://u@/d?unix_socket=/a=b', {'user': 'u', 'database': 'd', 'unix_socket': '/a=b'}),
    ('mysql://u@/d?unix_socket=/a://b', {'user': 'u', 'database': 'd', 'unix_socket': '/a://b'}),
    ('mysql://u@/d?&unix_socket=/s&', {'user': 'u', 'database': 'd', 'unix_socket': '/s'}),
    ('mysql://u@/d?unix_socket=/a&unix_socket=/b', {'user': 'u', 'database': 'd', 'unix_socket': '/b'}),
    ('mysql://u@/d?unix_socket=%2Frun%2Fs%20t', {'user': 'u', 'database': 'd', 'unix_socket': '/run/s t'}),
    ('mysql://u@h/d%20b%C3%A9', {'user': 'u', 'host': 'h', 'database': 'd bé'}),
    ('mysql://u%3Ax:p%3Ay@h/d', {'user': 'u:x', 'password': 'p:y', 'host': 'h', 'database': 'd'}),
    ('mysql://u@h/d?', {'user': 'u', 'host': 'h', 'database': 'd'}),
])
def test_more_database_url_forms(url, expected):
    if expected is None:
        with pytest.raises(config.ConfigError):
            config.parse_database_url(url)
    else:
        assert config.parse_database_url(url) == expected


def test_the_hint_looks_only_where_the_password_is():
    # A reserved character after the last '@' (the host, the path) is no reason to hint at encoding.
    assert HINT not in problem_of('mysql://u:p@h/d?a=b')
    assert HINT not in problem_of('mysql://u:p@h:x/d')
    assert HINT in problem_of('mysql://u:p%@h:x/d')
    assert HINT in problem_of('x://u:p?@h/d')
    assert HINT in problem_of('mysql://u:p]://q@h/d')


def test_a_replica_url_list():
    first, second = 'mysql://u:p@r1/d', 'mysql://v:p%2Cq@r2:3307/e'
    assert config.replica_urls('') == ()
    assert config.replica_urls(first) == ({'user': 'u', 'password': 'p', 'host': 'r1', 'database': 'd'},)
    assert config.replica_urls(f' {first} ,, {second}, ') == (
        {'user': 'u', 'password': 'p', 'host': 'r1', 'database': 'd'},
        {'user': 'v', 'password': 'p,q', 'host': 'r2', 'port': 3307, 'database': 'e'})
    with pytest.raises(config.ConfigError) as caught:
        config.replica_urls(f'{first},mysql://u:topsecret@r2')
    assert str(caught.value) == f'DATABASE_REPLICA_URL names no database; expected {FORM}'


def test_from_environ_reads_every_setting():
    settings = config.from_environ({
        'DATABASE_URL': 'mysql://app:pw@db:3307/shop',
        'DATABASE_REPLICA_URL': 'mysql://app:pw@r1/shop,mysql://app:pw@r2/shop',
        'WSGIAPP_API_TOKEN': 'tok',
        'WSGIAPP_POOL_SIZE': '3', 'WSGIAPP_POOL_TIMEOUT': '0.5', 'WSGIAPP_DB_CONNECT_TIMEOUT': '4',
        'WSGIAPP_DB_READ_TIMEOUT': '7', 'WSGIAPP_MAX_BODY': '2048', 'WSGIAPP_CACHE_SECONDS': '0',
        'WSGIAPP_STALE_IF_ERROR': '120', 'WSGIAPP_REPLICA_WAIT': '1.5', 'WSGIAPP_REPLICA_MAX_LAG': '0.25',
    })
    assert settings == config.Settings(
        database={'user': 'app', 'password': 'pw', 'host': 'db', 'port': 3307, 'database': 'shop'},
        database_problem='', api_token='tok', pool_size=3, pool_timeout=0.5, connect_timeout=4, read_timeout=7,
        max_body=2048, cache_seconds=0, stale_if_error=120,
        replica_databases=({'user': 'app', 'password': 'pw', 'host': 'r1', 'database': 'shop'},
                           {'user': 'app', 'password': 'pw', 'host': 'r2', 'database': 'shop'}),
        replica_wait=1.5, replica_max_lag=0.25)


def test_from_environ_defaults():
    assert config.from_environ({}) == config.Settings(
        database=None, database_problem='DATABASE_URL is not set', api_token=None, pool_size=8, pool_timeout=2.0,
        connect_timeout=2, read_timeout=10, max_body=65536, cache_seconds=1, stale_if_error=60,
        replica_databases=(), replica_wait=0.5, replica_max_lag=5.0)
    blank = config.from_environ({'DATABASE_URL': '  ', 'WSGIAPP_API_TOKEN': '', 'DATABASE_REPLICA_URL': ' '})
    assert (blank.database, blank.database_problem, blank.api_token, blank.replica_databases) == (
        None, 'DATABASE_URL is not set', None, ())


def test_from_environ_reads_os_environ_by_default(monkeypatch):
    for name in list(config.NUMBERS) + ['DATABASE_REPLICA_URL']:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('DATABASE_URL', 'mysql://u@h/d')
    monkeypatch.setenv('WSGIAPP_API_TOKEN', 'from-env')
    monkeypatch.setenv('WSGIAPP_POOL_SIZE', '5')
    settings = config.from_environ()
    assert (settings.database, settings.api_token, settings.pool_size) == (
        {'user': 'u', 'host': 'h', 'database': 'd'}, 'from-env', 5)


def test_a_malformed_database_url_is_a_problem_not_an_exception():
    settings = config.from_environ({'DATABASE_URL': 'mysql://u:p@h'})
    assert (settings.database, settings.database_problem) == (None, f'DATABASE_URL names no database; expected {FORM}')


# Every number: its default, its bounds (inclusive) and its type.
RANGES = [
    ('WSGIAPP_POOL_SIZE', 8, '1', 1, '1000', 1000, '0', '1001', '2.5'),
    ('WSGIAPP_POOL_TIMEOUT', 2.0, '0', 0.0, '60', 60.0, '-0.001', '60.5', 'inf'),
    ('WSGIAPP_DB_CONNECT_TIMEOUT', 2, '1', 1, '60', 60, '0', '61', '1.0'),
    ('WSGIAPP_DB_READ_TIMEOUT', 10, '1', 1, '3600', 3600, '0', '3601', 'ten'),
    ('WSGIAPP_MAX_BODY', 65536, '1024', 1024, '67108864', 67108864, '1023', '67108865', '64k'),
    ('WSGIAPP_CACHE_SECONDS', 1, '0', 0, '3600', 3600, '-1', '3601', '1s'),
    ('WSGIAPP_STALE_IF_ERROR', 60, '0', 0, '86400', 86400, '-1', '86401', '0x10'),
    ('WSGIAPP_REPLICA_WAIT', 0.5, '0.0', 0.0, '10', 10.0, '-0.1', '10.01', 'nan'),
    ('WSGIAPP_REPLICA_MAX_LAG', 5.0, '0', 0.0, '3600.0', 3600.0, '-1', '3600.5', ''),
]


@pytest.mark.parametrize('name, default, low, low_value, high, high_value, under, over, bad', RANGES)
def test_each_number_default_bounds_and_errors(name, default, low, low_value, high, high_value, under, over, bad):
    assert config.number({}, name) == default
    assert config.number({name: '   '}, name) == default
    assert config.number({name: f' {low} '}, name) == low_value
    assert type(config.number({name: low}, name)) is type(default)
    assert config.number({name: high}, name) == high_value
    for wrong in (under, over) + ((bad,) if bad else ()):
        with pytest.raises(config.ConfigError) as caught:
            config.number({name: wrong}, name)
        assert str(caught.value) == f'{name} must be a number from {low_value} to {high_value}'


def test_an_unknown_number_is_a_programming_error():
    with pytest.raises(KeyError):
        config.number({}, 'WSGIAPP_NOTHING')


def test_repr_says_what_is_set():
    assert repr(config.from_environ({})) == (
        'Settings(database=None, api_token=None, pool_size=8, pool_timeout=2.0, connect_timeout=2, '
        'read_timeout=10, max_body=65536, cache_seconds=1, stale_if_error=60, replica_databases=0, '
        'replica_wait=0.5, replica_max_lag=5.0)')
    assert repr(config.from_environ({
        'DATABASE_URL': 'mysql://u:hunter2@h/d', 'WSGIAPP_API_TOKEN': 'tok-xyz',
        'DATABASE_REPLICA_URL': 'mysql://u:hunter2@r/d'})) == (
        'Settings(database=set, api_token=set, pool_size=8, pool_timeout=2.0, connect_timeout=2, '
        'read_timeout=10, max_body=65536, cache_seconds=1, stale_if_error=60, replica_databases=1, '
        'replica_wait=0.5, replica_max_lag=5.0)')


def _hmac_key(secret):
    return hmac.new(secret.encode('utf-8'), b'wsgiapp consistency-token key v1', hashlib.sha256).digest()


@pytest.mark.parametrize('environ, secret', [
    ({}, None),
    ({'WSGIAPP_API_TOKEN': '', 'WSGIAPP_TOKEN_SECRET': ''}, None),
    ({'WSGIAPP_API_TOKEN': 'tok'}, 'tok'),
    ({'WSGIAPP_TOKEN_SECRET': 'sécret'}, 'sécret'),
    ({'WSGIAPP_TOKEN_SECRET': 'sécret', 'WSGIAPP_API_TOKEN': 'tok'}, 'sécret'),
    ({'WSGIAPP_TOKEN_SECRET': '', 'WSGIAPP_API_TOKEN': 'tok'}, 'tok'),
])
def test_the_consistency_token_key_comes_from_the_token_secret_else_the_api_token(environ, secret):
    expected = None if secret is None else _hmac_key(secret)
    assert config.token_key(environ) == expected
    assert config.from_environ(environ).token_key == expected
    if secret is not None:
        assert len(expected) == 32 and secret.encode() not in expected
