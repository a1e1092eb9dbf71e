"""Loss = sampler: the log-probs GRPO trains on are those of the distribution PageGenerator samples from."""

import itertools
import os

import numpy as np
import pytest
import torch
from rl_env import catalog_ids as _ids
from rl_env import grpo_rules as _rules

from genpage_hf.checkpoint import build_genpage, save_genpage
from genpage_hf.commands.model import demo_context
from genpage_hf.generation import GenPageLogitsProcessor, PageGenerator, PageRequest, RuleSet
from genpage_hf.generation.sampling import plan_log_probs, sampling_plan
from genpage_hf.training.configs import GenPageGRPOConfig
from genpage_hf.training.grpo import GenPageGRPOTrainer, build_grpo_dataset
from genpage_hf.training.reward_model import reward_model_from_policy

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
T = 0.7


@pytest.fixture()
def tiny(catalog, spec):
    model, tok = build_genpage(catalog, spec, seed=0, **TINY)
    torch.manual_seed(1)
    with torch.no_grad():  # an untrained head is near uniform: spread the logits so the draws are not
        model.lm_head.weight.normal_(0, 0.5)
    return model.eval(), tok


def _brute_force(model, tok, prompt, completion, rules, a, sampled="all"):
    """Each token's log-prob from scratch: a cache-free forward of its whole prefix, a fresh processor's mask,
    and for a hybrid fill the product of its picks' softmaxes over the still-allowed entities at the fill's start.
    With `sampled="rows"` an entity must be the greedy pick among what is still allowed, and is certain (0)."""
    out, j = [], 0
    n_rows = rules.rows_per_page
    width = rules.entities_per_row
    seq = list(prompt)

    def logits_after(prefix):
        with torch.no_grad():
            return model(input_ids=torch.tensor([prefix])).logits[0, -1].double() / T

    def allowed(prefix):
        return GenPageLogitsProcessor(rules, tok).allowed(torch.tensor([prefix]))[0]

    def log_prob(scores, mask, token, is_row):
        log_p = scores.masked_fill(~mask, -np.inf).log_softmax(-1)
        if sampled == "rows" and not is_row:
            assert token == int(log_p.argmax()), "an entity that is not the greedy pick"
            return 0.0
        return float(log_p[token])

    for _ in range(n_rows):
        for k in range(1 + min(width, a if a is not None else width)):  # the row token, its autoregressive entities
            out.append(log_prob(logits_after(seq), allowed(seq), completion[j], k == 0))
            seq.append(completion[j])
            j += 1
        rest = width - min(width, a if a is not None else width)
        if rest == 1:  # a one-slot fill is one autoregressive step
            out.append(log_prob(logits_after(seq), allowed(seq), completion[j], False))
            seq.append(completion[j])
            j += 1
        elif rest > 1:
            scores, mask = logits_after(seq), allowed(seq)
            for _ in range(rest):
                out.append(log_prob(scores, mask, completion[j], False))
                seq.append(completion[j])
                mask = mask & allowed(seq)
                mask[completion[j]] = False
                j += 1
    assert completion[j] == tok.eos_token_id and j == len(completion) - 1
    return out + [0.0]  # [EOS] is the only token the rules leave


def _plan_logps(model, tok, prompts, completions, rules, a, sampled="all"):
    source, allowed, valid = sampling_plan(GenPageLogitsProcessor(rules, tok), prompts, completions, a, sampled)
    logps = []
    for b, (p, c) in enumerate(zip(prompts, completions)):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + c])).logits[:, len(p) - 1:-1]
        lp, _ = plan_log_probs(logits, torch.tensor([c]), source[b:b + 1, :len(c)], allowed[b:b + 1, :len(c)],
                               valid[b:b + 1, :len(c)], T)
        logps.append(lp[0].tolist())
    return logps


@pytest.mark.parametrize("a,sampled", [(None, "all"), (1, "all"), (0, "all"), (None, "rows"), (1, "rows")])
def test_sampled_pages_log_probs_match_a_brute_force_recomputation(tiny, a, sampled):
    model, tok = tiny
    rules = _rules(tok)
    requests = [PageRequest(demo_context(tok, seed=s), rules) for s in range(6)]
    gen = PageGenerator(model, tok, autoregressive_entities=a, do_sample=True, temperature=T, seed=3,
                        sampled_tokens=sampled)
    pages = gen.generate(requests) + gen.generate(requests)
    prompts = [gen.prompt_ids(r) for r in requests] * 2
    completions = [list(p.token_ids) + [tok.eos_token_id] for p in pages]
    planned = _plan_logps(model, tok, prompts, completions, [rules] * len(prompts), a, sampled)
    for p, c, got in zip(prompts, completions, planned):
        want = _brute_force(model, tok, p, c, rules, a, sampled)
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert len({tuple(c) for c in completions}) > 1
    row_ids = set(tok.row_token_ids.tolist())
    assert len({tuple(t for t in c if t in row_ids) for c in completions}) > 1  # the rows are drawn


def test_sampler_frequencies_match_the_planned_probabilities_which_sum_to_one(tiny):
    """On a page space small enough to enumerate (1 row of 2 among 2 rows x 4 titles, the row filled in one
    draw): the planned probabilities of all pages sum to 1 and 4,000 sampled pages follow them."""
    model, tok = tiny
    ents, rows = _ids(tok)
    rules = RuleSet(rows_per_page=1, entities_per_row=2, row_candidates=rows[:2],
                    row_eligibility={rows[0]: ents[:4], rows[1]: ents[3:7]})
    context = demo_context(tok, seed=0)
    gen = PageGenerator(model, tok, autoregressive_entities=0, do_sample=True, temperature=T, seed=0)
    prompt = gen.prompt_ids(PageRequest(context, rules))
    space = [[tok.row_to_id(r), tok.entity_to_id(x), tok.entity_to_id(y), tok.eos_token_id]
             for r, pool in ((rows[0], ents[:4]), (rows[1], ents[3:7])) for x, y in itertools.permutations(pool, 2)]
    logps = _plan_logps(model, tok, [prompt] * len(space), space, [rules] * len(space), 0)
    probs = np.exp([sum(lp) for lp in logps])
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    n = 4000
    pages = gen.generate([PageRequest(context, rules)] * n)
    index = {tuple(s[:-1]): i for i, s in enumerate(space)}
    counts = np.bincount([index[tuple(p.token_ids)] for p in pages], minlength=len(space))
    assert np.abs(counts / n - probs).sum() / 2 < 0.05  # total variation; its sampling noise is ~0.02 here
    # per page, within 4.5 binomial standard deviations
    assert (np.abs(counts - n * probs) <= 4.5 * np.sqrt(n * probs * (1 - probs)) + 1).all()


def test_an_unknown_sampled_tokens_is_named(tiny, tmp_path):
    model, tok = tiny
    with pytest.raises(ValueError, match="sampled_tokens must be one of"):
        PageGenerator(model, tok, do_sample=True, sampled_tokens="entities")
    with pytest.raises(ValueError, match="--sampled_tokens must be all or rows"):
        GenPageGRPOConfig(output_dir=str(tmp_path), sampled_tokens="entities", use_cpu=True)


def test_a_completion_the_sampler_cannot_draw_is_named(tiny):
    model, tok = tiny
    rules = _rules(tok)
    ents, rows = _ids(tok)
    prompt = PageGenerator(model, tok).prompt_ids(PageRequest(demo_context(tok, seed=0), rules))
    wrong_row = [tok.row_to_id(rows[1])] + [tok.entity_to_id(e) for e in ents[4:7]]
    with pytest.raises(ValueError, match="completion 0: token 0 .* not one the sampler could draw"):
        sampling_plan(GenPageLogitsProcessor(rules, tok), [prompt], [wrong_row], 1)


@pytest.mark.parametrize("sampled", ["all", "rows"])
def test_grpo_trainer_scores_rollouts_with_the_sampler_log_probs(tmp_path, tiny, sampled):
    """The log-probs GenPageGRPOTrainer's loss and KL read, on TRL's padded batch layout, equal the brute force."""
    model, tok = tiny
    save_genpage(model, tok, tmp_path / "policy")
    from genpage_hf.checkpoint import load_genpage

    policy, tok, _ = load_genpage(tmp_path / "policy")
    rm = reward_model_from_policy(policy, tok, value_at="entity", slot_model="hidden")
    rules = _rules(tok)
    data = build_grpo_dataset([{"context": demo_context(tok, seed=s), "rules": rules} for s in range(4)], tok)
    args = GenPageGRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, per_device_train_batch_size=8,
                             num_generations=4, use_cpu=True, seed=0, temperature=T, autoregressive_entities=1,
                             sampled_tokens=sampled)
    trainer = GenPageGRPOTrainer(policy, rm, args, train_dataset=data, processing_class=tok)
    out = trainer.rollout_func(list(data["prompt"]) * 2, trainer)
    prompts, completions = out["prompt_ids"], out["completion_ids"]
    P, C = max(map(len, prompts)), max(map(len, completions))
    ids = torch.full((len(prompts), P + C), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        ids[b, P - len(p):P], mask[b, P - len(p):P] = torch.tensor(p), 1
        ids[b, P:P + len(c)], mask[b, P:P + len(c)] = torch.tensor(c), 1
    policy.eval()
    with torch.no_grad():
        logps, entropy, _ = trainer._get_per_token_logps_and_entropies(policy, ids, mask, C, compute_entropy=True)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        want = _brute_force(policy, tok, p, c, rules, 1, sampled)
        np.testing.assert_allclose(logps[b, :len(c)].tolist(), want, atol=1e-5)
        assert (logps[b, len(c):] == 0).all() and (entropy[b, :len(c) - 1] >= 0).all()
    assert (entropy[:, 0] == 0).all()  # the pinned row is certain; its first title is not when titles are sampled
    assert ((entropy[:, 1] > 0) == (sampled == "all")).all()
