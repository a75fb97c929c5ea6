"""flask: the same routes as wsgiapp, written the usual Flask way, with the same queries over
the same pool (wsgiapp.db.Database) and the same HTML (wsgiapp.pages)."""
import hmac

from flask import Flask, abort, jsonify, request

from wsgiapp import config, db, pages
from wsgiapp.admins import Admins, as_item

settings = config.from_environ()
database = Admins(db.Database(settings))
app = Flask(__name__)


def page_of_rows():
    limit = request.args.get('limit', 10, type=int)
    after = request.args.get('after', 0, type=int)
    if not 1 <= limit <= 100 or after < 0:
        abort(400)
    rows = database.list_admins(after, limit + 1).result
    if len(rows) > limit:
        return rows[:limit], f'?after={rows[limit - 1][0]}&limit={limit}'
    return rows, None


@app.route('/')
def index():
    return pages.HELLO_WORLD_HTML


@app.route('/<name>')
def user(name):
    return pages.hello(name)


@app.route('/admins')
def admins():
    rows, next_query = page_of_rows()
    return pages.admins(rows, next_query and '/admins' + next_query)


@app.route('/api/admins')
def list_admins():
    rows, next_query = page_of_rows()
    return jsonify(items=[as_item(row) for row in rows], next=next_query and '/api/admins' + next_query)


@app.route('/api/admins/<int:admin_id>')
def get_admin(admin_id):
    row = database.get_admin(admin_id).result
    if row is None:
        abort(404)
    return jsonify(as_item(row))


@app.route('/api/admins', methods=['POST'])
def create_admin():
    given = request.headers.get('Authorization', '').partition(' ')[2]
    if not settings.api_token or not hmac.compare_digest(given.encode(), settings.api_token.encode()):
        abort(401)
    body = request.get_json()
    row = database.create_admin(body['name'], body['email']).result
    return jsonify(as_item(row)), 201, {'Location': f'/api/admins/{row[0]}'}


application = app
