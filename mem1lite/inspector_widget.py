"""The inspector in JupyterLab: `Inspector`, ipywidgets over trajectories.

    from mem1lite.inspector_widget import Inspector
    Inspector.from_paths("data/examples")          # every *.jsonl of a folder, or files

A thin shell: each control change re-renders the panes through inspector_html.render_state.
"""

from __future__ import annotations

from collections.abc import Sequence

from .inspector import (
    MAX_TOKENS,
    Collection,
    LayoutCache,
    as_token_text,
    filter_episodes,
    find_partner,
    load_trajectories,
    turn_view,
)
from .inspector_html import css, default_token, render_header, render_state, render_warnings
from .terms import DEFAULT_LAYOUT, LAYOUTS
from .trajectory import Trajectory


class Inspector:
    """ipywidgets over trajectories: filters, an episode picker, turn and token sliders, a layout
    picker; each change re-renders the panes through `render_state` (the widget holds no logic)."""

    def __init__(
        self,
        trajectories: Sequence[Trajectory] | Collection,
        tokenizer=None,
        layout: str = DEFAULT_LAYOUT,
        warnings: Sequence[str] = (),
        sources: Sequence[str] | None = None,
        max_tokens: int = MAX_TOKENS,
    ):
        import ipywidgets as w

        if isinstance(trajectories, Collection):
            col = trajectories
        else:
            col = Collection(list(trajectories), list(sources or ["memory"] * len(trajectories)), [])
        self.trajectories = [t for t in col.trajectories]
        self.sources = col.sources
        self.warnings = list(col.warnings) + list(warnings)
        self.text_of = as_token_text(tokenizer)
        self.max_tokens = max_tokens
        self.cache = LayoutCache()
        self._busy = False
        trajs = self.trajectories
        agents = sorted({t.agent for t in trajs})
        sizes = sorted({t.objectives for t in trajs})
        r_max = max([t.reward for t in trajs] + [1.0])
        # "any" is "" / 0, not None: a Dropdown whose value is None shows no selection at all
        self.agent_filter = w.Dropdown(options=[("any", "")] + [(a, a) for a in agents], description="agent")
        sizes_options = [("any", 0)] + [(str(n), n) for n in sizes]
        self.objectives_filter = w.Dropdown(options=sizes_options, description="N")
        self.reward_filter = w.FloatRangeSlider(
            value=(0.0, r_max), min=0.0, max=r_max, step=0.05, description="reward", continuous_update=False
        )
        self.episode = w.Dropdown(description="episode", layout=w.Layout(width="640px"))
        self.turn = w.IntSlider(min=0, max=0, description="turn", continuous_update=False)
        self.token = w.IntSlider(min=0, max=0, description="token", continuous_update=False,
                                 layout=w.Layout(width="520px"))  # fmt: skip
        self.token_box = w.BoundedIntText(min=0, max=0, layout=w.Layout(width="90px"))  # exact entry
        w.link((self.token, "max"), (self.token_box, "max"))
        w.link((self.token, "value"), (self.token_box, "value"))
        self.layout = w.Dropdown(options=list(LAYOUTS), value=layout, description="layout")
        self.status = w.HTML()
        names = ("header", "turn", "chart", "mask", "compare")
        self.panes = {name: w.HTML(layout=w.Layout(width="100%")) for name in names}
        for control, handler in (
            (self.agent_filter, self._on_filter),
            (self.objectives_filter, self._on_filter),
            (self.reward_filter, self._on_filter),
            (self.episode, self._on_episode),
            (self.turn, self._on_turn),
            (self.token, self._on_token),
            (self.layout, self._on_token),
        ):
            control.observe(handler, names="value")
        self.widget = w.VBox(
            [
                w.HTML(f'{css()}<div class="mi">{render_warnings(self.warnings)}</div>'),
                w.HBox([self.agent_filter, self.objectives_filter, self.reward_filter]),
                w.HBox([self.episode, self.status]),
                w.HBox([self.turn, self.token, self.token_box, self.layout]),
                self.panes["header"],
                w.HBox(
                    [
                        w.Box([self.panes["turn"]], layout=w.Layout(width="58%")),
                        w.VBox([self.panes["chart"], self.panes["mask"]], layout=w.Layout(width="42%")),
                    ]
                ),
                self.panes["compare"],
            ]
        )
        self._on_filter()

    @classmethod
    def from_paths(cls, paths, tokenizer=None, **kwargs) -> Inspector:
        """Open jsonl files or folders (malformed lines become warnings shown above the controls)."""
        return cls(load_trajectories(paths), tokenizer=tokenizer, **kwargs)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # -- state ------------------------------------------------------------------------------------

    @property
    def current(self) -> Trajectory | None:
        i = self.episode.value
        return None if i is None else self.trajectories[i]

    def matching(self) -> list[int]:
        agent, n = self.agent_filter.value or None, self.objectives_filter.value or None
        return filter_episodes(self.trajectories, agent, n, tuple(self.reward_filter.value))

    def label(self, i: int) -> str:
        t = self.trajectories[i]
        return (
            f"#{i} {self.sources[i]} · {t.task_id} · {t.agent} · {t.policy} · N={t.objectives} · "
            f"reward {t.reward:g} · {len(t.turns)} turns"
        )

    def html(self) -> str:
        """Every pane of the current state, concatenated (what the widget shows)."""
        return "".join(p.value for p in self.panes.values())

    # -- handlers ---------------------------------------------------------------------------------

    def _on_filter(self, change=None):
        keep = self.matching()
        previous = self.episode.value
        self._busy = True
        try:
            self.episode.options = [(self.label(i), i) for i in keep]
            self.episode.value = previous if previous in keep else (keep[0] if keep else None)
        finally:
            self._busy = False
        self.status.value = f"{len(keep)} of {len(self.trajectories)} episodes match"
        self._on_episode()

    def _on_episode(self, change=None):
        if self._busy:
            return
        traj = self.current
        if traj is None or not traj.turns:
            for p in self.panes.values():
                p.value = ""
            self.panes["header"].value = (
                f'{css()}<div class="mi"><div class="mi-meta">no episode matches the filters</div></div>'
                if traj is None
                else f'{css()}<div class="mi">{render_header(traj)}<div class="mi-meta">no turns</div></div>'
            )
            return
        self._busy = True
        try:
            self.turn.max = len(traj.turns) - 1
            self.turn.value = min(self.turn.value, self.turn.max)
        finally:
            self._busy = False
        self._on_turn()

    def _on_turn(self, change=None):
        if self._busy or self.current is None:
            return
        view = turn_view(self.current, self.turn.value)
        self._busy = True
        try:
            self.token.max = len(view.ids) - 1
            self.token.value = default_token(view)
        finally:
            self._busy = False
        self.render()

    def _on_token(self, change=None):
        if not self._busy and self.current is not None:
            self.render()

    def render(self) -> None:
        traj = self.current
        partner = find_partner(traj, self.trajectories)
        panes = render_state(
            traj, self.turn.value, self.token.value, self.layout.value, self.text_of, partner=partner,
            cache=self.cache, source=self.sources[self.episode.value], max_tokens=self.max_tokens,
        )  # fmt: skip
        for name, value in panes.items():
            self.panes[name].value = value
