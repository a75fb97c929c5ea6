"""wsgiapp: a framework-free WSGI application over pooled MySQL. The entry point is wsgiapp.app.application."""
