"""DATABASE_URL's and DATABASE_REPLICA_URL's TLS options (docs/configuration.rst): ssl-mode,
ssl-ca, ssl-cert, ssl-key, and what MySQLdb.connect() gets from them. No server."""
import pytest

from wsgiapp import config
from wsgiapp.pool import connect_kwargs

SECRET = 'S3cret-p@ss'
BASE = f'mysql://app:{SECRET.replace("@", "%40")}@db.example:3306/app'


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name in ('ca.pem', 'client.pem', 'client.key'):
        (tmp_path / name).write_text('not parsed here\n')
        paths[name] = str(tmp_path / name)
    return paths


def parse(query, name='DATABASE_URL'):
    return config.parse_database_url(f'{BASE}?{query}', name)


def problem(query, name='DATABASE_URL'):
    with pytest.raises(config.ConfigError) as caught:
        parse(query, name)
    message = str(caught.value)
    assert SECRET not in message and 'p%40ss' not in message
    assert message.startswith(name)
    return message


def test_no_tls_option_is_no_tls():
    kwargs = config.parse_database_url(BASE)
    assert 'ssl' not in kwargs and 'ssl_mode' not in kwargs


def test_a_ca_alone_means_verify_the_chain_and_the_name(files):
    kwargs = parse(f'ssl-ca={files["ca.pem"]}')
    assert kwargs['ssl'] == {'ca': files['ca.pem']} and kwargs['ssl_mode'] == 'VERIFY_IDENTITY'


def test_a_client_certificate_alone_still_verifies_the_server(files):
    kwargs = parse(f'ssl-cert={files["client.pem"]}&ssl-key={files["client.key"]}')
    assert kwargs['ssl'] == {'cert': files['client.pem'], 'key': files['client.key']}
    assert kwargs['ssl_mode'] == 'VERIFY_IDENTITY'  # against the system's CAs


def test_every_option_together(files):
    kwargs = parse(f'ssl-mode=VERIFY_IDENTITY&ssl-ca={files["ca.pem"]}&ssl-cert={files["client.pem"]}'
                   f'&ssl-key={files["client.key"]}')
    assert kwargs == {'user': 'app', 'password': SECRET, 'host': 'db.example', 'port': 3306, 'database': 'app',
                      'ssl_mode': 'VERIFY_IDENTITY',
                      'ssl': {'ca': files['ca.pem'], 'cert': files['client.pem'], 'key': files['client.key']}}


@pytest.mark.parametrize('mode', ['REQUIRED', 'VERIFY_CA', 'VERIFY_IDENTITY', 'required', 'Verify_Identity'])
def test_a_mode_alone(mode):
    """No CA: the system's (a managed database with a public CA: ssl-mode=VERIFY_IDENTITY)."""
    assert parse(f'ssl-mode={mode}') == {**config.parse_database_url(BASE), 'ssl_mode': mode.upper()}


def test_an_explicit_mode_is_kept_with_a_ca(files):
    assert parse(f'ssl-ca={files["ca.pem"]}&ssl-mode=REQUIRED')['ssl_mode'] == 'REQUIRED'
    assert parse(f'ssl-mode=VERIFY_CA&ssl-ca={files["ca.pem"]}')['ssl_mode'] == 'VERIFY_CA'


def test_disabled_is_clear_text_said_aloud():
    kwargs = parse('ssl-mode=DISABLED')
    assert 'ssl' not in kwargs and 'ssl_mode' not in kwargs


def test_the_underscore_spellings_are_the_same_options(files):
    assert (parse(f'ssl_ca={files["ca.pem"]}&ssl_mode=VERIFY_CA')
            == parse(f'ssl-ca={files["ca.pem"]}&ssl-mode=VERIFY_CA'))


def test_percent_encoded_paths(tmp_path):
    (tmp_path / 'my ca.pem').write_text('x')
    assert parse(f'ssl-ca={tmp_path}/my%20ca.pem')['ssl'] == {'ca': f'{tmp_path}/my ca.pem'}


@pytest.mark.parametrize('name', ['DATABASE_URL', 'DATABASE_REPLICA_URL'])
@pytest.mark.parametrize('mode', ['PREFERRED', 'preferred', 'VERIFY', 'ON', 'true', '1', 'VERIFY_IDENTITY%20',
                                  'VERIFY%5FCA%00'])
def test_an_unknown_or_downgrading_mode_is_refused_naming_the_variable(name, mode):
    message = problem(f'ssl-mode={mode}', name)
    assert 'ssl-mode' in message
    if mode.upper() == 'PREFERRED':
        assert 'falls back to clear text' in message
    else:
        assert 'DISABLED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY' in message


@pytest.mark.parametrize('query, says', [
    ('ssl-mode=', 'has an option other than'),
    ('ssl-ca=', 'has an option other than'),
    ('ssl-crl=/x', 'has an option other than'),
    ('sslmode=require', 'has an option other than'),  # PostgreSQL's spelling
    ('ssl=true', 'has an option other than'),
    ('SSL-CA=/x', 'has an option other than'),
    ('ssl-cert=/x', 'ssl-cert and ssl-key without the other'),
    ('ssl-key=/x', 'ssl-cert and ssl-key without the other'),
    ('ssl-mode=DISABLED&ssl-ca=/x', 'ssl-mode=DISABLED with ssl-ca'),
])
def test_contradictions_and_unknown_options_are_refused(query, says):
    assert says in problem(query)


@pytest.mark.parametrize('option', ['ssl-ca', 'ssl-cert', 'ssl-key'])
def test_a_missing_or_unreadable_file_is_a_config_error_at_start(files, tmp_path, option):
    others = {'ssl-ca': f'ssl-ca={files["ca.pem"]}',
              'ssl-cert': f'ssl-cert={files["client.pem"]}', 'ssl-key': f'ssl-key={files["client.key"]}'}
    others[option] = f'{option}={tmp_path}/missing.pem'
    message = problem('&'.join(others.values()))
    assert message == f'DATABASE_URL: the {option} file cannot be read (No such file or directory)'
    others[option] = f'{option}={tmp_path}'  # a directory
    assert f'the {option} file cannot be read' in problem('&'.join(others.values()))


def test_an_unreadable_ca_disables_the_database_and_says_why_without_the_password(tmp_path):
    settings = config.from_environ({'DATABASE_URL': f'{BASE}?ssl-ca={tmp_path}/none.pem'})
    assert settings.database is None
    assert settings.database_problem == 'DATABASE_URL: the ssl-ca file cannot be read (No such file or directory)'
    assert SECRET not in repr(settings)


def test_a_replica_url_with_an_unreadable_ca_stops_the_start(tmp_path):
    with pytest.raises(config.ConfigError) as caught:
        config.from_environ({'DATABASE_URL': BASE, 'DATABASE_REPLICA_URL': f'{BASE}?ssl-ca={tmp_path}/none.pem'})
    assert str(caught.value).startswith('DATABASE_REPLICA_URL: the ssl-ca file') and SECRET not in str(caught.value)


def test_each_replica_has_its_own_tls(files):
    settings = config.from_environ({
        'DATABASE_URL': f'{BASE}?ssl-ca={files["ca.pem"]}',
        'DATABASE_REPLICA_URL': f'{BASE}?ssl-mode=REQUIRED,{BASE}?ssl-ca={files["ca.pem"]}&ssl-mode=VERIFY_CA'})
    assert [replica.get('ssl_mode') for replica in settings.replica_databases] == ['REQUIRED', 'VERIFY_CA']
    assert 'ssl' not in settings.replica_databases[0]


def test_connect_kwargs_pass_the_tls_settings_through(files):
    settings = config.from_environ({'DATABASE_URL': f'{BASE}?ssl-ca={files["ca.pem"]}'})
    kwargs = connect_kwargs(settings)
    assert kwargs['ssl'] == {'ca': files['ca.pem']} and kwargs['ssl_mode'] == 'VERIFY_IDENTITY'
    assert kwargs['host'] == 'db.example' and kwargs['charset'] == 'utf8mb4'
    replica = connect_kwargs(settings, {**settings.database, 'ssl_mode': 'REQUIRED'}, connect_timeout=1)
    assert replica['ssl_mode'] == 'REQUIRED' and replica['connect_timeout'] == 1


def test_a_unix_socket_needs_no_tls():
    kwargs = config.parse_database_url('mysql://app:pw@/app?unix_socket=/run/mysqld/mysqld.sock')
    assert kwargs == {'user': 'app', 'password': 'pw', 'database': 'app', 'unix_socket': '/run/mysqld/mysqld.sock'}
