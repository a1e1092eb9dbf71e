import copy

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
    ],
)
def test_bad_spec_error_names_the_key(spec, mutate, key):
    bad = copy.deepcopy(spec)
    mutate(bad)
    with pytest.raises(SpecError, match=key.replace(".", r"\.").replace("[", r"\[")):
        validate_spec(bad)


def test_load_spec_from_file_and_bad_yaml(tmp_path, spec):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(spec))
    assert load_spec(good) == spec
    bad = tmp_path / "bad.yaml"
    bad.write_text("special: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
