"""The MEM1 paper's numbers (arXiv 2506.15841), for side-by-side tables. Nothing here is measured.

What each number is (the paper's multi-objective multi-hop QA, Wikipedia through the Search-R1
retriever, models trained on N = 2 objectives and tested on N = 1..16):

1. `em`: exact match *summed over the N objectives* of a task (0..N), averaged over tasks. A task
   with 16 questions can score up to 16, so EM grows with N by construction; divide by N
   (`em_per_objective`) to compare task sizes, or to compare with our numbers.
2. `peak_tokens`: the largest context the model was fed in any turn. The paper prints it in
   hundreds of tokens (x10^2); here it is converted to tokens (6.40 -> 640). Our tiny world's
   prompts, passages and states are shorter, so absolute values do not compare: the growth
   with N (a ratio) does.
3. `seconds`: inference time per task on the paper's GPU set-up. Ours is CPU time per task of a
   1.3 M-parameter model: only the shape across N and agents compares, never the values.
4. `RL_VS_SFT`: EM (summed) of MEM1 trained with RL vs with SFT on the same data, mem1 agent.

Which of our rows each paper row stands beside (`report.paper_comparison`):
- `MEM1-QA (7B)` <-> our RL policy (ppo) under the mem1 agent;
- `Qwen2.5-14B-Instruct` (full context, no MEM1 training) <-> our full-context baseline
  (ppo-full under the full agent, else the RL policy under the full agent);
- `Truncation (7B)` <-> the RL policy under the truncate agent.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = "MEM1, arXiv 2506.15841"


@dataclass(frozen=True)
class PaperRow:
    model: str
    """the paper's model (and memory policy)"""
    agent: str
    """our agent it stands beside: mem1, full or truncate"""
    objectives: int
    """N, questions per task"""
    em: float
    """exact match summed over objectives (0..N)"""
    peak_tokens: float
    """peak context in tokens (the paper's x10^2 figure times 100)"""
    seconds: float
    """inference seconds per task (their GPUs)"""

    @property
    def em_per_objective(self) -> float:
        return self.em / self.objectives


QA_ROWS = (
    PaperRow("Qwen2.5-14B-Instruct", "full", 2, 0.732, 1560, 5.49),
    PaperRow("Qwen2.5-14B-Instruct", "full", 8, 1.55, 4470, 16.2),
    PaperRow("Qwen2.5-14B-Instruct", "full", 16, 0.567, 3840, 29.7),
    PaperRow("MEM1-QA (7B)", "mem1", 2, 0.709, 640, 6.49),
    PaperRow("MEM1-QA (7B)", "mem1", 8, 1.87, 801, 8.68),
    PaperRow("MEM1-QA (7B)", "mem1", 16, 1.97, 1040, 8.70),
    PaperRow("Truncation (7B)", "truncate", 16, 0.396, 1330, 22.1),
)
"""Multi-objective QA (the paper's Table 1 rows quoted in DESIGN.md)"""

RL_VS_SFT = {
    "rl": {1: 0.410, 2: 0.709, 4: 1.12, 8: 1.87, 16: 1.90},
    "sft": {1: 0.300, 2: 0.433, 4: 0.626, 8: 0.027, 16: 0.000},
}
"""EM summed over objectives, MEM1 trained with RL vs SFT, at N = 1, 2, 4, 8, 16"""

WEBSHOP = (
    ("MEM1 (7B)", 70.87, 810, 2.61),
    ("AgentLM-7B", 63.60, 2240, 3.91),
    ("AgentLM-13B", 70.80, 2360, 5.23),
)
"""WebShop: (model, reward, peak tokens, seconds); for the WebShop-lite notebook"""


def qa_row(agent: str, objectives: int) -> PaperRow | None:
    return next((r for r in QA_ROWS if r.agent == agent and r.objectives == objectives), None)


def paper_ratios() -> dict[str, float]:
    """The paper's own values of the quantities the targets are set on (report.py; computed, not quoted)."""
    m2, m16, f16 = qa_row("mem1", 2), qa_row("mem1", 16), qa_row("full", 16)
    return {
        "mem1_peak_growth": m16.peak_tokens / m2.peak_tokens,  # 1040 / 640
        "full_vs_mem1_peak": f16.peak_tokens / m16.peak_tokens,  # 3840 / 1040: its "3.7x less memory"
        "em_per_objective_kept": m16.em_per_objective / m2.em_per_objective,  # (1.97/16) / (0.709/2)
        "mem1_vs_full_em_16": m16.em / f16.em,  # 1.97 / 0.567: the "3.5x" of the paper's abstract
    }


def rl_vs_sft_per_objective(kind: str) -> dict[int, float]:
    return {n: em / n for n, em in RL_VS_SFT[kind].items()}
