"""The site's date formats (FORMAT_MODULE_PATH): one way to write a moment on every page, in
each language. Django's own locale formats fill in everything not set here."""
