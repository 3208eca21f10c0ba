"""A local, offline viewer of a document: the AsyncAPI React component's standalone
bundle and its stylesheet, served with the document from ``127.0.0.1``.

The bundle is not in the repository: ``make install`` copies it from the npm package
``@asyncapi/react-component`` (pinned in ``.npm/package.json``) into this package's
``viewer/`` folder. :func:`find_assets` also takes a folder holding the npm package
(``.../node_modules/@asyncapi/react-component``).

>>> page = viewer_page({"info": {"title": "</script><b>x"}})
>>> "</script><b>" in page, "\\\\u003c/script>\\\\u003cb>x" in page
(False, True)
"""

from __future__ import annotations

import html
import json
import os
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

__all__ = ["VIEWER_ENV", "Assets", "ViewerServer", "find_assets", "viewer_page"]

VIEWER_ENV = "HERALD_ASYNCAPI_VIEWER"
BUNDLED = Path(__file__).parent / "viewer"
_LAYOUTS = (  # (script, stylesheet) inside a folder: copied by make install, or npm's
    ("index.js", "default.min.css"),
    ("browser/standalone/index.js", "styles/default.min.css"),
)


@dataclass(frozen=True, slots=True)
class Assets:
    """The React component's standalone script and its stylesheet."""

    script: Path
    stylesheet: Path


def find_assets(folder: str | os.PathLike[str] | None = None) -> Assets:
    """The viewer's files in ``folder``, else ``$HERALD_ASYNCAPI_VIEWER``, else the ones
    ``make install`` copied into this package; a clear error when there are none."""
    chosen = folder or os.environ.get(VIEWER_ENV) or BUNDLED
    base = Path(chosen)
    for script, stylesheet in _LAYOUTS:
        if (base / script).is_file() and (base / stylesheet).is_file():
            return Assets(base / script, base / stylesheet)
    raise ConfigurationError(
        f"no AsyncAPI viewer in {str(base)!r}: run `make install` (it copies "
        "@asyncapi/react-component's standalone bundle there), or pass --viewer DIR "
        "naming a folder that holds the npm package @asyncapi/react-component"
    )


def viewer_page(document: dict[str, Any]) -> str:
    """The HTML page that renders ``document`` (embedded) with the standalone bundle."""
    title = html.escape(str(document.get("info", {}).get("title", "AsyncAPI")))
    embedded = json.dumps(document).replace("<", "\\u003c")  # no </script>, no <!--
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="/assets/default.min.css">
</head>
<body>
<div id="asyncapi"></div>
<script type="application/json" id="asyncapi-document">{embedded}</script>
<script src="/assets/index.js"></script>
<script>
AsyncApiStandalone.render(
  {{
    schema: JSON.parse(document.getElementById("asyncapi-document").textContent),
    config: {{show: {{sidebar: true}}}},
  }},
  document.getElementById("asyncapi"),
);
</script>
</body>
</html>
"""


class ViewerServer:
    """Serves ``/`` (the page), ``/asyncapi.json`` and ``/assets/*`` on a thread.

    >>> import urllib.request
    >>> server = ViewerServer({"asyncapi": "3.0.0"}, Assets(Path(__file__), Path(__file__)))
    >>> server.start()
    >>> urllib.request.urlopen(server.url + "asyncapi.json").read()
    b'{"asyncapi": "3.0.0"}'
    >>> server.stop()
    """

    def __init__(
        self, document: dict[str, Any], assets: Assets, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        files: dict[str, tuple[str, bytes]] = {
            "/": ("text/html; charset=utf-8", viewer_page(document).encode()),
            "/asyncapi.json": ("application/json", json.dumps(document).encode()),
            "/assets/index.js": ("text/javascript; charset=utf-8", assets.script.read_bytes()),
            "/assets/default.min.css": ("text/css; charset=utf-8", assets.stylesheet.read_bytes()),
        }
        self._http = ThreadingHTTPServer((host, port), _handler(files))
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="herald-asyncapi-viewer", daemon=True
        )

    @property
    def url(self) -> str:
        address, port = self._http.server_address[:2]
        host = address.decode() if isinstance(address, bytes) else address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()


def _handler(files: dict[str, tuple[str, bytes]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "herald-docs"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/favicon.ico":
                self.send_response(HTTPStatus.NO_CONTENT)
                self.end_headers()
                return
            found = files.get(path)
            if found is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            content_type, body = found
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a local viewer; requests are not worth a line each

    return Handler
