"""falcon: the same routes as wsgiapp, written the usual Falcon way (falcon.App, a resource
per route, req.get_param_as_int), with the same queries over the same pool
(wsgiapp.db.Database: one persistent connection per thread) and the same HTML (wsgiapp.pages)."""
import hmac

import falcon

from wsgiapp import config, db, pages
from wsgiapp.admins import Admins, as_item

settings = config.from_environ()
database = Admins(db.Database(settings))


def page_of_rows(req):
    limit = req.get_param_as_int('limit', default=10, min_value=1, max_value=100)
    after = req.get_param_as_int('after', default=0, min_value=0)
    rows = database.list_admins(after, limit + 1).result
    if len(rows) > limit:
        return rows[:limit], f'?after={rows[limit - 1][0]}&limit={limit}'
    return rows, None


class Index:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_HTML
        resp.text = pages.HELLO_WORLD_HTML


class User:
    def on_get(self, req, resp, name):
        resp.content_type = falcon.MEDIA_HTML
        resp.text = pages.hello(name)


class AdminsPage:
    def on_get(self, req, resp):
        rows, next_query = page_of_rows(req)
        resp.content_type = falcon.MEDIA_HTML
        resp.text = pages.admins(rows, next_query and '/admins' + next_query)


class AdminList:
    def on_get(self, req, resp):
        rows, next_query = page_of_rows(req)
        resp.media = {'items': [as_item(row) for row in rows], 'next': next_query and '/api/admins' + next_query}

    def on_post(self, req, resp):
        given = (req.get_header('Authorization') or '').partition(' ')[2]
        if not settings.api_token or not hmac.compare_digest(given.encode(), settings.api_token.encode()):
            raise falcon.HTTPUnauthorized()
        body = req.get_media()
        row = database.create_admin(body['name'], body['email']).result
        resp.status = falcon.HTTP_201
        resp.location = f'/api/admins/{row[0]}'
        resp.media = as_item(row)


class Admin:
    def on_get(self, req, resp, admin_id):
        row = database.get_admin(admin_id).result
        if row is None:
            raise falcon.HTTPNotFound()
        resp.media = as_item(row)


def make_app(middleware=()):
    app = falcon.App(middleware=list(middleware))
    app.add_route('/', Index())
    app.add_route('/admins', AdminsPage())
    app.add_route('/api/admins', AdminList())
    app.add_route('/api/admins/{admin_id:int}', Admin())
    app.add_route('/{name}', User())
    return app


application = make_app()
