"""Agents, batched generation and trajectory records.

- the spans of mem1 / full / truncate on a hand-made trajectory;
- token-in/token-out: what a rollout fed the policy equals `context_ids` rebuilt from the spans;
- batched generation equals one-at-a-time generation (left padding, position ids, finished rows
  leaving the batch, the reused prompt cache), greedy and sampled;
- keys/values reused across turns (full: the whole previous turn; truncate: until it cuts) give
  what recomputing every context from scratch gives, under a memory budget, and the store is
  empty after a rollout;
- a batch split into several prefills under `prefill_mb` (more for longer contexts) gives the same
  responses as one big batch;
- an untrained model rolls out without a crash, its garbage becoming format errors;
- jsonl write -> read is lossless, and a bad line is reported with file:line while the rest loads.
"""

import json
from dataclasses import asdict, replace

import pytest
import torch

from mem1lite.generate import GenerationConfig, ModelPolicy, TeacherPolicy
from mem1lite.masks import without_float32_islands
from mem1lite.metrics import dependency
from mem1lite.model import build_tiny_model
from mem1lite.protocol import QAEnvironment
from mem1lite.retrieval import PoolRetrievers
from mem1lite.rollout import FullAgent, Mem1Agent, RolloutConfig, TruncateAgent, make_agent, run_episodes
from mem1lite.trajectory import PROMPT, Trajectory, Turn, read_jsonl, summarize, token_kinds, write_jsonl
from mem1lite.world import make_tasks


@pytest.fixture(scope="module")
def dev(world):
    return PoolRetrievers(world)["dev"]


@pytest.fixture(scope="module")
def model64():
    """The untrained tiny Qwen2 in float64, so that batched and single runs agree to ~1e-15."""
    return build_tiny_model(seed=0, dtype=torch.float64).eval()


def mixed_envs(world, retriever, sizes=(1, 3, 2, 1, 2)):
    """Tasks of different N in one batch: prompts of different lengths, episodes of different turns."""
    tasks = [make_tasks(world, "dev", n, i + 1, seed=1)[i] for i, n in enumerate(sizes)]
    return tasks, [QAEnvironment.from_task(t, retriever) for t in tasks]


def rollout(
    policy, tokenizer, world, retriever, agent="mem1", sizes=(1, 3, 2, 1, 2), seed=0, keep=512, on_turn=None
):
    tasks, envs = mixed_envs(world, retriever, sizes)
    cfg = RolloutConfig(agent=agent, truncate_tokens=keep, seed=seed, progress=False)
    return run_episodes(policy, tokenizer, envs, cfg, tasks, on_turn=on_turn)


# ---------------------------------------------------------------------------------------------
# Agents


def hand_made() -> Trajectory:
    t = Trajectory("t", "dev", ["q1", "q2"], ["a", "b"], "mem1", "teacher", prompt_ids=list(range(100, 110)))
    pieces = [(list(range(200, 205)), list(range(300, 307))), (list(range(400, 404)), list(range(500, 506)))]
    for out, obs in pieces:
        t.turns.append(Turn([], out, [0.0] * len(out), "s" * len(out), obs, "search"))
    return t


def test_agent_spans_on_a_hand_made_trajectory():
    t = (
        hand_made()
    )  # prompt 10 ids, then response 0 (5), observation 0 (7), response 1 (4), observation 1 (6)
    assert Mem1Agent().spans(t) == [[PROMPT, 0, 10], [2, 0, 4], [3, 0, 6]]
    assert FullAgent().spans(t) == [[PROMPT, 0, 10], [0, 0, 5], [1, 0, 7], [2, 0, 4], [3, 0, 6]]
    # truncate keeps the prompt and the last K history tokens, cutting the oldest piece it reaches
    assert TruncateAgent(12).spans(t) == [[PROMPT, 0, 10], [1, 5, 7], [2, 0, 4], [3, 0, 6]]
    assert TruncateAgent(10).spans(t) == [[PROMPT, 0, 10], [2, 0, 4], [3, 0, 6]]
    assert TruncateAgent(3).spans(t) == [[PROMPT, 0, 10], [3, 3, 6]]
    assert TruncateAgent(1000).spans(t) == FullAgent().spans(t)
    ids = t.ids_of(TruncateAgent(12).spans(t))
    assert ids == list(range(100, 110)) + [305, 306] + list(range(400, 404)) + list(range(500, 506))
    # on the first turn every agent sees the prompt alone
    first = Trajectory("t", "dev", [], [], "mem1", "teacher", prompt_ids=[1, 2, 3])
    for agent in (Mem1Agent(), FullAgent(), TruncateAgent(2)):
        assert agent.spans(first) == [[PROMPT, 0, 3]]


def test_context_lengths_peak_and_dependency():
    t = hand_made()
    t.turns[0].spans = [[PROMPT, 0, 10]]
    t.turns[1].spans = [[PROMPT, 0, 10], [0, 0, 5], [1, 0, 7]]
    assert t.context_lengths() == [10, 22]
    assert t.context_ids(1) == list(range(100, 110)) + list(range(200, 205)) + list(range(300, 307))
    assert t.peak_tokens == 22
    assert t.dependency == dependency([10, 22], [5, 4])


def test_make_agent():
    assert [make_agent(a).name for a in ("mem1", "full", "truncate")] == ["mem1", "full", "truncate"]
    assert make_agent("truncate", 7).keep_tokens == 7
    with pytest.raises(ValueError, match="unknown agent"):
        make_agent("memo")
    with pytest.raises(ValueError):
        TruncateAgent(0)


# ---------------------------------------------------------------------------------------------
# Token-in/token-out


class Recording:
    """Wraps a policy and keeps a copy of every context it is fed."""

    def __init__(self, policy):
        self.policy, self.calls = policy, []

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def respond(self, contexts, generators, **kw):
        self.calls.append([list(c) for c in contexts])
        return self.policy.respond(contexts, generators, **kw)


def _check_fed_equals_rebuilt(calls, trajs):
    # call k served, in episode order, every episode that has a turn k
    for k, fed in enumerate(calls):
        assert fed == [t.context_ids(k) for t in trajs if len(t.turns) > k]
    assert len(calls) == max(len(t.turns) for t in trajs)


@pytest.mark.parametrize("agent", ["mem1", "full", "truncate"])
def test_teacher_context_fed_equals_context_rebuilt_from_spans(world, dev, tokenizer, agent):
    policy = Recording(TeacherPolicy(tokenizer))
    trajs = rollout(policy, tokenizer, world, dev, agent)
    _check_fed_equals_rebuilt(policy.calls, trajs)
    assert summarize(trajs)["em_per_objective"] == 1.0
    for t in trajs:
        assert t.turns[0].spans == [[PROMPT, 0, len(t.prompt_ids)]]
        assert all(turn.logprobs == [0.0] * len(turn.output_ids) for turn in t.turns)
        assert t.context_lengths() == [len(t.context_ids(j)) for j in range(len(t.turns))]


@pytest.mark.parametrize("agent", ["mem1", "full", "truncate"])
def test_model_context_fed_equals_context_rebuilt_from_spans(world, dev, tokenizer, model64, agent):
    policy = Recording(ModelPolicy(model64, tokenizer, GenerationConfig(max_new_tokens=12)))
    trajs = rollout(policy, tokenizer, world, dev, agent, keep=60)  # with turn reuse (the default)
    _check_fed_equals_rebuilt(policy.calls, trajs)
    assert policy.reused_tokens > 0


# ---------------------------------------------------------------------------------------------
# Batched generation


def _same(a, b, tol=1e-9):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x.turns) == len(y.turns)
        for s, t in zip(x.turns, y.turns):
            assert s.output_ids == t.output_ids and s.hit_limit == t.hit_limit
            assert max(abs(p - q) for p, q in zip(s.logprobs, t.logprobs)) <= tol


class StopOften(torch.nn.Module):
    """The tiny model, pushed to emit `</search>` at some positions (a row's own), so that rows of one
    batch finish at different steps and leave the batch."""

    def __init__(self, inner, stop_id, context_ends):
        super().__init__()
        self.inner, self.stop_id = inner, stop_id
        self.config = inner.config
        self.context_ends = torch.tensor(sorted(context_ends))

    def forward(self, input_ids, **kw):
        out = self.inner(input_ids=input_ids, **kw)
        last = input_ids[:, -1]
        generated = ~torch.isin(last, self.context_ends)  # the last id of every context is the same
        position = kw["position_ids"][:, -1]  # generation-true, so the same batched or alone
        push = ((position % 29 == 0) & generated).to(out.logits.dtype) * 50.0
        out.logits[:, -1, self.stop_id] += push
        # Never generate a context end, or the test above takes a generated token for a context's
        # last one (an untrained model may repeat one greedily: the seed-0 model repeats newlines).
        out.logits[:, -1, self.context_ends] -= 50.0
        return out


@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (1.0, 1.0), (1.0, 0.9)])
def test_batched_generation_equals_one_at_a_time(world, dev, tokenizer, model64, temperature, top_p):
    ends = {tokenizer.encode("assistant\n")[-1], tokenizer.convert_tokens_to_ids("</information>")}
    model = StopOften(model64, tokenizer.convert_tokens_to_ids("</search>"), ends)
    runs = []
    for batch_size, reuse in ((1, False), (5, True), (2, True)):
        cfg = GenerationConfig(
            max_new_tokens=20,
            temperature=temperature,
            top_p=top_p,
            batch_size=batch_size,
            reuse_prompt_cache=reuse,
        )
        runs.append(rollout(ModelPolicy(model, tokenizer, cfg), tokenizer, world, dev, "mem1"))
    single = runs[0]
    for other in runs[1:]:
        _same(single, other)
    lengths = {len(turn.output_ids) for t in single for turn in t.turns}
    assert len(lengths) > 3 and 20 in lengths  # rows did finish at different steps
    for turn in (turn for t in single for turn in t.turns):
        assert turn.hit_limit == (turn.output_ids[-1] != model.stop_id)


def test_greedy_full_agent_batched_equals_single_and_evicted_prompt_cache(world, dev, tokenizer, model64):
    one = ModelPolicy(model64, tokenizer, GenerationConfig(max_new_tokens=10, temperature=0, batch_size=1))
    many = ModelPolicy(model64, tokenizer, GenerationConfig(max_new_tokens=10, temperature=0, cache_mb=1e-4))
    _same(rollout(one, tokenizer, world, dev, "full"), rollout(many, tokenizer, world, dev, "full"))
    assert not many._prefix_store  # cleared after the rollout


def _stop_often(model64, tokenizer):
    ends = {tokenizer.encode("assistant\n")[-1], tokenizer.convert_tokens_to_ids("</information>")}
    return StopOften(model64, tokenizer.convert_tokens_to_ids("</search>"), ends)


@pytest.mark.parametrize("agent,temperature", [("full", 0.0), ("truncate", 0.0), ("full", 1.0)])
def test_turn_cache_reuse_equals_recompute_from_scratch(world, dev, tokenizer, model64, agent, temperature):
    """Keys/values reused from the previous turn (batched, rows finishing at different steps) give the
    tokens and log-probs of recomputing every context from scratch one episode at a time."""
    model = _stop_often(model64, tokenizer)
    runs, policies = [], []
    settings = ((1, False, False), (5, True, True), (2, True, True), (5, True, False))
    with without_float32_islands():  # float64 throughout: reused and recomputed states agree to ~1e-15
        for batch_size, prompt, turn in settings:
            cfg = GenerationConfig(
                max_new_tokens=20,
                temperature=temperature,
                batch_size=batch_size,
                reuse_prompt_cache=prompt,
                reuse_turn_cache=turn,
            )
            policies.append(ModelPolicy(model, tokenizer, cfg))
            runs.append(rollout(policies[-1], tokenizer, world, dev, agent, keep=60))
    scratch = runs[0]
    for other in runs[1:]:
        _same(scratch, other)
    assert policies[0].reused_tokens == 0
    assert all(not p._prefix_store and p._prefix_bytes == 0 for p in policies)  # cleared after the rollout
    contexts = sum(len(t.context_ids(j)) for t in scratch for j in range(len(t.turns)))
    assert all(p.reused_tokens + p.prefilled_tokens == contexts for p in policies)
    if agent == "full":  # all of the previous turn was reused: prefilled only its last id + the observation
        new = sum(len(t.prompt_ids) for t in scratch) + sum(
            len(t.turns[j - 1].observation_ids) + 1 for t in scratch for j in range(1, len(t.turns))
        )
        assert policies[1].prefilled_tokens == policies[2].prefilled_tokens == new
    else:  # the cut did move (the history fills the budget), and reuse still went past the prompt
        assert any(sum(b - a for _, a, b in t.turns[-1].spans[1:]) == 60 for t in scratch)
        assert policies[1].reused_tokens > policies[3].reused_tokens > 0


class CountBatches:
    """Wraps a ModelPolicy's `_generate` (one batch: one decoding loop) and records each batch's rows."""

    def __init__(self, policy):
        self.sizes: list[int] = []
        inner = policy._generate

        def counted(contexts, *args, **kw):
            self.sizes.append(len(contexts))
            return inner(contexts, *args, **kw)

        policy._generate = counted


def test_prefill_memory_bound_splits_prefills_with_the_same_responses(world, dev, tokenizer, model64):
    """[prefill_mb] Under a small budget a batch's prefill runs in several forwards (full agent: reused
    turn keys/values and all) while decoding still runs the whole batch, and every response and
    log-prob is what one forward gives."""
    model = _stop_often(model64, tokenizer)
    runs, batches, policies = [], [], []
    with without_float32_islands():
        for prefill_mb in (1e6, 2.0):
            cfg = GenerationConfig(max_new_tokens=20, temperature=0.0, prefill_mb=prefill_mb)
            policies.append(ModelPolicy(model, tokenizer, cfg))
            batches.append(CountBatches(policies[-1]))
            runs.append(rollout(policies[-1], tokenizer, world, dev, "full"))
    _same(runs[0], runs[1])
    big, small = policies
    assert batches[0].sizes == batches[1].sizes  # the same batches decoded together
    assert big.prefill_forwards == len(batches[0].sizes)
    assert small.prefill_forwards > 2 * big.prefill_forwards
    assert (
        (small.reused_tokens, small.prefilled_tokens) == (big.reused_tokens, big.prefilled_tokens) != (0, 0)
    )


def test_prefill_estimate_grows_with_context_length(tokenizer, model64):
    """[prefill_mb] Under the same budget long contexts take more prefill forwards than short ones
    (never fewer than one row each), with the responses of one forward; and a part of a batch whose
    rows have no stored states, beside rows that reuse theirs, still lines up with them."""
    cfg = GenerationConfig(max_new_tokens=4, temperature=0.0)
    gen = torch.Generator().manual_seed(0)
    short = [torch.randint(5, 4000, (30,), generator=gen).tolist() for _ in range(8)]
    long = [torch.randint(5, 4000, (120,), generator=gen).tolist() for _ in range(8)]
    whole = ModelPolicy(model64, tokenizer, cfg)
    budget = whole.prefill_bytes(3, 120, 0) / 2**20  # three long rows per forward
    assert whole.prefill_bytes(1, 120, 0) > whole.prefill_bytes(1, 30, 0)
    assert whole.prefill_bytes(1, 30, 90) > whole.prefill_bytes(1, 30, 0)

    def forwards(policy, contexts, **kw):
        before = policy.prefill_forwards
        out = policy.respond(contexts, [torch.Generator().manual_seed(i) for i in range(len(contexts))], **kw)
        return policy.prefill_forwards - before, out

    parts = ModelPolicy(model64, tokenizer, replace(cfg, prefill_mb=budget))
    assert forwards(parts, short)[0] == 1
    n, split = forwards(parts, long)
    assert n == 3
    one = forwards(whole, long)[1]
    assert [r.ids for r in split] == [r.ids for r in one]
    assert all(max(abs(a - b) for a, b in zip(r.logprobs, q.logprobs)) < 1e-9 for r, q in zip(split, one))

    # reuse: rows 0-3 continue their episode (stored states), rows 4-7 are new episodes (none stored)
    tiny = ModelPolicy(model64, tokenizer, replace(cfg, prefill_mb=1e-9))  # below one row: one row each
    results = []
    for policy in (whole, tiny):
        policy.clear_prefix_cache()
        first = forwards(policy, long[:4], prefix_lengths=[10] * 4)[1]
        later = [c + r.ids + [7, 8, 9] for c, r in zip(long[:4], first)] + [[4] + c for c in long[4:]]
        results.append(forwards(policy, later, prefix_lengths=[10] * 8))
    (_, a), (n, b) = results
    assert n == 8 and tiny.reused_tokens == whole.reused_tokens > 0
    assert [r.ids for r in a] == [r.ids for r in b]
    assert all(max(abs(x - y) for x, y in zip(r.logprobs, q.logprobs)) < 1e-9 for r, q in zip(a, b))


def test_turn_cache_stays_within_its_memory_budget(world, dev, tokenizer, model64):
    """Over the budget, least recently used episodes are evicted and recomputed: same results."""
    model = _stop_often(model64, tokenizer)

    def run(cache_mb):
        cfg = GenerationConfig(max_new_tokens=20, temperature=0.0, cache_mb=cache_mb)
        policy, sizes = ModelPolicy(model, tokenizer, cfg), []

        def on_turn(_active):
            stored = sum(e.nbytes for e in policy._prefix_store.values())
            assert stored == policy._prefix_bytes <= cache_mb * 2**20
            sizes.append(stored)

        with without_float32_islands():
            return rollout(policy, tokenizer, world, dev, "full", on_turn=on_turn), policy, max(sizes)

    unbounded, free, peak = run(1024.0)
    bounded, tight, tight_peak = run(0.4 * peak / 2**20)
    _same(unbounded, bounded)
    assert 0 < tight_peak < peak
    assert 0 < tight.reused_tokens < free.reused_tokens
    assert not tight._prefix_store


def test_tiny_top_p_is_greedy(world, dev, tokenizer, model64):
    greedy = ModelPolicy(model64, tokenizer, GenerationConfig(max_new_tokens=8, temperature=0))
    nucleus = ModelPolicy(model64, tokenizer, GenerationConfig(max_new_tokens=8, temperature=1.0, top_p=1e-9))
    _same(rollout(greedy, tokenizer, world, dev), rollout(nucleus, tokenizer, world, dev))


def test_sampling_depends_on_the_seed(world, dev, tokenizer, model64):
    policy = ModelPolicy(model64, tokenizer, GenerationConfig(max_new_tokens=8))
    a, b = (rollout(policy, tokenizer, world, dev, seed=s) for s in (0, 1))
    assert [t.turns[0].output_ids for t in a] != [t.turns[0].output_ids for t in b]
    _same(a, rollout(policy, tokenizer, world, dev, seed=0), tol=0)


def test_untrained_model_rolls_out_and_its_garbage_becomes_format_errors(world, dev, tokenizer):
    model = build_tiny_model(seed=1).train()  # float32, as `mem1 rollout --policy tiny`
    policy = ModelPolicy(model, tokenizer, GenerationConfig(max_new_tokens=24), name="tiny")
    for agent in ("mem1", "full", "truncate"):
        trajs = rollout(policy, tokenizer, world, dev, agent)
        for t in trajs:
            assert t.em == 0 and t.answer is None
            assert len(t.turns) == 2 * t.objectives + 2  # every turn spent
            assert t.format_errors == len(t.turns)
            for turn in t.turns:
                assert turn.action == "error" and turn.error
                assert turn.output_kinds == "e" * len(turn.output_ids)
                assert all(lp <= 0 and lp == lp for lp in turn.logprobs)
            last = t.turns[-1]
            assert last.observation_ids == []  # the episode ended on its last turn
            assert "Format error" in tokenizer.decode(t.turns[0].observation_ids)
    assert model.training  # generation ran in eval mode and gave the training mode back


def test_token_kinds(tokenizer):
    think = tokenizer.encode("<think> answers: none.</think>", add_special_tokens=False)
    search = tokenizer.encode("<search> Gevorn Bank</search>", add_special_tokens=False)
    ids = think + search
    kinds = token_kinds(tokenizer, ids, is_error=False)
    assert kinds == "s" * len(think) + "a" * len(search)
    answer = tokenizer.encode("<answer> Kel Arrow; Talis Morrow</answer>", add_special_tokens=False)
    assert token_kinds(tokenizer, think + answer, False) == "s" * len(think) + "A" * len(answer)
    assert token_kinds(tokenizer, ids, is_error=True) == "e" * len(ids)


def test_token_kinds_are_the_per_character_rule_on_any_ids(tokenizer):
    """token_kinds slices its regions in C (#22); the letters are those of the rule it implements:
    a token takes the first tag region its characters fall in, on any ids (unclosed and nested
    tags, multi-byte characters cut across tokens, empty texts)."""
    import random
    import re

    regions = [(r"<think>.*?</think>", "s"), (r"<search>.*?</search>", "a"), (r"<answer>.*?</answer>", "A")]

    def rule(ids):
        texts = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
        full = "".join(texts)
        region = ["o"] * len(full)
        for pattern, letter in regions:
            for m in re.finditer(pattern, full, re.S):
                region[m.start() : m.end()] = letter * (m.end() - m.start())
        out, pos = [], 0
        for t in texts:
            seg = [c for c in region[pos : pos + len(t)] if c != "o"]
            out.append(seg[0] if seg else "o")
            pos += len(t)
        return "".join(out)

    rng = random.Random(0)
    tags = tokenizer.convert_tokens_to_ids(
        ["<think>", "</think>", "<search>", "</search>", "<answer>", "</answer>"]
    )
    words = tokenizer.encode("Kel Works é ü 1852; x", add_special_tokens=False) + list(range(12, 300))
    for _ in range(400):
        ids = [
            rng.choice(tags) if rng.random() < 0.2 else rng.choice(words) for _ in range(rng.randint(0, 30))
        ]
        assert token_kinds(tokenizer, ids, False) == rule(ids), ids


# ---------------------------------------------------------------------------------------------
# jsonl


def test_jsonl_round_trip_is_lossless(world, dev, tokenizer, model64, tmp_path):
    trajs = rollout(TeacherPolicy(tokenizer), tokenizer, world, dev, "truncate")
    trajs += rollout(
        ModelPolicy(model64, tokenizer, GenerationConfig(max_new_tokens=6)), tokenizer, world, dev
    )
    path = write_jsonl(trajs, tmp_path / "runs" / "x.jsonl")
    assert not (tmp_path / "runs" / "x.jsonl.tmp").exists()
    report = read_jsonl(path)
    assert report.errors == []
    assert report.trajectories == trajs
    assert [asdict(t) for t in report.trajectories] == [asdict(t) for t in trajs]
    line = json.loads(path.read_text().splitlines()[0])
    assert line["schema"] == "mem1lite.trajectory/1" and line["peak_tokens"] == trajs[0].peak_tokens


def test_bad_jsonl_lines_are_reported_with_file_and_line(world, dev, tokenizer, tmp_path):
    trajs = rollout(TeacherPolicy(tokenizer), tokenizer, world, dev)
    path = write_jsonl(trajs, tmp_path / "x.jsonl")
    good = path.read_text().splitlines()
    broken = json.loads(good[0])
    broken["turns"][1]["logprobs"].pop()  # one log-prob short
    outside = json.loads(good[0])
    outside["turns"][1]["spans"][0] = [4, 0, 3]  # a piece the turn could not have seen
    lines = [
        good[0],  # 1 ok
        good[1][: len(good[1]) // 2],  # 2 truncated mid-line
        good[2],  # 3 ok
        json.dumps({"schema": "someone-else/9"}),  # 4 another schema
        "",  # 5 blank, skipped
        good[4],  # 6 ok
        '{"schema": "mem1lite.trajectory/1", "task_id": "x"}',  # 7 fields missing
        "[1, 2]",  # 8 not an object
        json.dumps(broken),  # 9
        json.dumps(outside),  # 10
    ]
    marker = trajs[3].task_id + "<<here>>"
    damaged = good[3].replace(trajs[3].task_id, marker, 1).encode()
    damaged = damaged.replace(b"<<here>>", b"\xc3")  # 11: an invalid UTF-8 byte inside a string
    path.write_bytes(("\n".join(lines) + "\n").encode() + damaged + b"\n" + b"\xff\xfe{not json\n")
    report = read_jsonl(path)
    assert [t.task_id for t in report.trajectories] == [trajs[i].task_id for i in (0, 2, 4)]
    assert report.trajectories[1] == trajs[2]
    assert [e.split(": ")[0] for e in report.errors] == [f"{path}:{n}" for n in (2, 4, 7, 8, 9, 10, 11, 12)]
    assert all("\n" not in e for e in report.errors)
    with pytest.raises(ValueError, match=f"{path}:2: "):
        read_jsonl(path, strict=True)
