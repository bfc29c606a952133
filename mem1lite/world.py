"""The fictional multi-hop QA world: entities, relations, documents, questions and N-objective tasks.

Everything is generated from one integer seed, so the same seed gives byte-identical files and a
fresh seed gives a fresh world in about a second (for training streams).

Design choices, each made so that a tiny model trained from scratch must *read* rather than recall:

1. Names are two name parts (`Talis Morrow`, `Gevorn Bank`, `Velmora Vale`); every part is meant
   to be a single token (the tokenizer adds them to its vocabulary), so copying a name is copying
   two tokens.
2. Four pools (`sft`, `rl`, `dev`, `test`) hold disjoint entities: every entity a question touches,
   and every document the retriever may return for it, belongs to that question's pool. Training on
   `sft` therefore cannot leak a `dev` fact. Name *parts* are shared across pools, so the tokens a
   model copies at evaluation time were all seen in training.
3. Each pool reuses its name parts at the same density (about 6-7 entities per core part), so that
   look-alike names (`Gevorn Bank`, `Gevorn Works`, `Gevorn Vale`) are as common in `dev` as in
   `sft`, and so are the retrieval distractors they make.
4. Facts are written "The <relation> of <entity> is <value>." so that the relation word sits next
   to both entities; a reader that knows which relation of which entity it wants can find the
   value by matching that phrase. Documents also hold facts that are never asked (`residence`) and
   mention other entities, and about a third of the entities get a second document without the
   asked facts.
5. Questions are one hop ("Who is the founder of Gevorn Bank?") or two ("What is the birthplace of
   the founder of Gevorn Bank?"); every hop is answered by searching one entity's name.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .store import check_counts, open_store, read_parquet, register_kind, save_store, write_parquet

WORLD_VERSION = 1
SPLITS = ("sft", "rl", "dev", "test")
REBUILD_COMMAND = "mem1 world --out data/qa --seed 0 --force"
DEFAULT_WORLD_DIR = Path(__file__).resolve().parent.parent / "data" / "qa"


# ---------------------------------------------------------------------------------------------
# Name parts


_ONSETS = [
    "b",
    "br",
    "c",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "k",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "pr",
    "r",
    "s",
    "sk",
    "st",
    "t",
    "tr",
    "v",
    "z",
    "th",
    "sh",
    "w",
    "j",
]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ae", "ei", "ou", "y"]
_CODAS = ["", "", "n", "r", "l", "s", "m", "th", "rn", "nd", "x", "v", "k", "st"]

# Second words of non-person names. They are ordinary words, shared by many entities, and tell the
# entity's type (an organisation is a Bank or a Guild, a city a Vale or a Harbor...).
ORG_KINDS = [
    "Bank",
    "Works",
    "Institute",
    "Press",
    "Studios",
    "Labs",
    "Records",
    "Guild",
    "Company",
    "College",
]
CITY_KINDS = ["Vale", "Falls", "Harbor", "Ridge", "Crossing", "Bay", "Hill", "Ford", "Haven", "Field"]
WORK_KINDS = ["Chronicle", "Saga", "Songbook", "Atlas", "Letters", "Tales", "Ballads", "Almanac"]
ORG_DESCRIPTIONS = {
    "Bank": "a bank",
    "Works": "a manufacturer",
    "Institute": "a research institute",
    "Press": "a publishing house",
    "Studios": "a film studio",
    "Labs": "a laboratory",
    "Records": "a record label",
    "Guild": "a trade guild",
    "Company": "a trading company",
    "College": "a college",
}
WORK_DESCRIPTIONS = {
    "Chronicle": "a history",
    "Saga": "a novel",
    "Songbook": "a song collection",
    "Atlas": "an atlas",
    "Letters": "a book of letters",
    "Tales": "a story collection",
    "Ballads": "a poetry book",
    "Almanac": "an almanac",
}
PROFESSIONS = [
    "painter",
    "engineer",
    "merchant",
    "physician",
    "poet",
    "architect",
    "banker",
    "sailor",
    "chemist",
    "teacher",
    "composer",
    "judge",
    "farmer",
    "historian",
    "weaver",
    "astronomer",
]


def _pseudo_words(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    """`count` distinct capitalised two-syllable pseudo-words (5-8 letters), none in `taken`."""
    words: list[str] = []
    while len(words) < count:
        w = (
            rng.choice(_ONSETS)
            + rng.choice(_VOWELS)
            + rng.choice(_ONSETS)
            + rng.choice(_VOWELS)
            + rng.choice(_CODAS)
        ).capitalize()
        if 5 <= len(w) <= 8 and w not in taken:
            taken.add(w)
            words.append(w)
    return words


@dataclass(frozen=True)
class NameParts:
    first: list[str]
    last: list[str]
    core: list[str]

    def all_parts(self) -> list[str]:
        """Every single-token name part, including the type words (`Bank`, `Vale`...)."""
        return self.first + self.last + self.core + ORG_KINDS + CITY_KINDS + WORK_KINDS


# ---------------------------------------------------------------------------------------------
# Relations: name, subject type, value type. `residence` is stated in documents but never asked:
# it is a same-type distractor for `birthplace`.

RELATIONS: dict[str, tuple[str, str]] = {
    "birthplace": ("person", "city"),
    "employer": ("person", "org"),
    "mentor": ("person", "person"),
    "residence": ("person", "city"),
    "founder": ("org", "person"),
    "headquarters": ("org", "city"),
    "mayor": ("city", "person"),
    "author": ("work", "person"),
    "publisher": ("work", "org"),
}
ASKED_RELATIONS = [r for r in RELATIONS if r != "residence"]


def relations_of(entity_type: str, asked_only: bool = True) -> list[str]:
    rels = ASKED_RELATIONS if asked_only else list(RELATIONS)
    return [r for r in rels if RELATIONS[r][0] == entity_type]


@dataclass
class WorldConfig:
    """Sizes of a generated world (the defaults make the shipped one)."""

    seed: int = 0
    """seed of everything: same seed, byte-identical files"""
    persons: int = 10_000
    """number of people"""
    orgs: int = 4_000
    """number of organisations"""
    cities: int = 3_000
    """number of cities"""
    works: int = 3_000
    """number of works (books)"""
    first_names: int = 400
    """distinct first-name parts"""
    last_names: int = 600
    """distinct last-name parts"""
    cores: int = 900
    """distinct core parts, shared by organisation, city and work names"""
    pool_fractions: tuple[float, float, float, float] = (0.6, 0.2, 0.1, 0.1)
    """share of the entities in the sft, rl, dev, test pools"""
    questions: tuple[int, int, int, int] = (20_000, 5_000, 1_000, 1_000)
    """number of questions in the sft, rl, dev, test pools"""
    one_hop_fraction: float = 0.4
    """share of one-hop questions (the rest have two hops)"""
    second_doc_fraction: float = 0.3
    """share of entities with a second document that lacks their asked facts"""


@dataclass
class Entity:
    id: int
    name: str
    type: str
    pool: str
    facts: dict[str, int] = field(default_factory=dict)  # relation -> entity id
    year: int = 0
    detail: str = ""  # profession, or the kind word that gives an org / work its description


@dataclass
class Document:
    id: int
    title: str
    text: str
    entity: int
    pool: str


@dataclass
class Question:
    id: str
    split: str
    hops: int
    text: str
    relations: list[str]  # innermost first: [founder, birthplace] for "the birthplace of the founder of X"
    chain: list[str]  # entity names along the hops: [X, bridge, answer]
    answer: str
    gold_docs: list[int]  # document id holding each hop's fact

    @property
    def queries(self) -> list[str]:
        """The canonical search query of each hop: the name of the entity the hop starts from."""
        return self.chain[:-1]


@dataclass
class World:
    config: WorldConfig
    parts: NameParts
    entities: list[Entity]
    documents: list[Document]
    questions: dict[str, list[Question]]

    def by_name(self) -> dict[str, Entity]:
        return {e.name: e for e in self.entities}

    def documents_of(self, pool: str) -> list[Document]:
        return [d for d in self.documents if d.pool == pool]


# ---------------------------------------------------------------------------------------------
# Generation


def _pool_sizes(total: int, fractions: Sequence[float]) -> list[int]:
    sizes = [int(round(total * f)) for f in fractions]
    sizes[0] += total - sum(sizes)
    return sizes


def fact_sentence(relation: str, subject: str, value: str) -> str:
    return f"The {relation} of {subject} is {value}."


def question_text(relations: Sequence[str], entity: str) -> str:
    """Question text for a chain of relations (innermost first) starting from `entity`."""
    phrase = entity
    for r in relations:
        phrase = f"the {r} of {phrase}"
    wh = "Who" if RELATIONS[relations[-1]][1] == "person" else "What"
    return f"{wh} is {phrase}?"


def generate_world(config: WorldConfig | None = None) -> World:
    """Build a whole world in memory, deterministically from `config.seed`."""
    cfg = config or WorldConfig()
    rng = random.Random(cfg.seed)
    taken: set[str] = set()
    parts = NameParts(
        first=_pseudo_words(rng, cfg.first_names, taken),
        last=_pseudo_words(rng, cfg.last_names, taken),
        core=_pseudo_words(rng, cfg.cores, taken),
    )
    entities: list[Entity] = []
    used_names: set[str] = set()

    def new_entity(name: str, etype: str, pool: str, detail: str) -> Entity:
        e = Entity(
            id=len(entities), name=name, type=etype, pool=pool, year=rng.randint(1700, 1990), detail=detail
        )
        entities.append(e)
        used_names.add(name)
        return e

    per_pool: dict[str, dict[str, list[Entity]]] = {p: {} for p in SPLITS}
    counts = {"person": cfg.persons, "org": cfg.orgs, "city": cfg.cities, "work": cfg.works}
    pool_counts = {t: _pool_sizes(n, cfg.pool_fractions) for t, n in counts.items()}
    for pi, pool in enumerate(SPLITS):
        # [3] each pool draws from a subset of the name parts sized to its share, so that look-alike
        # names are equally dense in every pool; the sft pool uses every part.
        share = cfg.pool_fractions[pi] / cfg.pool_fractions[0]
        firsts = rng.sample(parts.first, max(8, int(len(parts.first) * share)))
        lasts = rng.sample(parts.last, max(8, int(len(parts.last) * share)))
        cores = rng.sample(parts.core, max(8, int(len(parts.core) * share)))
        for etype in ("person", "org", "city", "work"):
            made: list[Entity] = []
            need = pool_counts[etype][pi]
            attempts = 0
            while len(made) < need:
                attempts += 1
                if attempts > need * 200:
                    raise ValueError(f"cannot name {need} {etype}s in pool {pool}: too few name parts")
                if etype == "person":
                    name, detail = f"{rng.choice(firsts)} {rng.choice(lasts)}", rng.choice(PROFESSIONS)
                else:
                    kinds = {"org": ORG_KINDS, "city": CITY_KINDS, "work": WORK_KINDS}[etype]
                    detail = rng.choice(kinds)
                    name = f"{rng.choice(cores)} {detail}"
                if name not in used_names:
                    made.append(new_entity(name, etype, pool, detail))
            per_pool[pool][etype] = made

    # Relations stay inside a pool.
    for pool in SPLITS:
        typed = per_pool[pool]
        for e in (x for t in typed.values() for x in t):
            for rel in relations_of(e.type, asked_only=False):
                candidates = typed[RELATIONS[rel][1]]
                value = rng.choice(candidates)
                while value.id == e.id:
                    value = rng.choice(candidates)
                e.facts[rel] = value.id

    documents = _write_documents(rng, cfg, entities)
    questions = _make_questions(rng, cfg, entities, per_pool, documents)
    return World(config=cfg, parts=parts, entities=entities, documents=documents, questions=questions)


def _write_documents(rng: random.Random, cfg: WorldConfig, entities: list[Entity]) -> list[Document]:
    docs: list[Document] = []
    for e in entities:
        facts = [fact_sentence(rel, e.name, entities[v].name) for rel, v in e.facts.items()]
        rng.shuffle(facts)
        if e.type == "person":
            article = "an" if e.detail[0] in "aeiou" else "a"
            intro = f"{e.name} is {article} {e.detail} born in {e.year}."
        elif e.type == "org":
            intro = f"{e.name} is {ORG_DESCRIPTIONS[e.detail]} established in {e.year}."
        elif e.type == "city":
            intro = f"{e.name} is a city first recorded in {e.year}."
        else:
            intro = f"{e.name} is {WORK_DESCRIPTIONS[e.detail]} published in {e.year}."
        docs.append(
            Document(id=len(docs), title=e.name, text=" ".join([intro, *facts]), entity=e.id, pool=e.pool)
        )
    for e in entities:
        if rng.random() >= cfg.second_doc_fraction:
            continue
        # [4] a second document about the same entity, without the facts that questions ask for.
        other = entities[rng.choice(sorted(e.facts.values()))]
        later = e.year + rng.randint(5, 40)
        suffix = "early life" if e.type == "person" else "history"
        templates = [
            f"In {later}, {e.name} moved away from home.",
            f"{e.name} was often seen with {other.name}.",
            f"Letters of {e.name} survive from {later + 3}.",
            f"A fire damaged {e.name} in {later + 7}.",
            f"Records link {e.name} with {other.name}.",
            f"{e.name} was renamed for a short time.",
        ]
        # Two to four sentences: the short ones outrank the main document for a bare-name query.
        title, text = f"{e.name} ({suffix})", " ".join(rng.sample(templates, rng.randint(2, 4)))
        docs.append(Document(id=len(docs), title=title, text=text, entity=e.id, pool=e.pool))
    return docs


def _make_questions(
    rng: random.Random,
    cfg: WorldConfig,
    entities: list[Entity],
    per_pool: dict[str, dict[str, list[Entity]]],
    documents: list[Document],
) -> dict[str, list[Question]]:
    main_doc = {d.entity: d.id for d in documents if d.title == entities[d.entity].name}
    out: dict[str, list[Question]] = {}
    for pool, wanted in zip(SPLITS, cfg.questions):
        pool_entities = [e for t in per_pool[pool].values() for e in t]
        seen: set[tuple] = set()
        qs: list[Question] = []
        n_one = int(round(wanted * cfg.one_hop_fraction))
        attempts = 0
        while len(qs) < wanted:
            attempts += 1
            if attempts > wanted * 50:
                raise ValueError(f"pool {pool} cannot hold {wanted} distinct questions")
            hops = 1 if len(qs) < n_one else 2
            start = rng.choice(pool_entities)
            rels: list[str] = []
            chain = [start]
            ok = True
            for _ in range(hops):
                options = relations_of(chain[-1].type)
                if not options:
                    ok = False
                    break
                r = rng.choice(options)
                rels.append(r)
                chain.append(entities[chain[-1].facts[r]])
            key = (start.id, tuple(rels))
            if not ok or key in seen or len({c.id for c in chain}) < len(chain):
                continue
            seen.add(key)
            qs.append(
                Question(
                    id=f"{pool}-{len(qs):05d}",
                    split=pool,
                    hops=hops,
                    text=question_text(rels, start.name),
                    relations=rels,
                    chain=[c.name for c in chain],
                    answer=chain[-1].name,
                    gold_docs=[main_doc[c.id] for c in chain[:-1]],
                )
            )
        # Interleave one- and two-hop questions so any prefix of the list has both.
        rng.shuffle(qs)
        for i, q in enumerate(qs):
            q.id = f"{pool}-{i:05d}"
        out[pool] = qs
    return out


# ---------------------------------------------------------------------------------------------
# N-objective tasks


@dataclass(frozen=True)
class Task:
    """N questions of one pool, answered together in one `<answer>a1; ...; aN</answer>`."""

    id: str
    split: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    question_ids: tuple[str, ...]

    @property
    def objectives(self) -> int:
        return len(self.questions)


def make_tasks(world: World, split: str, objectives: int, count: int, seed: int = 0) -> list[Task]:
    """`count` tasks of `objectives` distinct questions each, drawn from `split` by `seed`.

    The same (split, objectives, count, seed) always gives the same tasks, and a task's questions
    never repeat an entity-relation pair. Task i does not depend on `count` (task lists are
    prefixes of each other), so a 32-task run and a 200-task run share their first 32 tasks.
    """
    if split not in world.questions:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    pool = world.questions[split]
    if not 1 <= objectives <= len(pool):
        raise ValueError(f"objectives must be between 1 and {len(pool)}, got {objectives}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    tasks = []
    for i in range(count):
        rng = random.Random(f"{world.config.seed}/{split}/{objectives}/{seed}/{i}")
        picked = rng.sample(pool, objectives)
        tasks.append(
            Task(
                id=f"{split}-n{objectives}-s{seed}-{i}",
                split=split,
                questions=tuple(q.text for q in picked),
                answers=tuple(q.answer for q in picked),
                question_ids=tuple(q.id for q in picked),
            )
        )
    return tasks


# ---------------------------------------------------------------------------------------------
# Storage: parquet files plus a manifest with their sha256 (store.py).

_FILES = ("entities.parquet", "documents.parquet", "questions.parquet", "name_parts.json")
register_kind("world", "QA world", _FILES)


def save_world(world: World, out: str | Path, force: bool = False) -> Path:
    """Write the world to `out` (atomically: a temporary folder renamed into place)."""

    def write(tmp: Path) -> None:
        ents = [asdict(e) | {"facts": json.dumps(e.facts, sort_keys=True)} for e in world.entities]
        write_parquet(ents, tmp / "entities.parquet")
        write_parquet([asdict(d) for d in world.documents], tmp / "documents.parquet")
        write_parquet(
            [asdict(q) for split in SPLITS for q in world.questions[split]], tmp / "questions.parquet"
        )
        (tmp / "name_parts.json").write_text(json.dumps(asdict(world.parts), indent=0) + "\n")

    manifest = {
        "version": WORLD_VERSION,
        "config": asdict(world.config),
        "counts": {
            "entities": len(world.entities),
            "documents": len(world.documents),
            **{f"questions_{s}": len(world.questions[s]) for s in SPLITS},
        },
    }
    return save_store(out, write, manifest, _FILES, "world", force)


def config_from_manifest(cfg) -> WorldConfig:
    """The manifest's `config` as a WorldConfig: every field present, none unknown, each of its
    default's type (KeyError / TypeError otherwise). A null seed would not fail later: it would
    silently draw other tasks (make_tasks seeds by it)."""
    defaults = asdict(WorldConfig())
    if not isinstance(cfg, dict):
        raise TypeError("config is not an object")
    if set(cfg) != set(defaults):
        raise KeyError(f"config fields differ: {', '.join(sorted(set(cfg) ^ set(defaults)))}")
    values = {}
    for key, default in defaults.items():
        value = tuple(cfg[key]) if isinstance(default, tuple) and isinstance(cfg[key], list) else cfg[key]
        if not _same_kind(value, default):
            raise TypeError(f"config.{key} is {json.dumps(cfg[key])}, expected a value like {default}")
        values[key] = value
    return WorldConfig(**values)


def _same_kind(value, default) -> bool:
    """`value` has `default`'s type (an int stands for a float; a bool for nothing)."""
    if isinstance(default, tuple):
        return (
            isinstance(value, tuple) and len(value) == len(default) and all(map(_same_kind, value, default))
        )
    if isinstance(value, bool):
        return False
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def load_world(path: str | Path | None = None, verify: bool = True) -> World:
    """Read a world written by `save_world`; every file is checked against the manifest's sha256."""
    path = Path(path) if path is not None else DEFAULT_WORLD_DIR
    manifest, cfg = open_store(
        path, _FILES, WORLD_VERSION, "world", REBUILD_COMMAND, verify, config_from_manifest
    )
    parts = NameParts(**json.loads((path / "name_parts.json").read_text()))
    entities = [
        Entity(**(row | {"facts": json.loads(row["facts"])}))
        for row in read_parquet(path / "entities.parquet", REBUILD_COMMAND)
    ]
    documents = [Document(**row) for row in read_parquet(path / "documents.parquet", REBUILD_COMMAND)]
    questions: dict[str, list[Question]] = {s: [] for s in SPLITS}
    for row in read_parquet(path / "questions.parquet", REBUILD_COMMAND):
        questions[row["split"]].append(Question(**row))
    counts = {"entities": len(entities), "documents": len(documents)}
    counts |= {f"questions_{s}": len(questions[s]) for s in SPLITS}
    check_counts(path, manifest, counts, REBUILD_COMMAND)
    return World(config=cfg, parts=parts, entities=entities, documents=documents, questions=questions)


def world_statistics(world: World) -> dict:
    """Counts that `mem1 world --check` and notebook 00 print."""
    stats: dict = {
        "entities": len(world.entities),
        "documents": len(world.documents),
        "name_parts": len(world.parts.all_parts()),
    }
    for t in ("person", "org", "city", "work"):
        stats[f"entities_{t}"] = sum(e.type == t for e in world.entities)
    for s in SPLITS:
        qs = world.questions[s]
        stats[f"questions_{s}"] = len(qs)
        stats[f"two_hop_share_{s}"] = round(sum(q.hops == 2 for q in qs) / max(1, len(qs)), 3)
    pool_sets = {s: {n for q in world.questions[s] for n in q.chain} for s in SPLITS}
    stats["entities_shared_between_pools"] = sum(
        len(pool_sets[a] & pool_sets[b]) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1 :]
    )
    return stats
