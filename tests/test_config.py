"""A DATABASE_URL with any character in its user and password reaches a real MariaDB.
The parsing itself, without a server, is tests/unit/test_config.py."""
import string
from urllib.parse import quote

import pytest

from wsgiapp import admins, config, db, pool

# Every ASCII punctuation character, a space, and characters outside ASCII and the BMP.
ODD_PASSWORD = string.punctuation + ' é密🚀'
ODD_USER = 'odd user@:/?#[]%é'


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
        assert [row[1] for row in admins.Admins(db.Database(settings)).list_admins(0, 1).result] == ['seen']
        # The server does check the password: one character less is refused.
        with pytest.raises(pool.Unavailable, match='Access denied'):
            admins.Admins(db.Database(config.from_environ({'DATABASE_URL': url(ODD_PASSWORD[:-1])}))).list_admins(0, 1)
    finally:
        sql("DROP USER %s@'localhost'", (ODD_USER,))
