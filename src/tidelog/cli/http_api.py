"""A broker's HTTP API as the CLI reaches it, one way for every command that does (``tidelog
push ...``, ``tidelog cluster``'s event-loop lag, ``tidelog topics describe --http``): the URL,
``--cacert`` for HTTPS with a private CA (env TIDELOG_HTTP_CACERT; the system's CAs without it),
and once the broker has users ``--user NAME[:PASSWORD]`` (HTTP Basic; the password from
TIDELOG_HTTP_PASSWORD or asked for; env TIDELOG_HTTP_USER) or ``--token`` (a bearer token of
``http.bearer.tokens.file``; env TIDELOG_HTTP_TOKEN). Errors are one-line CliErrors that say
which of these to give.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from tidelog.cli.errors import CliError

__all__ = ["DEFAULT_URL", "HttpAccess", "HttpApi", "http_access_options"]

DEFAULT_URL = "http://127.0.0.1:9644"


@dataclass(frozen=True)
class HttpAccess:
    """How to reach a broker's HTTP API besides its URL: credentials and the CA file."""

    user: str | None = None
    token: str | None = None
    cacert: Path | None = None


def http_access_options(f: Callable) -> Callable:
    """Adds --user/-u, --token and --cacert; passes them as ``http_access`` (an HttpAccess)."""

    @functools.wraps(f)
    def wrapper(*args, http_user: str | None, http_token: str | None, cacert: Path | None, **kwargs):
        return f(*args, http_access=HttpAccess(http_user, http_token, cacert), **kwargs)

    options = [
        click.option("--user", "-u", "http_user", envvar="TIDELOG_HTTP_USER", metavar="NAME[:PASSWORD]",
                     help="HTTP API: Basic credentials; without :PASSWORD, from TIDELOG_HTTP_PASSWORD or asked for "
                          "(env TIDELOG_HTTP_USER)."),
        click.option("--token", "http_token", envvar="TIDELOG_HTTP_TOKEN", metavar="TOKEN",
                     help="HTTP API: a bearer token of http.bearer.tokens.file (env TIDELOG_HTTP_TOKEN)."),
        click.option("--cacert", envvar="TIDELOG_HTTP_CACERT", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="HTTP API: CA bundle that signed the broker's HTTPS certificate (http.ssl.enable; env "
                          "TIDELOG_HTTP_CACERT; default: the system's CAs)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


class HttpApi:
    """The broker's HTTP API for one command: JSON in and out, errors as one-line CliErrors.
    ``not_found``: the line for a 404 NOT_FOUND (an API older brokers lack), else the broker's."""

    def __init__(self, url: str, timeout_s: float, access: HttpAccess = HttpAccess(), not_found: str | None = None,
                 option: str = "--url") -> None:
        self.url = url.rstrip("/")
        self.option = option
        if not self.url.startswith(("http://", "https://")):
            raise CliError(f"{option}: expected http://HOST:PORT or https://HOST:PORT, got {url!r}")
        self.timeout_s = timeout_s
        self.not_found = not_found
        self.headers = {"Accept": "application/json"}
        if access.token:
            self.headers["Authorization"] = f"Bearer {access.token}"
        elif access.user:
            name, sep, password = access.user.partition(":")
            if not sep:
                password = os.environ.get("TIDELOG_HTTP_PASSWORD") or click.prompt(f"Password for {name}", hide_input=True,
                                                                                    err=True)
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()
        try:
            self.context = ssl.create_default_context(cafile=str(access.cacert)) if access.cacert else None
        except (ssl.SSLError, OSError) as e:
            raise CliError(f"--cacert {access.cacert}: not a PEM CA bundle: {e}") from None

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, **({"Content-Type": "application/json"} if data is not None else {})}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.context) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise CliError(self._error_line(e)) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            hint = ""
            if isinstance(reason, ssl.SSLCertVerificationError):
                hint = " (give --cacert FILE: the CA that signed the broker's certificate)"
            elif isinstance(reason, (ssl.SSLError, ConnectionResetError)) and self.url.startswith("http://"):
                hint = " (is it https://?)"
            raise CliError(f"cannot reach the HTTP API at {self.url} within {self.timeout_s:g}s: {reason}{hint}") from None
        except ValueError:
            raise CliError(f"{self.url}{path} did not answer JSON: is {self.option} a Tidelog broker's HTTP port?") from None

    def _error_line(self, e: urllib.error.HTTPError) -> str:
        try:
            body = json.loads(e.read())
            code, message = body["error_code"], body["message"]
        except (ValueError, KeyError, TypeError):
            return f"HTTP {e.code} {e.reason}"
        if e.code == 401:
            return f"{message} (give --user NAME[:PASSWORD] or --token)"
        if code == "NOT_FOUND" and self.not_found:
            return self.not_found
        return f"{message} ({code})"
