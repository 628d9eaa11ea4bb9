"""Where the client sends requests: ApiConfig from arguments and the YAGNA_* environment."""

from __future__ import annotations

import pytest

from golem_api._rest.config import Api, ApiConfig
from golem_api.errors import ConfigurationError

KEY = "0123456789abcdef0123456789abcdef"


def test_defaults_to_the_local_daemon() -> None:
    config = ApiConfig.from_env(env={"YAGNA_APPKEY": KEY})
    assert config.app_key == KEY
    assert config.root_url == "http://127.0.0.1:7465"
    assert config.market_url == "http://127.0.0.1:7465/market-api/v1"
    assert config.payment_url == "http://127.0.0.1:7465/payment-api/v1"
    assert config.activity_url == "http://127.0.0.1:7465/activity-api/v1"
    assert config.net_url == "http://127.0.0.1:7465/net-api/v1"
    assert config.gsb_url == "http://127.0.0.1:7465/gsb-api/v1"


def test_base_url_from_the_environment_without_a_trailing_slash() -> None:
    config = ApiConfig.from_env(env={"YAGNA_APPKEY": KEY, "YAGNA_API_URL": "https://yagna.example:8000/"})
    assert config.root_url == "https://yagna.example:8000"
    assert config.url_for(Api.MARKET) == "https://yagna.example:8000/market-api/v1"


def test_explicit_arguments_beat_the_environment() -> None:
    env = {"YAGNA_APPKEY": "from-env", "YAGNA_API_URL": "http://env-host:1"}
    config = ApiConfig.from_env(app_key=KEY, api_url="http://10.0.0.5:7465", env=env)
    assert config.app_key == KEY
    assert config.activity_url == "http://10.0.0.5:7465/activity-api/v1"


def test_per_api_urls_override_the_base() -> None:
    env = {
        "YAGNA_APPKEY": KEY,
        "YAGNA_API_URL": "http://base:7465",
        "YAGNA_MARKET_URL": "http://market-host:1/market-api/v1/",
        "YAGNA_PAYMENT_URL": "http://payment-host:2/p",
        "YAGNA_ACTIVITY_URL": "http://activity-host:3/a",
        "YAGNA_NET_URL": "http://net-host:4/n",
    }
    config = ApiConfig.from_env(env=env)
    assert config.market_url == "http://market-host:1/market-api/v1"
    assert config.payment_url == "http://payment-host:2/p"
    assert config.activity_url == "http://activity-host:3/a"
    assert config.net_url == "http://net-host:4/n"
    assert config.gsb_url == "http://base:7465/gsb-api/v1"
    assert config.root_url == "http://base:7465"


def test_an_explicit_base_url_ignores_per_api_variables() -> None:
    env = {"YAGNA_APPKEY": KEY, "YAGNA_MARKET_URL": "http://market-host:1/market-api/v1"}
    config = ApiConfig.from_env(api_url="http://node:7465", env=env)
    assert config.market_url == "http://node:7465/market-api/v1"


def test_a_missing_key_says_what_to_do() -> None:
    with pytest.raises(ConfigurationError) as info:
        ApiConfig.from_env(env={"YAGNA_API_URL": "http://127.0.0.1:7465"})
    message = str(info.value)
    assert "YAGNA_APPKEY" in message
    assert "app_key=" in message
    assert "embedded local network" in message


def test_an_empty_key_counts_as_missing() -> None:
    with pytest.raises(ConfigurationError, match="YAGNA_APPKEY"):
        ApiConfig.from_env(env={"YAGNA_APPKEY": ""})


@pytest.mark.parametrize("url", ["127.0.0.1:7465", "ftp://host", "http://", "localhost"])
def test_a_base_url_that_is_not_http_is_refused_by_value(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ApiConfig.from_env(env={"YAGNA_APPKEY": KEY, "YAGNA_API_URL": url})
    assert repr(url) in str(info.value)
    assert "YAGNA_API_URL" in str(info.value)


def test_a_bad_per_api_url_is_named() -> None:
    with pytest.raises(ConfigurationError, match="YAGNA_PAYMENT_URL"):
        ApiConfig.from_env(env={"YAGNA_APPKEY": KEY, "YAGNA_PAYMENT_URL": "payment-host"})


def test_for_node_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YAGNA_MARKET_URL", "http://elsewhere:1/market-api/v1")
    monkeypatch.setenv("YAGNA_APPKEY", "from-env")
    config = ApiConfig.for_node("http://127.0.0.1:40123/", "local-key-0123456789")
    assert config.app_key == "local-key-0123456789"
    assert config.market_url == "http://127.0.0.1:40123/market-api/v1"
    assert config.root_url == "http://127.0.0.1:40123"
    with pytest.raises(ConfigurationError, match="'not a url'"):
        ApiConfig.for_node("not a url", KEY)


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YAGNA_APPKEY", KEY)
    monkeypatch.setenv("YAGNA_API_URL", "http://from-process:7465")
    for name in ("YAGNA_MARKET_URL", "YAGNA_PAYMENT_URL", "YAGNA_ACTIVITY_URL", "YAGNA_NET_URL"):
        monkeypatch.delenv(name, raising=False)
    assert ApiConfig.from_env().market_url == "http://from-process:7465/market-api/v1"


def test_repr_hides_the_key() -> None:
    config = ApiConfig.from_env(env={"YAGNA_APPKEY": KEY})
    assert KEY not in repr(config)
    assert KEY not in str(config)
    assert "****cdef" in repr(config)
    short = ApiConfig.for_node("http://127.0.0.1:1", "secret")
    assert "secret" not in repr(short)
