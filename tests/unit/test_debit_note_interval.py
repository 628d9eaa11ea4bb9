"""Local providers bill as yagna's do by default: a debit note every 120 s, unless told otherwise."""

from __future__ import annotations

import pytest

from golem_api._cli import build_parser
from golem_local.cli import node_config
from golem_local.config import DEFAULT_DEBIT_NOTE_INTERVAL_SEC, LocalNetworkConfig


def test_providers_offer_yagnas_default_debit_note_interval() -> None:
    # yagna's provider offers golem.com.scheme.payu.debit-note.interval-sec? = 120 unless configured otherwise
    assert DEFAULT_DEBIT_NOTE_INTERVAL_SEC == 120
    config = LocalNetworkConfig.with_providers(3)
    assert {spec.debit_note_interval_sec for spec in config.providers} == {120}


def test_the_node_command_sets_the_interval_of_every_provider() -> None:
    args = build_parser().parse_args(["node", "--providers", "4", "--debit-note-interval", "5"])
    assert [spec.debit_note_interval_sec for spec in node_config(args).providers] == [5, 5, 5, 5]
    default = build_parser().parse_args(["node", "--providers", "2"])
    assert [spec.debit_note_interval_sec for spec in node_config(default).providers] == [120, 120]


def test_the_node_command_refuses_an_interval_of_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["node", "--debit-note-interval", "0"])
    assert "0 is not positive" in capsys.readouterr().err
