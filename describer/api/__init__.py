"""The JSON API (/api/v1/) and the personal tokens it is used with.

app.py holds the NinjaAPI object, views.py the endpoints, sse.py the live stream,
problems.py the RFC 9457 errors, auth.py and tokens.py the bearer tokens,
pages.py the settings page where users create and revoke them.
"""
