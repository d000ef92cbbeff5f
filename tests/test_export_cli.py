"""
C{asapp-mg export}'s refusals (its success is exercised end to end, as a
process, by tests/test_file_exporter_api.py).
"""

from mgateway.cli import EXIT_FAILURE, EXIT_USAGE, main
from tests.support.gateway import write_config


def test_a_range_that_ends_before_it_starts_is_a_usage_error(tmp_path, capsys):
    config = write_config(tmp_path)
    status = main(["export", "--config", str(config), "--from", "2026-11-30", "--to", "2026-11-29"])
    assert status == EXIT_USAGE
    assert capsys.readouterr().err == "asapp-mg export: --to 2026-11-29 is before --from 2026-11-30\n"


def test_a_date_that_is_not_iso_is_a_usage_error(tmp_path, capsys):
    status = main(["export", "--config", str(write_config(tmp_path)), "--from", "30/11/2026"])
    assert status == EXIT_USAGE
    assert "expected a date YYYY-MM-DD, got '30/11/2026'" in capsys.readouterr().err


def test_a_configuration_the_gateway_refuses_is_one_line(tmp_path, capsys):
    config = write_config(tmp_path, "[exporter]\nbuild_hour = 25\n")
    assert main(["export", "--config", str(config), "--from", "2026-11-30"]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("asapp-mg export: ") and "exporter.build_hour" in err and err.count("\n") == 1, err
