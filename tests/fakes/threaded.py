"""A stdlib HTTP server served from a daemon thread: the fake site and the fake Confluence."""

import threading
from http.server import ThreadingHTTPServer


class ServerThread:
    """Starts and stops serving one server in a daemon thread."""

    def __init__(self, httpd: ThreadingHTTPServer) -> None:
        self.httpd = httpd
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the port."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()
