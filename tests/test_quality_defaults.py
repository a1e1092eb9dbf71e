"""Quickstart defaults (issue 14): the default run is the full one, judged on >= 4,000 requests."""

from transformers import HfArgumentParser

from genpage_hf.studies.quickstart import QuickstartConfig, QuickstartOutput


def test_default_quickstart_is_not_the_tiny_smoke_run():
    config = QuickstartConfig()
    assert config.tiny is False and config.resolved() is config
    _, parsed = HfArgumentParser((QuickstartOutput, QuickstartConfig)).parse_args_into_dataclasses(["--output_dir", "x"])
    assert parsed.tiny is False and parsed.resolved().users == config.users
    assert QuickstartConfig(tiny=True).resolved().users == QuickstartConfig.tiny_config().users < config.users


def test_default_quickstart_is_judged_on_at_least_4000_requests():
    assert QuickstartConfig().ab_requests >= 4000
