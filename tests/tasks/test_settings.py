"""Settings.load: defaults, TOML file, PROMPTQ_* variables (later wins), and refusals."""

from __future__ import annotations

import textwrap

import pytest

from promptq.tasks.settings import DEFAULT_REDIS_URL, Settings, SettingsError


def write_config(tmp_path, text: str) -> str:
    path = tmp_path / "promptq.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_defaults_with_an_empty_environment():
    s = Settings.load(environ={})
    assert s.redis_url == DEFAULT_REDIS_URL == "redis://127.0.0.1:6379/0"
    assert s.key_prefix == "promptq"
    assert (s.max_retries, s.retry_cap_s, s.visibility_timeout_s) == (3, 300.0, 3600.0)
    assert (s.lease_ttl_s, s.heartbeat_s) == (6.0, 2.0)
    # A dead worker is noticed within lease + one sweep: the 10 s goal of issue 10.
    assert s.lease_ttl_s + s.heartbeat_s <= 10
    assert (s.stream_maxlen, s.stream_ttl_s, s.result_ttl_s) == (10_000, 86_400.0, 604_800.0)
    assert (s.providers, s.pool, s.concurrency) == ("mock", "threads", 200)
    assert s.provider_configs == {}
    assert s.provider_config("openai") == {}


def test_environment_overrides_are_typed():
    s = Settings.load(environ={
        "PROMPTQ_REDIS_URL": "redis://h:1/2",
        "PROMPTQ_MAX_RETRIES": "7",
        "PROMPTQ_RETRY_CAP_S": "12.5",
        "PROMPTQ_CONCURRENCY": "200",
        "PROMPTQ_POOL": "gevent",
        "PROMPTQ_HEARTBEAT_S": "0.5",
        "PROMPTQ_LEASE_TTL_S": "3",
        "PROMPTQ_KEY_PREFIX": "pq",
        "PROMPTQ_METRICS_PORT": "",  # empty means unset
        "OPENAI_API_KEY": "sk-not-a-setting",
    })
    assert s.redis_url == "redis://h:1/2"
    assert s.max_retries == 7 and type(s.max_retries) is int
    assert s.retry_cap_s == 12.5 and type(s.retry_cap_s) is float
    assert s.lease_ttl_s == 3.0 and type(s.lease_ttl_s) is float
    assert (s.concurrency, s.pool, s.heartbeat_s, s.key_prefix, s.metrics_port) == (200, "gevent", 0.5, "pq", 0)


@pytest.mark.parametrize("name, value", [("PROMPTQ_CONCURRENCY", "many"), ("PROMPTQ_RETRY_CAP_S", "5m")])
def test_environment_values_of_the_wrong_type_are_named(name, value):
    with pytest.raises(SettingsError) as info:
        Settings.load(environ={name: value})
    setting = name[len("PROMPTQ_"):].lower()
    assert setting in str(info.value) and repr(value) in str(info.value)


def test_config_file_with_provider_tables(tmp_path):
    path = write_config(tmp_path, """
        redis_url = "redis://:secret@redis:6379/0"
        max_retries = 4
        retry_cap_s = 20

        [providers.openai]
        base_url = "https://api.openai.com/v1"
        timeout = 120

        [providers.mock]
        latency_s = 0.05
    """)
    s = Settings.load(environ={}, config_path=path)
    assert s.redis_url == "redis://:secret@redis:6379/0"
    assert s.max_retries == 4
    assert s.retry_cap_s == 20.0 and type(s.retry_cap_s) is float
    assert s.provider_config("openai") == {"base_url": "https://api.openai.com/v1", "timeout": 120}
    assert s.provider_config("mock") == {"latency_s": 0.05}
    # A copy: changing it leaves the settings alone.
    s.provider_config("mock")["latency_s"] = 9
    assert s.provider_config("mock") == {"latency_s": 0.05}


def test_config_file_named_by_environment_and_environment_wins(tmp_path):
    path = write_config(tmp_path, 'max_retries = 4\nconcurrency = 10\n')
    s = Settings.load(environ={"PROMPTQ_CONFIG": path, "PROMPTQ_MAX_RETRIES": "9"})
    assert (s.max_retries, s.concurrency) == (9, 10)


def test_api_key_secrets_are_not_in_repr(tmp_path):
    path = write_config(tmp_path, '[providers.openai]\napi_key = "sk-very-secret"\n')
    s = Settings.load(environ={}, config_path=path)
    assert s.provider_config("openai")["api_key"] == "sk-very-secret"
    assert "sk-very-secret" not in repr(s)


def test_unknown_key_in_file_is_named(tmp_path):
    path = write_config(tmp_path, 'max_retries = 2\nmax_retry = 5\n')
    with pytest.raises(SettingsError) as info:
        Settings.load(environ={}, config_path=path)
    assert "'max_retry'" in str(info.value) and path in str(info.value)


def test_provider_entries_must_be_tables(tmp_path):
    path = write_config(tmp_path, '[providers]\nopenai = "sk-1"\n')
    with pytest.raises(SettingsError, match=r"providers\.NAME"):
        Settings.load(environ={}, config_path=path)


def test_missing_and_invalid_config_files(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        Settings.load(environ={}, config_path=str(tmp_path / "nope.toml"))
    bad = write_config(tmp_path, "max_retries = = 3\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        Settings.load(environ={}, config_path=bad)


def test_wrongly_typed_file_value_is_named(tmp_path):
    path = write_config(tmp_path, 'concurrency = "lots"\n')
    with pytest.raises(SettingsError, match="concurrency"):
        Settings.load(environ={}, config_path=path)


@pytest.mark.parametrize("cap, vis", [(3600, 3600), (4000, 3600)])
def test_retry_cap_must_stay_below_visibility_timeout(cap, vis):
    with pytest.raises(SettingsError, match="retry_cap_s"):
        Settings.load(environ={"PROMPTQ_RETRY_CAP_S": str(cap), "PROMPTQ_VISIBILITY_TIMEOUT_S": str(vis)})
    assert Settings.load(environ={"PROMPTQ_RETRY_CAP_S": str(vis - 1),
                                  "PROMPTQ_VISIBILITY_TIMEOUT_S": str(vis)}).retry_cap_s == vis - 1


def test_bad_pool_refused():
    with pytest.raises(SettingsError, match="'forkserver'"):
        Settings(pool="forkserver")
    for pool in ("threads", "gevent", "prefork", "solo"):
        assert Settings(pool=pool).pool == pool


@pytest.mark.parametrize("name, value", [("concurrency", 0), ("max_retries", -1), ("stream_maxlen", 0),
                                         ("health_failure_threshold", 0)])
def test_non_positive_counts_refused(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings(**{name: value})


def test_lease_ttl_must_be_at_least_two_heartbeats():
    with pytest.raises(SettingsError, match="lease_ttl_s"):
        Settings(heartbeat_s=5, lease_ttl_s=9)
    assert Settings(heartbeat_s=5, lease_ttl_s=10).lease_ttl_s == 10


@pytest.mark.parametrize("concurrency, expected", [(1, 64), (32, 80), (200, 416), (1000, 2016)])
def test_effective_broker_max_connections_exceeds_concurrency(concurrency, expected):
    s = Settings(concurrency=concurrency)
    assert s.effective_broker_max_connections == expected
    assert s.effective_broker_max_connections > concurrency


def test_explicit_broker_max_connections_is_used():
    assert Settings(concurrency=32, broker_max_connections=100).effective_broker_max_connections == 100


def test_explicit_broker_max_connections_below_concurrency_is_not_used_as_is():
    try:
        s = Settings(concurrency=200, broker_max_connections=10)
    except SettingsError as exc:
        assert "broker_max_connections" in str(exc)
        return
    assert s.effective_broker_max_connections > 200


def test_with_overrides_revalidates():
    s = Settings()
    assert s.with_overrides(concurrency=5).concurrency == 5
    with pytest.raises(SettingsError):
        s.with_overrides(pool="nope")


def test_routes_from_the_config_file(tmp_path):
    path = tmp_path / "promptq.toml"
    path.write_text('[routes.fast]\ntargets = ["openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest"]\n')
    settings = Settings.load(environ={}, config_path=str(path))
    assert settings.routes == {"fast": ["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"]}


@pytest.mark.parametrize("table, message", [
    ('[routes.fast]\ntargets = []\n', "non-empty list"),
    ('[routes.fast]\ntargets = ["nowhere:x"]\n', "unknown provider 'nowhere'"),
    ('[routes.fast]\nmodels = ["mock:x"]\n', "exactly one key"),
])
def test_bad_routes_are_refused_naming_the_route(tmp_path, table, message):
    path = tmp_path / "promptq.toml"
    path.write_text(table)
    with pytest.raises(SettingsError, match=message) as info:
        Settings.load(environ={}, config_path=str(path))
    assert "[routes.fast]" in str(info.value)
