"""The web app: HTML, CSS and plain JavaScript modules, served by the gateway (see pages.py)."""
