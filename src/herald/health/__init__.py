"""Health probes: ``/healthz`` (the process is up) and ``/readyz`` (broker connected,
every consumer running), served by ``herald run --health-port N`` or mounted in a web
service of one's own (:func:`asgi_app`).

>>> import herald
>>> from herald.health import Health, ProbeServer, health_routes
>>> bus = herald.connect("memory://health-doctest")
>>> server = ProbeServer(health_routes(Health(bus)), port=0, host="127.0.0.1")
>>> server.start(); server.close()
"""

from .asgi import asgi_app
from .probe import Health, Probe
from .server import ProbeServer, WSGIApp, health_routes, parse_address

__all__ = [
    "Health",
    "Probe",
    "ProbeServer",
    "WSGIApp",
    "asgi_app",
    "health_routes",
    "parse_address",
]
