"""PPO: the arithmetic by hand, and the loop's invariants on a tiny model."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mem1lite.ppo import PPOArgs, PPOError, build_policy, collect, load_checkpoint, train_ppo, update
from mem1lite.ppo_math import gae, masked_whiten, policy_loss, token_rewards, value_loss

# ---------------------------------------------------------------------------------------------
# Arithmetic


def test_gae_over_policy_tokens_with_observation_in_the_middle():
    # Turn 0 wrote 2 tokens, the environment answered with 3 observation tokens, turn 1 wrote 2.
    # Observation tokens are not steps: the policy-token sequence is just [t0a, t0b, t1a, t1b].
    kinds = ["s", "a", "i", "i", "i", "s", "A"]
    policy = [k for k in kinds if k != "i"]
    assert len(policy) == 4
    logp = torch.tensor([-1.0, -0.5, -2.0, -0.1], dtype=torch.float64)
    ref = torch.tensor([-1.5, -0.5, -1.0, -0.1], dtype=torch.float64)
    rewards, kl = token_rewards(logp, ref, task_reward=2.0, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([0.5, 0.0, -1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(rewards, torch.tensor([-0.05, 0.0, 0.1, 2.0], dtype=torch.float64))
    values = torch.tensor([0.5, 1.0, 1.5, 1.8], dtype=torch.float64)
    # gamma = lambda = 1: advantage = return-to-go minus value
    adv, ret = gae(rewards, values, 1.0, 1.0)
    assert torch.allclose(ret, torch.tensor([2.05, 2.1, 2.1, 2.0], dtype=torch.float64))
    assert torch.allclose(adv, ret - values)
    # gamma = 0.9, lambda = 0.5, by hand: delta_t = r_t + 0.9 V_{t+1} - V_t
    adv, ret = gae(rewards, values, 0.9, 0.5)
    d = [-0.05 + 0.9 * 1.0 - 0.5, 0.0 + 0.9 * 1.5 - 1.0, 0.1 + 0.9 * 1.8 - 1.5, 2.0 - 1.8]
    a3 = d[3]
    a2 = d[2] + 0.45 * a3
    a1 = d[1] + 0.45 * a2
    a0 = d[0] + 0.45 * a1
    assert torch.allclose(adv, torch.tensor([a0, a1, a2, a3], dtype=torch.float64))
    assert torch.allclose(ret, adv + values)


def test_masked_whiten_and_losses():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    w = masked_whiten(x, mask)
    assert abs(float(w[0, :3].mean())) < 1e-12 and float(w[0, 3]) == 0.0
    assert float(w[0, :3].std(unbiased=True)) == pytest.approx(1.0, abs=1e-6)
    lp = torch.tensor([[-1.0, -1.0]])
    adv = torch.tensor([[1.0, -1.0]])
    m = torch.ones(1, 2)
    loss, clipfrac, approx_kl = policy_loss(lp, lp.clone(), adv, m)
    assert float(loss) == 0.0 and float(clipfrac) == 0.0 and float(approx_kl) == 0.0
    # ratio e^0.5 > 1.2 with positive advantage: clipped, gradient-free surrogate -1.2
    loss, clipfrac, _ = policy_loss(
        torch.tensor([[-0.5]]), torch.tensor([[-1.0]]), torch.tensor([[1.0]]), torch.ones(1, 1)
    )
    assert float(loss) == pytest.approx(-1.2) and float(clipfrac) == 1.0
    v = value_loss(
        torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.ones(1, 1), clip=0.2
    )
    assert float(v) == pytest.approx(0.5 * 0.8**2)  # the clipped error (0.2 -> 1.0) is the worse


# ---------------------------------------------------------------------------------------------
# The loop on a tiny model


def _args(init, out, **kw):
    base = PPOArgs(
        out=str(out),
        init=init,
        preset="test",
        objectives=(1,),
        steps=2,
        episodes_per_step=4,
        minibatch_episodes=2,
        ppo_epochs=1,
        max_new_tokens=12,
        eval_every=0,
        checkpoint_every=1,
        threads=1,
        actor_lr=1e-2,
        critic_lr=1e-2,
        final_eval=((1, 2),),
    )
    return replace(base, **kw)


def test_first_step_invariants_and_what_an_update_touches(tiny_init, tmp_path, qa):
    args = _args(tiny_init, tmp_path / "run")
    model, head, tok = build_policy(tiny_init, args)
    batch = collect(model, head, tok, qa, args, step=0)
    assert batch.stats["kl"] == 0.0  # LoRA B = 0: policy == reference
    assert torch.count_nonzero(batch.old_values) == 0  # zero-initialised value head
    # the loss mask covers exactly the policy (output) tokens: no prompt, no observation token
    n_out = sum(len(t.output_ids) for traj in batch.trajs for t in traj.turns)
    assert int(batch.mask.sum()) == n_out
    # An untrained model scores 0 and KL is 0 at the start, so every return is 0; give the critic
    # something to fit so that the update has a value gradient.
    batch.returns = batch.returns + batch.mask.to(batch.returns.dtype)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    head_before = {n: p.detach().clone() for n, p in head.named_parameters()}
    actor = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.actor_lr)
    critic = torch.optim.AdamW(head.parameters(), lr=args.critic_lr)
    stats = update(model, head, batch, [actor, critic], args, step=0)
    assert stats["first_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert stats["max_abs_log_ratio_first"] < 1e-5
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert all(not torch.equal(p, head_before[n]) for n, p in head.named_parameters())


def test_a_step_in_pieces_is_the_one_stage_step_float64(tiny_init, tmp_path, qa, monkeypatch):
    """[11] Block stages of at most `stage_tokens` and the LM head in pieces against the step before
    them (stage_tokens=0: one padded stage, one head pass), from the same state on the same
    episodes, in float64: the same scores, advantages, logged losses and updated parameters."""
    import copy

    from mem1lite import masks
    from mem1lite.ppo import make_optimizers, play, score

    monkeypatch.setattr(masks, "HEAD_TOKENS", 16)  # several head pieces on this small batch
    args = _args(tiny_init, tmp_path / "run", ppo_epochs=2, max_new_tokens=16)
    with masks.without_float32_islands():
        model, head, tok = build_policy(tiny_init, args)
        model.to(torch.float64), head.to(torch.float64)
        with torch.no_grad():  # an adapter and a critic that change every log-prob and value
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
            head.summary.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        trajs, n, _ = play(model, tok, qa, args, step=0)
        tokens = 2 * max(len(t.prompt_ids) for t in trajs)
        assert len(masks.build_layout(trajs, "packed", stage_tokens=tokens).stages) > 2
        start = [p.detach().clone() for p in model.parameters() if p.requires_grad]
        start += [p.detach().clone() for p in head.parameters()]
        runs = {}
        for stage_tokens in (0, tokens):
            m, h = copy.deepcopy(model), copy.deepcopy(head)
            a = replace(args, stage_tokens=stage_tokens)
            batch = score(m, h, trajs, n, 0.0, a)
            stats = update(m, h, batch, list(make_optimizers(m, h, a)), a, step=0)
            params = [p.detach() for p in [*m.parameters(), *h.parameters()] if p.requires_grad]
            runs[stage_tokens] = batch, stats, params
    (old, old_stats, old_params), (new, new_stats, new_params) = runs[0], runs[tokens]
    assert old.stats["kl"] != 0 and torch.count_nonzero(old.old_values) > 0
    for k in ("old_logprobs", "old_values", "advantages", "returns"):
        assert float((getattr(new, k) - getattr(old, k)).abs().max()) <= 1e-12, k
    for k in ("policy_loss", "value_loss", "entropy", "grad_norm", "approx_kl"):
        assert new_stats[k] == pytest.approx(old_stats[k], rel=1e-10, abs=1e-12), k
    assert min(float((p - q).abs().max()) for p, q in zip(old_params, start)) > 1e-6  # the update moved all
    assert max(float((p - q).abs().max()) for p, q in zip(new_params, old_params)) <= 1e-9


def test_resume_equals_uninterrupted_run(tiny_init, tmp_path):
    full = _args(tiny_init, tmp_path / "full", steps=2)
    train_ppo(full)
    part = _args(tiny_init, tmp_path / "part", steps=1)
    train_ppo(part)
    train_ppo(replace(part, steps=2, resume=True))
    a = torch.load(tmp_path / "full" / "value_head.pt")
    b = torch.load(tmp_path / "part" / "value_head.pt")
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)
    from safetensors.torch import load_file

    la = load_file(str(tmp_path / "full" / "adapter_model.safetensors"))
    lb = load_file(str(tmp_path / "part" / "adapter_model.safetensors"))
    assert la.keys() == lb.keys() and all(torch.allclose(la[k], lb[k], atol=1e-6) for k in la)
    log = [json.loads(x) for x in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    card = json.loads((tmp_path / "full" / "card.json").read_text())
    assert card["kind"] == "ppo" and card["steps"] == 2
    cmp = card["dev_comparison"]["n1"]
    assert cmp["n"] == 2 and cmp["low"] <= cmp["diff"] <= cmp["high"]
    # the adapter loads back over its base through the one loading function
    from mem1lite.model import load_policy

    model, _ = load_policy(tmp_path / "full")
    assert hasattr(model, "peft_config")


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny_init, tmp_path, monkeypatch):
    args = _args(tiny_init, tmp_path / "nan", steps=3)
    import mem1lite.ppo as ppo

    real = ppo.policy_loss
    calls = {"n": 0}

    def poisoned(*a, **kw):
        calls["n"] += 1
        loss, cf, kl = real(*a, **kw)
        return (loss * float("nan") if calls["n"] > 2 else loss), cf, kl

    monkeypatch.setattr(ppo, "policy_loss", poisoned)
    with pytest.raises(PPOError, match=r"non-finite loss at step 1 .*checkpoint"):
        train_ppo(args)
    model, head, _ = build_policy(tiny_init, args)
    actor = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    critic = torch.optim.AdamW(head.parameters(), lr=1e-3)
    step, history = load_checkpoint(tmp_path / "nan" / "checkpoint", model, head, [actor, critic])
    assert step == 1 and len(history) == 1


def test_existing_output_is_refused(tiny_init, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(FileExistsError):
        train_ppo(_args(tiny_init, out))
    with pytest.raises(PPOError, match="no checkpoint"):
        train_ppo(_args(tiny_init, tmp_path / "empty", resume=True))


def test_card_command_names_what_the_run_changed():
    from mem1lite.ppo import card_command, make_args

    base = make_args("standard", init="data/checkpoints/sft-mem1", out="o")
    expected = "mem1 ppo --preset standard --init data/checkpoints/sft-mem1 --out o --seed 0"
    assert card_command(base) == expected
    changed = make_args("standard", init="i", out="o", agent="full", minutes=30.0, objectives=(2, 4))
    assert card_command(changed).endswith("--agent full --minutes 30.0 --objectives 2,4")
    group = make_args("standard", init="i", out="o", advantage="group", group=4, episodes_per_step=32)
    assert card_command(group).endswith("--advantage group --episodes-per-step 32 --group 4")


def test_final_comparison_runs_each_size_once_where_the_domain_caps_sizes(monkeypatch):
    """WebShop's defaults are N = 1 (its tasks go up to 4 goals only when asked for): the preset's
    sizes 2 / 4 / 8 / 16 all cap to 1, and the card must hold the first (largest) comparison, not
    the last one written over it."""
    import contextlib
    from types import SimpleNamespace

    import mem1lite.ppo as ppo_module
    from mem1lite.ppo import compare_to_start

    calls = []

    def fake_greedy_em(model, tokenizer, domain, split, n, count, **kw):
        calls.append((n, count))
        trajs = [SimpleNamespace(em=1.0, objectives=n)] * count
        return {"trajectories": trajs, "em_per_objective": 1.0, "peak_tokens": 1, "format_errors": 0}

    monkeypatch.setattr(ppo_module, "greedy_em", fake_greedy_em)  # ppo.py imports it by name
    model = SimpleNamespace(disable_adapter=contextlib.nullcontext)
    args = PPOArgs(final_eval=((2, 200), (4, 50), (8, 30)))
    out = compare_to_start(model, None, SimpleNamespace(max_objectives=4, default_max_objectives=1), args)
    assert calls == [(1, 200), (1, 200)] and set(out) == {"n1"} and out["n1"]["n"] == 200
    out = compare_to_start(model, None, SimpleNamespace(), args)  # QA: no cap, every size
    assert set(out) == {"n2", "n4", "n8"}


def test_group_baseline_is_each_groups_mean_reward():
    from mem1lite.ppo_math import group_baseline

    assert group_baseline([1.0, 0.0, 0.0, 1.0, 2.0, 2.0], 2) == [0.5, 0.5, 0.5, 0.5, 2.0, 2.0]
    with pytest.raises(ValueError, match="groups of 4"):
        group_baseline([1.0, 0.0, 0.0], 4)


def test_group_advantage_plays_each_task_group_times_and_centres_on_the_group(tiny_init, tmp_path, qa):
    args = _args(tiny_init, tmp_path / "g", advantage="group", group=2)
    model, head, tok = build_policy(tiny_init, args)
    batch = collect(model, head, tok, qa, args, step=0)
    ids = [t.task_id for t in batch.trajs]
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]
    # different samples of the same task (each episode its own generator)
    assert batch.trajs[0].turns[0].output_ids != batch.trajs[1].turns[0].output_ids
    assert 0.0 <= batch.stats["groups_with_signal"] <= 1.0
    # untrained: every reward 0 and KL 0 at the start, so every advantage is 0 (no critic involved)
    assert float(batch.advantages.abs().max()) == 0.0
    # one episode of the first group solves its task: it goes up, its twin down, group 2 stays at 0
    from mem1lite.ppo import score

    batch.trajs[0].em = 1.0
    rescored = score(model, head, batch.trajs, 1, 0.0, args)
    adv, mask = rescored.advantages, rescored.mask
    assert bool((adv[0][mask[0]] > 0).all()) and bool((adv[1][mask[1]] < 0).all())
    assert float(adv[0][mask[0]].mean()) == pytest.approx(-float(adv[1][mask[1]].mean()), rel=0.3)
    assert rescored.stats["groups_with_signal"] == 0.5
    with pytest.raises(PPOError, match="--group"):
        train_ppo(_args(tiny_init, tmp_path / "bad", advantage="group", group=3))
    with pytest.raises(PPOError, match="unknown advantage"):
        train_ppo(_args(tiny_init, tmp_path / "bad2", advantage="critic"))


def test_a_run_that_cannot_start_leaves_nothing_behind(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # a config, no weights
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="no weights"):
        train_ppo(_args(str(broken), out))
    assert not out.exists()  # the corrected rerun is not told "not empty"


# ---------------------------------------------------------------------------------------------
# Checkpoints that survive a kill; resume checks


class Killed(BaseException):
    """The process died: this operation and every one after it never happen."""


def _policy_and_optimizers(init, args):
    model, head, _ = build_policy(init, args)
    actor = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    critic = torch.optim.AdamW(head.parameters(), lr=1e-3)
    return model, head, [actor, critic]


def test_a_kill_at_any_instant_of_a_checkpoint_leaves_a_complete_one(tiny_init, tmp_path, monkeypatch):
    """Every file operation of a checkpoint's save, in turn, is where the process dies: resume
    must still find a complete checkpoint, the old step or the new one, and load it."""
    import os
    import shutil

    import mem1lite.ppo as ppo

    args = _args(tiny_init, tmp_path / "run")
    model, head, optimizers = _policy_and_optimizers(tiny_init, args)
    ckpt = tmp_path / "run" / "checkpoint"
    ops = {"os.rename": (os, "rename"), "os.unlink": (os, "unlink"), "os.rmdir": (os, "rmdir")}
    ops |= {"os.fsync": (os, "fsync"), "shutil.rmtree": (shutil, "rmtree"), "torch.save": (torch, "save")}
    clock = {"calls": 0, "kill_at": None}

    def dying(real):
        def op(*a, **kw):
            clock["calls"] += 1
            if clock["kill_at"] is not None and clock["calls"] >= clock["kill_at"]:
                raise Killed
            return real(*a, **kw)

        return op

    for module, name in ops.values():
        monkeypatch.setattr(module, name, dying(getattr(module, name)))
    kill_at, steps_found = 0, set()
    while True:
        kill_at += 1
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        clock["kill_at"] = None
        ppo.save_checkpoint(ckpt, model, head, optimizers, 1, tiny_init, [{"step": 1}])
        clock["calls"], clock["kill_at"] = 0, kill_at
        try:
            ppo.save_checkpoint(ckpt, model, head, optimizers, 2, tiny_init, [{"step": 1}, {"step": 2}])
            done = True
        except Killed:
            done = False
        clock["kill_at"] = None
        found = ppo.find_checkpoint(ckpt)
        assert found is not None, f"killed at operation {kill_at}: no complete checkpoint"
        step, history = load_checkpoint(found, model, head, optimizers)  # every file whole
        assert step == len(history) and step in (1, 2)
        steps_found.add(step)
        if done:
            break
    assert kill_at > 10 and steps_found == {1, 2}  # many instants tried, both sides of the swap
    assert step == 2 and sorted(p.name for p in ckpt.parent.iterdir()) == ["checkpoint"]


def test_resume_finds_the_old_checkpoint_and_tolerates_leftovers(tiny_init, tmp_path):
    """A kill between the swap's two renames leaves checkpoint.old only, and a kill mid-write a
    temporary folder: --resume continues from checkpoint.old; a run without --resume refuses."""
    run = tmp_path / "run"
    train_ppo(_args(tiny_init, run, steps=1, final_eval=()))
    (run / "checkpoint").rename(run / "checkpoint.old")
    (run / ".checkpoint.x1y2.tmp").mkdir()
    (run / ".checkpoint.x1y2.tmp" / "optimizer.pt").write_bytes(b"half")
    with pytest.raises(FileExistsError, match="--resume"):
        train_ppo(_args(tiny_init, run, steps=2, final_eval=()))
    train_ppo(_args(tiny_init, run, steps=2, resume=True, final_eval=()))
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and [h["step"] for h in state["history"]] == [1, 2]
    assert not (run / "checkpoint.old").exists() and not list(run.glob(".checkpoint.*"))
    # --resume over another base: refused, naming both
    other = tmp_path / "other-base"
    other.mkdir()
    with pytest.raises(PPOError) as err:
        train_ppo(_args(str(other), run, steps=3, resume=True, final_eval=()))
    line = str(err.value)
    assert "\n" not in line and str(other) in line and str(Path(tiny_init).resolve()) in line


CHECKPOINT_FILES = ("state.json", "adapter_model.safetensors", "value_head.pt", "optimizer.pt")


@pytest.mark.parametrize("name", CHECKPOINT_FILES + ("adapter_config.json",))
def test_a_damaged_checkpoint_file_is_one_line_naming_it(name, tiny_init, tmp_path):
    import mem1lite.ppo as ppo

    args = _args(tiny_init, tmp_path / "run")
    model, head, optimizers = _policy_and_optimizers(tiny_init, args)
    ckpt = tmp_path / "run" / "checkpoint"
    ppo.save_checkpoint(ckpt, model, head, optimizers, 1, tiny_init, [{"step": 1}])
    data = (ckpt / name).read_bytes()
    (ckpt / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(PPOError) as err:
        ppo.check_base(ckpt, tiny_init)
        load_checkpoint(ckpt, model, head, optimizers)
    assert str(ckpt / name) in str(err.value) and "\n" not in str(err.value)


def test_bench_ppo_splits_a_step_into_rollout_scoring_and_update(tiny_init):
    from mem1lite.bench import bench_ppo

    lines = []
    records = bench_ppo(tiny_init, objectives=(1, 2), episodes=2, threads=1, log=lines.append)
    assert [r["objectives"] for r in records] == [1, 2]
    for r in records:
        parts = r["rollout_seconds"] + r["score_seconds"] + r["update_seconds"]
        assert r["step_seconds"] == pytest.approx(parts)
        assert min(r["rollout_seconds"], r["score_seconds"], r["update_seconds"]) > 0
        # mem1's policy tokens are exactly the generated ones (no observation is scored)
        assert r["policy_tokens"] == r["generated_tokens"] > 0
        assert r["ms_per_policy_token_update"] == pytest.approx(
            1e3 * r["update_seconds"] / r["policy_tokens"]
        )
    assert len(lines) == 2 + len(records) and "rollout s" in lines[1]
    with pytest.raises(ValueError, match=r"threads must be in 1\.\."):
        bench_ppo(tiny_init, objectives=(1,), episodes=2, threads=0, log=None)


def test_bench_ppo_compare_runs_the_old_and_the_new_step_on_the_same_episodes(tiny_init):
    from mem1lite.bench import bench_ppo

    lines = []
    (r,) = bench_ppo(
        tiny_init, objectives=(1,), episodes=2, threads=1, log=lines.append, compare=True, repeats=2
    )
    assert len(r["per_round_seconds"]) == 2 and r["stage_tokens"] > 0
    for way in ("old", "new"):
        assert r[way]["step_seconds"] == pytest.approx(
            r["rollout_seconds"] + r[way]["score_seconds"] + r[way]["update_seconds"]
        )
    assert r["step_ratio"] > 0 and r["score_update_ratio"] > 0 and r["cpu_time_ratio"] > 0
    # both ways start from the same state on the same episodes: the same update to float rounding
    assert r["logged_old"]["grad_norm"] > 0 and r["logged_old"].keys() == r["logged_new"].keys()
    assert r["max_abs_logged_difference"] < 1e-4 and r["max_abs_parameter_difference"] < 1e-5
    assert len(lines) == 3 and "step ratio" in lines[1] and lines[2].split()[0] == "1"


def test_a_second_run_on_the_same_out_is_refused_and_an_adapter_is_no_init(tiny_init, tmp_path):
    """Issue #32: one run per --out (the lock names the first); a PPO output is an adapter, not a base."""
    import os

    from mem1lite.files import Busy, lock, lock_path

    out = tmp_path / "run"
    with lock(lock_path(out), f"training into {out}"):
        with pytest.raises(Busy, match=rf"another run \(pid {os.getpid()}, started "):
            train_ppo(_args(tiny_init, out))
    assert not out.exists()
    with pytest.raises(PPOError, match=r"is a LoRA adapter \(a PPO run's output\), not a whole model"):
        train_ppo(_args("data/checkpoints/ppo-mem1", tmp_path / "over-adapter"))
    assert not (tmp_path / "over-adapter").exists()


def test_a_byte_flipped_in_a_checkpoint_file_is_named_on_resume(tiny_init, tmp_path):
    """Issue #32: state.json records every file's sha256; a flipped byte that loads fine is refused."""
    train_ppo(_args(tiny_init, tmp_path / "run", steps=1))
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert set(state["files"]) >= {  # and the README peft writes
        "adapter_model.safetensors",
        "adapter_config.json",
        "optimizer.pt",
        "value_head.pt",
    }
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert set(card["sha256"]) == {"adapter_model.safetensors", "value_head.pt"}
    weights = tmp_path / "run" / "checkpoint" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(PPOError, match=rf"^{weights} is damaged or missing \(its sha256 differs"):
        train_ppo(_args(tiny_init, tmp_path / "run", steps=2, resume=True))
    from mem1lite.model import ModelLoadError, load_policy

    final = tmp_path / "run" / "adapter_model.safetensors"  # the run's output, checked against its card
    data = bytearray(final.read_bytes())
    data[-10] ^= 0x01
    final.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="differs from the sha256 its card.json records"):
        load_policy(tmp_path / "run")
