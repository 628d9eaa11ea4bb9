"""Where the daemon's APIs live and which app key opens them: :class:`ApiConfig`.

A real yagna daemon is configured as existing Golem clients do: ``YAGNA_APPKEY`` (required),
``YAGNA_API_URL`` (default ``http://127.0.0.1:7465``) and per-API full URLs ``YAGNA_MARKET_URL``,
``YAGNA_PAYMENT_URL``, ``YAGNA_ACTIVITY_URL``, ``YAGNA_NET_URL``. Explicit arguments beat the environment.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from attrs import field, frozen

from golem_api.errors import ConfigurationError

__all__ = ["API_PREFIXES", "DEFAULT_API_URL", "Api", "ApiConfig"]

DEFAULT_API_URL = "http://127.0.0.1:7465"


class Api(enum.Enum):
    """One of the daemon's APIs; each has its own base URL."""

    MARKET = "market"
    PAYMENT = "payment"
    ACTIVITY = "activity"
    NET = "net"
    GSB = "gsb"
    ROOT = "root"


API_PREFIXES: Mapping[Api, str] = {
    Api.MARKET: "/market-api/v1",
    Api.PAYMENT: "/payment-api/v1",
    Api.ACTIVITY: "/activity-api/v1",
    Api.NET: "/net-api/v1",
    Api.GSB: "/gsb-api/v1",
    Api.ROOT: "",
}

_OVERRIDE_VARIABLES: Mapping[Api, str] = {
    Api.MARKET: "YAGNA_MARKET_URL",
    Api.PAYMENT: "YAGNA_PAYMENT_URL",
    Api.ACTIVITY: "YAGNA_ACTIVITY_URL",
    Api.NET: "YAGNA_NET_URL",
}


def _mask(key: str) -> str:
    """``'****1a2b'``: enough to tell two keys apart, never enough to use one."""
    return repr("****" + key[-4:]) if len(key) >= 16 else repr("****")


def _check_url(url: str, source: str) -> str:
    """Return ``url`` without a trailing slash, or raise if it is not an absolute http(s) URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"{source} must be an http:// or https:// URL such as {DEFAULT_API_URL!r}, got {url!r}"
        )
    return url.strip().rstrip("/")


_URL_FIELDS = {
    Api.MARKET: "market_url",
    Api.PAYMENT: "payment_url",
    Api.ACTIVITY: "activity_url",
    Api.NET: "net_url",
    Api.GSB: "gsb_url",
    Api.ROOT: "root_url",
}
"""The field of :class:`ApiConfig` holding each API's base URL."""


@frozen
class ApiConfig:
    """The app key and the base URL of each of the daemon's APIs."""

    app_key: str = field(repr=_mask)
    market_url: str
    payment_url: str
    activity_url: str
    net_url: str
    gsb_url: str
    root_url: str

    def url_for(self, api: Api) -> str:
        """The base URL of ``api``, without a trailing slash."""
        url: str = getattr(self, _URL_FIELDS[api])
        return url

    @classmethod
    def for_node(cls, url: str, app_key: str) -> ApiConfig:
        """Every API under the base ``url`` with its standard prefix; the environment is not read."""
        if not app_key:
            raise ConfigurationError("app_key must not be empty")
        base = _check_url(url, "the node URL")
        return cls._build(app_key, base, {})

    @classmethod
    def from_env(
        cls,
        app_key: str | None = None,
        api_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ApiConfig:
        """Configuration for a yagna daemon: explicit arguments first, then ``YAGNA_*`` variables.

        Per-API variables (``YAGNA_MARKET_URL``, …) apply only when ``api_url`` is not given, since an
        explicit base URL means "everything is there".
        """
        environ = os.environ if env is None else env
        key = app_key or environ.get("YAGNA_APPKEY", "")
        if not key:
            raise ConfigurationError(
                "no app key for the yagna daemon: set YAGNA_APPKEY or pass app_key=, "
                "or leave both unset to use the embedded local network"
            )
        if api_url is not None:
            base = _check_url(api_url, "api_url")
            overrides: dict[Api, str] = {}
        else:
            base = _check_url(environ.get("YAGNA_API_URL") or DEFAULT_API_URL, "YAGNA_API_URL")
            overrides = {
                api: _check_url(environ[name], name) for api, name in _OVERRIDE_VARIABLES.items() if environ.get(name)
            }
        return cls._build(key, base, overrides)

    @classmethod
    def _build(cls, app_key: str, base: str, overrides: Mapping[Api, str]) -> ApiConfig:
        def url(api: Api) -> str:
            return overrides.get(api) or base + API_PREFIXES[api]

        return cls(
            app_key=app_key,
            market_url=url(Api.MARKET),
            payment_url=url(Api.PAYMENT),
            activity_url=url(Api.ACTIVITY),
            net_url=url(Api.NET),
            gsb_url=url(Api.GSB),
            root_url=base,
        )
