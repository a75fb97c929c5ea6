"""Settings come from the environment; a bad DATABASE_URL never leaks its password."""
import pytest

from wsgiapp import config


@pytest.mark.parametrize('url, expected', [
    ('mysql://app:pw@db.example:3307/shop',
     {'user': 'app', 'password': 'pw', 'host': 'db.example', 'port': 3307, 'database': 'shop'}),
    ('mysql://app@localhost/shop', {'user': 'app', 'host': 'localhost', 'database': 'shop'}),
    ('mysql://a%40b:p%40ss%3Aw%2Fo%25rd%23@h/d', {'user': 'a@b', 'password': 'p@ss:w/o%rd#', 'host': 'h', 'database': 'd'}),
    ('mysql://u:p@localhost/d?unix_socket=/run/mysqld/mysqld.sock',
     {'user': 'u', 'password': 'p', 'host': 'localhost', 'database': 'd', 'unix_socket': '/run/mysqld/mysqld.sock'}),
    ('mysql://u:p@/d?unix_socket=/tmp/x.sock', {'user': 'u', 'password': 'p', 'database': 'd', 'unix_socket': '/tmp/x.sock'}),
    ('mysql://u:@h/d', {'user': 'u', 'password': '', 'host': 'h', 'database': 'd'}),
])
def test_database_url_forms(url, expected):
    assert config.parse_database_url(url) == expected


@pytest.mark.parametrize('url', [
    'postgres://u:topsecret@h/d', 'mysql://u:topsecret@h/', 'mysql://:topsecret@h/d',
    'mysql://u:topsecret@h:99999/d', 'mysql://u:topsecret@h:port/d', 'mysql://u:topsecret@h/d?ssl=1', 'topsecret',
])
def test_malformed_database_url_names_the_variable_not_the_password(url):
    settings = config.from_environ({'DATABASE_URL': url})
    assert settings.database is None
    assert 'DATABASE_URL' in settings.database_problem
    assert 'topsecret' not in settings.database_problem


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
                                         ('WSGIAPP_MAX_BODY', '-1'), ('WSGIAPP_POOL_TIMEOUT', 'soon')])
def test_bad_numbers_fail_loudly_at_start_naming_the_variable(name, value):
    with pytest.raises(config.ConfigError, match=name):
        config.from_environ({name: value})


def test_repr_hides_password_and_token():
    settings = config.from_environ({'DATABASE_URL': 'mysql://u:hunter2@h/d', 'WSGIAPP_API_TOKEN': 'tok-xyz'})
    assert 'hunter2' not in repr(settings) and 'tok-xyz' not in repr(settings)
