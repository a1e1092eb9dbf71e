"""Open schemas: entity types, row kinds and instant actions declared by the tokenizer spec (a non-video catalog
end to end), and the reward thresholds of the training configs."""

import copy
import json

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL

from genpage_cli import main
from genpage_hf import Catalog, CatalogEntity, CatalogRow, load_spec, validate_spec
from genpage_hf.catalog import ENTITY_TYPES, ROW_KINDS, CatalogSchema
from genpage_hf.checkpoint import build_genpage, load_genpage, save_genpage
from genpage_hf.commands.base import parse_command
from genpage_hf.commands.train import COMMANDS as TRAIN_COMMANDS
from genpage_hf.generation import PageGenerator, RuleSet
from genpage_hf.record_tokens_genpage import INSTANT_ACTIONS
from genpage_hf.records import Impression, record_schema
from genpage_hf.rewards import RewardConfig, wbc_targets

CATEGORIES = ("electronics", "kitchen", "toys")
NOW = 1_700_000_000.0


def shop_spec() -> dict:
    """An e-commerce spec: products and bundles, category rows plus deals and recently viewed, shop actions."""
    spec = copy.deepcopy(load_spec())
    spec["entity_types"] = ["product", "bundle"]
    spec["row_kinds"] = ["deals", "recently_viewed"]
    spec["action_types"] = {"prefix": "ACT:", "values": ["view", "add_to_cart", "purchase"],
                            "instant": ["add_to_cart", "purchase"]}
    spec["profile"] = {"segment": {"prefix": "SEG:", "values": ["new", "returning"]}}
    spec["request"] = {"device": {"prefix": "DEV:", "values": ["app", "web"]}}
    spec["inject"] = {"prefix": "INJ:", "values": ["new", "restock"]}
    spec["page"] = {"rows_per_page": 3, "entities_per_row": 3}
    return validate_spec(spec)


def shop_catalog_dict() -> dict:
    """catalog.json of 12 products (4 per category) and 2 bundles, with 4-dimensional content vectors."""
    rng = np.random.default_rng(0)
    entities = [{"id": f"p{i}", "title": f"Product {i}", "type": "product", "genres": [CATEGORIES[i % 3]],
                 "release_day": -i, "content": rng.normal(size=4).round(4).tolist()} for i in range(12)]
    entities += [{"id": f"b{i}", "title": f"Bundle {i}", "type": "bundle", "genres": list(CATEGORIES[:2]),
                  "content": rng.normal(size=4).round(4).tolist()} for i in range(2)]
    rows = [{"id": f"genre_{c}", "title": c.title(), "kind": "genre", "genre": c} for c in CATEGORIES]
    rows += [{"id": "deals", "title": "Deals", "kind": "deals", "genre": None},
             {"id": "recently_viewed", "title": "Recently viewed", "kind": "recently_viewed", "genre": None}]
    return {"entities": entities, "rows": rows}


def shop_record() -> dict:
    return {
        "context": {"user_id": "shopper1", "timestamp": NOW, "profile": {"segment": "returning"},
                    "request": {"device": "app"},
                    "history": [{"entity": "p1", "action": "view", "timestamp": NOW - 7200, "duration": 45.0},
                                {"entity": "p1", "action": "add_to_cart", "timestamp": NOW - 7000, "duration": 0.0},
                                {"entity": "p4", "action": "purchase", "timestamp": NOW - 3600}],
                    "inject": [{"entity": "b1", "kind": "restock"}]},
        "page": {"rows": [{"row": "deals", "entities": ["p2", "b0"]},
                          {"row": "genre_kitchen", "entities": ["p1", "p4", "p7"]}]},
        "feedback": {"impressed": [True, True, True, True, False], "played": [True, False, False, False, False],
                     "play_duration": [30.0, 0.0, 0.0, 0.0, 0.0], "thumbs": [0, 0, 0, 0, 0],
                     "abandoned": [False, True, True, True, False]},
    }


def test_the_default_spec_refuses_a_product_naming_the_allowed_types(tmp_path):
    data = shop_catalog_dict()
    with pytest.raises(ValueError, match=r"entity 'p0': type must be one of \['movie', 'show', 'game', 'live'\].*"
                                         r"got 'product'"):
        Catalog.from_dict(data)
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"catalog\.json.*entity 'p0': type must be one of"):
        Catalog.load(path, spec=load_spec())
    with pytest.raises(ValueError, match=r"row 'deals': kind must be one of \['genre', 'continue_watching'"):
        Catalog.from_dict({"entities": data["entities"][:2], "rows": data["rows"]},
                          spec=CatalogSchema(entity_types=("product",)))
    video = Catalog([CatalogEntity(id="m1", type="show")], [CatalogRow(id="trending", kind="trending")])
    with pytest.raises(ValueError, match=r"entity 'm1': type must be one of \['product', 'bundle'\].* got 'show'"):
        build_genpage(video, shop_spec(), **TINY_MODEL)


def test_catalog_schema_of_a_spec_and_its_defaults():
    assert CatalogSchema.from_spec(load_spec()) == CatalogSchema() == CatalogSchema(ENTITY_TYPES, ROW_KINDS)
    shop = CatalogSchema.from_spec(shop_spec())
    assert shop.entity_types == ("product", "bundle") and shop.row_kinds == ("genre", "deals", "recently_viewed")
    data = shop_catalog_dict()
    del data["entities"][0]["type"]  # a catalog file's entity without a type takes the spec's first one
    assert Catalog.from_dict(data, spec=shop).entities[0].type == "product"
    grown = Catalog.from_dict(data, spec=shop).extend([CatalogEntity(id="b9", type="bundle")])
    assert grown.schema == shop
    with pytest.raises(ValueError, match=r"entity 'x': type must be one of \['product', 'bundle'\].* got 'movie'"):
        grown.extend([CatalogEntity(id="x")])


def test_a_shop_catalog_tokenizes_saves_grows_and_generates_a_page_under_rules(tmp_path, capsys):
    spec = shop_spec()
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps(shop_catalog_dict()))
    catalog = Catalog.load(catalog_file, spec=spec)
    assert {e.type for e in catalog.entities} == {"product", "bundle"}
    record = Impression.from_dict(shop_record(), spec=spec).to_dict()
    model, tok = build_genpage(catalog, spec, seed=0, **TINY_MODEL)
    tokens = tok.context_tokens(record["context"])
    assert tokens[:5] == ["[BOS]", "[PROFILE]", "SEG:returning", "[REQUEST]", "DEV:app"]
    assert tokens[6:14] == ["E:p1", "ACT:view", "AGE:1", "DUR:1", "E:p1", "ACT:add_to_cart", "AGE:1", "DUR:0"]
    assert tokens[-4:] == ["[INJECT]", "E:b1", "INJ:restock", "[PAGE]"]
    page_ids = tok.encode_page(record["page"])
    assert tok.decode_page(page_ids) == record["page"]

    eligible = {f"genre_{c}": [e.id for e in catalog.entities if c in e.genres] for c in CATEGORIES}
    rules = RuleSet(rows_per_page=3, pinned_rows={"deals": 0}, row_eligibility=eligible,
                    blocked_entities=["p4"])  # bought already
    page = PageGenerator(model.eval(), tok).generate_page(record["context"], rules).to_dict()
    rows = page["rows"]
    assert len(rows) == 3 and rows[0]["row"] == "deals"
    shown = [e for row in rows for e in row["entities"]]
    assert len(shown) == 9 == len(set(shown)) and "p4" not in shown
    for row in rows:
        assert set(row["entities"]) <= set(eligible.get(row["row"], catalog.entity_ids))

    save_genpage(model, tok, tmp_path / "shop", catalog)
    _, loaded_tok, loaded = load_genpage(tmp_path / "shop")
    assert loaded == catalog and loaded.schema == CatalogSchema.from_spec(spec)
    assert loaded_tok.context_tokens(record["context"]) == tokens

    # `genpage update --catalog` validates the new items against the folder's own spec
    (tmp_path / "new.json").write_text(json.dumps({"entities": [
        {"id": "b7", "type": "bundle", "genres": ["toys"], "content": [0.1, 0.2, 0.3, 0.4]}], "rows": []}))
    main(["update", "--model_name_or_path", str(tmp_path / "shop"), "--catalog", str(tmp_path / "new.json"),
          "--output_dir", str(tmp_path / "grown")])
    _, grown_tok, grown = load_genpage(tmp_path / "grown")
    assert grown.entity_ids[-1] == "b7" and grown_tok.id_to_entity(len(grown_tok) - 1) == "b7"
    (tmp_path / "video.json").write_text(json.dumps({"entities": [{"id": "m1", "type": "movie"}], "rows": []}))
    with pytest.raises(SystemExit) as exc:
        main(["update", "--model_name_or_path", str(tmp_path / "shop"), "--catalog", str(tmp_path / "video.json"),
              "--output_dir", str(tmp_path / "refused")])
    assert exc.value.code == 2
    assert "video.json': entity 'm1': type must be one of ['product', 'bundle']" in capsys.readouterr().err


def test_genpage_init_and_generate_with_a_shop_catalog_and_spec(tmp_path, capsys):
    import yaml

    (tmp_path / "shop.yaml").write_text(yaml.safe_dump(shop_spec()))
    (tmp_path / "catalog.json").write_text(json.dumps(shop_catalog_dict()))
    main(["init", "--output_dir", str(tmp_path / "m"), "--catalog", str(tmp_path / "catalog.json"),
          "--spec", str(tmp_path / "shop.yaml"), "--hidden_size", "32", "--num_attention_heads", "2"])
    _, tok, catalog = load_genpage(tmp_path / "m")
    assert tok.spec["entity_types"] == ["product", "bundle"] and len(catalog.entities) == 14
    capsys.readouterr()
    main(["generate", "--model_name_or_path", str(tmp_path / "m"), "--json"])  # a demo context of views
    page = json.loads(capsys.readouterr().out)
    assert len(page["rows"]) == 3 and {e for row in page["rows"] for e in row["entities"]} <= set(catalog.entity_ids)


def test_instant_actions_come_from_the_spec(model_and_tokenizer, catalog, context):
    spec = shop_spec()
    record = shop_record()
    record["context"]["history"][1]["duration"] = 5.0  # add_to_cart is instant in the shop spec
    with pytest.raises(ValueError, match=r"history\[1\]\.duration: a 'add_to_cart' action has no duration .*"
                                         r"action_types\.instant.* got 5\.0"):
        Impression.from_dict(record, spec=spec)
    _, shop_tok = build_genpage(Catalog.from_dict(shop_catalog_dict(), spec=spec), spec, **TINY_MODEL)
    with pytest.raises(ValueError, match=r"context\.history\[1\]\.duration: a 'add_to_cart' action"):
        shop_tok.context_tokens(record["context"])

    # the default spec: thumbs, add to list and search click are instant; a spec may say none are
    _, tok = model_and_tokenizer
    thumbs = copy.deepcopy(context)
    thumbs["history"][2]["duration"] = 60.0
    with pytest.raises(ValueError, match="a 'thumbs_up' action"):
        tok.context_tokens(thumbs)
    assert record_schema(tok.spec).instant_actions == INSTANT_ACTIONS
    lenient = copy.deepcopy(tok.spec)
    lenient["action_types"]["instant"] = []
    _, lenient_tok = build_genpage(catalog, lenient, **TINY_MODEL)
    assert lenient_tok.context_tokens(thumbs)[-3:] == ["AGE:0", "DUR:2", "[PAGE]"]  # 60 s of a thumbs up
    # a spec without the key (saved before it existed): the default instant types among its action types
    old = copy.deepcopy(tok.spec)
    del old["action_types"]["instant"]
    old["action_types"]["values"].remove("search_click")
    assert record_schema(old).instant_actions == ("thumbs_up", "thumbs_down", "add_to_list")


def test_a_checkpoint_saved_before_the_new_spec_keys_loads(tmp_path, catalog, context):
    old = copy.deepcopy(load_spec())
    for key in ("entity_types", "row_kinds"):
        del old[key]
    del old["action_types"]["instant"]
    model, tok = build_genpage(catalog, old, **TINY_MODEL)
    save_genpage(model, tok, tmp_path / "old", catalog)
    config = json.loads((tmp_path / "old" / "tokenizer_config.json").read_text())
    assert "entity_types" not in config["spec"] and "instant" not in config["spec"]["action_types"]
    loaded_model, loaded_tok, loaded = load_genpage(tmp_path / "old")
    assert loaded == catalog and loaded.schema == CatalogSchema()
    assert loaded_tok.encode_prompt(context) == tok.encode_prompt(context)
    torch.testing.assert_close(loaded_model.get_input_embeddings().weight, model.get_input_embeddings().weight)


def _record_with_a_play(seconds: float) -> dict:
    """A default-spec record whose one impressed slot was played for `seconds`."""
    return {"context": {"user_id": "u1", "timestamp": NOW, "profile": {"language": "en", "profile_type": "adult"},
                        "request": {"time_of_day": "evening", "day_of_week": "sat", "device": "tv"},
                        "history": [{"entity": "m1", "action": "play", "timestamp": NOW - 600, "duration": 300.0}]},
            "page": {"rows": [{"row": "trending", "entities": ["m2", "m3"]}]},
            "feedback": {"impressed": [True, False], "played": [True, False], "play_duration": [seconds, 0.0],
                         "thumbs": [0, 0], "abandoned": [False, False]}}


def test_reward_thresholds_from_the_cli_reach_the_pretraining_filter_and_wbc_targets(model_and_tokenizer):
    from genpage_hf.training import NTPTrainer, WBCTrainer

    _, tok = model_and_tokenizer
    record = _record_with_a_play(900.0)  # 15 minutes: short by default, long from 10 minutes
    common = ["--output_dir", "unused", "--use_cpu", "--num_negatives", "0"]
    _, _, default = parse_command("wbc", TRAIN_COMMANDS["wbc"], common)
    _, _, args = parse_command("wbc", TRAIN_COMMANDS["wbc"], common + ["--reward_long_play_s", "600",
                                                                       "--reward_binge_play_s", "1800"])
    assert args.reward_config() == RewardConfig(long_play_s=600.0, binge_play_s=1800.0)
    assert wbc_targets(record["feedback"], args.reward_config())[1][0] == 1.0
    assert wbc_targets(record["feedback"], default.reward_config())[1][0] == 0.5

    def entity_weights(a):
        example = WBCTrainer.build_examples([record], tok, a, seed=0)[0]
        return [w for w, is_row in zip(example["target_weight"], example["target_is_row"]) if not is_row]

    assert entity_weights(default) == [0.5] and entity_weights(args) == [1.0]

    ntp = ["--output_dir", "unused", "--use_cpu", "--min_page_reward", "0.75"]
    _, _, keep = parse_command("pretrain", TRAIN_COMMANDS["pretrain"], ntp + ["--reward_long_play_s", "600"])
    _, _, drop = parse_command("pretrain", TRAIN_COMMANDS["pretrain"], ntp)
    assert len(NTPTrainer.build_examples([record], tok, keep, seed=0)) == 1  # page reward 1.0 > 0.75
    assert len(NTPTrainer.build_examples([record], tok, drop, seed=0)) == 0  # page reward 0.5


def test_reward_threshold_options_are_validated_like_reward_config():
    from genpage_hf.training import WBCConfig
    from genpage_hf.training.configs import RewardModelConfig

    with pytest.raises(ValueError, match="need 0 < long_play_s <= binge_play_s"):
        WBCConfig(output_dir="unused", use_cpu=True, reward_long_play_s=6000.0, reward_binge_play_s=600.0)
    with pytest.raises(ValueError, match="--reward_binge_play_s must be a finite number"):
        RewardModelConfig(output_dir="unused", use_cpu=True, reward_binge_play_s=float("inf"))
    with pytest.raises(ValueError, match="need 0 < long_play_s"):
        RewardModelConfig(output_dir="unused", use_cpu=True, reward_long_play_s=0.0)


def test_a_full_incremental_retrain_copies_the_reward_options_to_its_pretraining_stage():
    from genpage_hf.training import NTPConfig
    from genpage_hf.training.incremental import _SHARED_FIELDS

    rewards = {f for f in NTPConfig.__dataclass_fields__ if f.startswith("reward_")}
    assert {"reward_long_play_s", "reward_binge_play_s"} <= rewards <= set(_SHARED_FIELDS)
