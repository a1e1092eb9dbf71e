"""Quickstart defaults: the default run is the full one (not the tiny smoke run), judged on >= 4,000 requests."""

import pytest
from transformers import HfArgumentParser

from genpage_hf.studies.quickstart import QuickstartConfig
from genpage_hf.studies.recipe import Recipe


def test_default_quickstart_is_not_the_tiny_smoke_run():
    config = QuickstartConfig()
    assert config.tiny is False and config.resolved() is config
    (parsed,) = HfArgumentParser(QuickstartConfig).parse_args_into_dataclasses([])
    assert parsed.tiny is False and parsed.resolved().users == config.users
    assert QuickstartConfig(tiny=True).resolved().users == QuickstartConfig.tiny_config().users < config.users


def test_default_quickstart_is_judged_on_at_least_4000_requests():
    assert QuickstartConfig().ab_requests >= 4000


def test_quickstart_recipe_is_the_protocol_default_recipe():
    """The quickstart trains the protocol's default recipe, so studies and quickstart start from one recipe."""
    assert QuickstartConfig().recipe() == Recipe()
    assert QuickstartConfig(seed=3, layers=1).recipe() == Recipe(seed=3, layers=1)


@pytest.mark.parametrize("bad, match", [(dict(ntp_steps=0), "--ntp_steps"), (dict(days=1), "--days"),
                                        (dict(hidden_size=30, heads=4), "divisible"), (dict(dtype="fp16"), "--dtype")])
def test_bad_quickstart_options_name_the_option(bad, match):
    with pytest.raises(ValueError, match=match):
        QuickstartConfig(**bad)
