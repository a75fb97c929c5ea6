"""Settings come from the environment; a bad DATABASE_URL never leaks its password."""
import string
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgiapp import config, db

# Every ASCII punctuation character, a space, and characters outside ASCII and the BMP.
ODD_PASSWORD = string.punctuation + ' é密🚀'
ODD_USER = 'odd user@:/?#[]%é'


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


def test_any_character_in_user_and_password_connects_to_mariadb(mariadb, admin_kwargs, sql):
    if mariadb is None:
        pytest.skip('needs the private server, to create a user')
    database, socket_path = admin_kwargs['database'], admin_kwargs['unix_socket']
    sql("CREATE USER %s@'localhost' IDENTIFIED BY %s", (ODD_USER, ODD_PASSWORD))
    try:
        sql(f"GRANT SELECT ON `{database}`.* TO %s@'localhost'", (ODD_USER,))
        sql("INSERT INTO vc_admin (name, email) VALUES ('seen', 'a@b.c')")

        def url(password):
            return (f"mysql://{quote(ODD_USER, safe='')}:{quote(password, safe='')}@localhost/{database}"
                    f'?unix_socket={quote(socket_path)}')
        settings = config.from_environ({'DATABASE_URL': url(ODD_PASSWORD)})
        assert [row[1] for row in db.Database(settings).list_admins(0, 1)] == ['seen']
        # The server does check the password: one character less is refused.
        with pytest.raises(db.Unavailable, match='Access denied'):
            db.Database(config.from_environ({'DATABASE_URL': url(ODD_PASSWORD[:-1])})).list_admins(0, 1)
    finally:
        sql("DROP USER %s@'localhost'", (ODD_USER,))


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
