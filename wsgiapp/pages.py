"""HTML pages. Every value from a URL or the database goes through escape(), here and nowhere else."""
from html import escape

_HEAD = ('<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
         '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
         '<link rel="stylesheet" href="/static/style.css">\n<link rel="icon" href="/favicon.ico">\n')


def page(title, body):
    """A whole document around `body`, which must already be escaped markup."""
    return f'{_HEAD}<title>{escape(title)}</title>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n'


HELLO_WORLD_HTML = page('hello world', '<h1>hello world</h1>\n<p><a href="/admins">admins</a></p>\n')


def hello(name):
    return page(f'hello, {name}', f'<h1>hello, {escape(name)}</h1>\n')


def admins(rows, next_url):
    cells = ''.join(
        f'<tr><td>{admin_id}</td><td>{escape(name)}</td><td>{escape(email)}</td>'
        f'<td><time datetime="{created_at}">{created_at[:10]} {created_at[11:19]}</time></td></tr>\n'
        for admin_id, name, email, created_at in rows)
    table = ('<table>\n<thead><tr><th>id</th><th>name</th><th>email</th><th>created (UTC)</th></tr></thead>\n'
             f'<tbody>\n{cells}</tbody>\n</table>\n') if rows else '<p>No admins here.</p>\n'
    more = f'<p><a rel="next" href="{escape(next_url)}">next page</a></p>\n' if next_url else ''
    return page('admins', f'<h1>admins</h1>\n{table}{more}')


def error(status, reason, message):
    return page(f'{status} {reason}', f'<h1>{status} {escape(reason)}</h1>\n<p>{escape(message)}</p>\n')
