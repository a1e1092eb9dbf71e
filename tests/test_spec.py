import copy
import re

import pytest
import yaml

from genpage_hf import SpecError, load_spec, validate_spec
from genpage_hf.tokenization_genpage import spec_base_tokens


def test_default_spec_loads_and_has_unique_tokens(spec):
    tokens = spec_base_tokens(spec)
    assert len(tokens) == len(set(tokens))
    assert spec["page"] == {"rows_per_page": 10, "entities_per_row": 10}


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda s: s.update(colour="red"), "colour"),
        (lambda s: s["buckets"]["age"].update(extra=1), "buckets.age.extra"),
        (lambda s: s.pop("segments"), "segments"),
        (lambda s: s["special"].pop("eos"), "special.eos"),
        (lambda s: s["buckets"]["age"].__setitem__("boundaries", [10, 5, 20]), "buckets.age.boundaries"),
        (lambda s: s["buckets"]["duration"].__setitem__("boundaries", [1, 1]), "buckets.duration.boundaries"),
        (lambda s: s["segments"].__setitem__("page", "[HISTORY]"), "duplicate tokens"),
        (lambda s: s["request"]["device"]["values"].append("tv"), "request.device.values"),
        (lambda s: s["page"].__setitem__("entities_per_row", 0), "page.entities_per_row"),
        (lambda s: s["fallback"].__setitem__("entity", "bad token"), "fallback.entity"),
        (lambda s: s["action_types"].__setitem__("prefix", "E:"), "prefixes.entity"),
        (lambda s: s.update(entity_types=[]), "entity_types: expected a non-empty list"),
        (lambda s: s.update(entity_types="product"), "entity_types: expected a non-empty list"),
        (lambda s: s.update(entity_types=["product", "product"]), "entity_types: duplicate values ['product']"),
        (lambda s: s.update(entity_types=["gift card"]), "entity_types[0]: expected a non-empty string"),
        (lambda s: s.update(row_kinds=["deals", "genre"]), "row_kinds: lists the row kinds besides 'genre'"),
        (lambda s: s.update(row_kinds=["deals", "deals"]), "row_kinds: duplicate values"),
        (lambda s: s.update(row_kinds=None), "row_kinds: expected a list"),
        (lambda s: s["action_types"].__setitem__("instant", ["teleport"]), "action_types.instant[0]: 'teleport' is "
                                                                           "not one of action_types.values"),
        (lambda s: s["action_types"].__setitem__("instant", "thumbs_up"), "action_types.instant: expected a list"),
        (lambda s: s["action_types"].__setitem__("instant", ["play", "play"]), "action_types.instant: duplicate"),
        (lambda s: s["action_types"].__setitem__("colour", []), "action_types.colour: unknown key"),
    ],
)
def test_bad_spec_error_names_the_key(spec, mutate, key):
    bad = copy.deepcopy(spec)
    mutate(bad)
    with pytest.raises(SpecError, match=re.escape(key)):
        validate_spec(bad)


def test_load_spec_from_file_and_bad_yaml(tmp_path, spec):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(spec))
    assert load_spec(good) == spec
    bad = tmp_path / "bad.yaml"
    bad.write_text("special: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_the_new_keys_are_optional_and_default_to_the_video_schema(spec):
    from genpage_hf.catalog import ENTITY_TYPES, SPECIAL_ROWS
    from genpage_hf.record_tokens_genpage import INSTANT_ACTIONS, instant_actions

    assert spec["entity_types"] == list(ENTITY_TYPES) and spec["row_kinds"] == list(SPECIAL_ROWS)
    assert spec["action_types"]["instant"] == list(INSTANT_ACTIONS)
    old = copy.deepcopy(spec)
    for key in ("entity_types", "row_kinds"):
        del old[key]
    del old["action_types"]["instant"]
    assert validate_spec(old) == old and instant_actions(old) == INSTANT_ACTIONS
    old["row_kinds"] = []  # only genre rows
    assert validate_spec(old)["row_kinds"] == []
