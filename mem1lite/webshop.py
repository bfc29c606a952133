"""WebShop-lite: the paper's second domain, a generated web shop small enough for a laptop CPU.

    mem1 webshop --out data/webshop --seed 0 [--force]     # rebuild the shipped catalogue (~2 s)
    mem1 webshop --check                                    # verify it and print its figures
    mem1 rollout --env webshop --policy teacher --agent mem1 --episodes 8 --out runs/shop.jsonl

WebShop (Yao et al., 2022) is a simulated store of 1.18 M real products with 12k crowd-written
instructions ("i am looking for a machine washable t-shirt in red, size medium, and price lower
than 20.00 dollars"); an agent searches, opens items, selects options and buys, and is scored by
how well the bought item matches the instruction. None of that data can be downloaded here, so
this module generates a store with the same structure from one integer seed:

1. A catalogue of products in six categories (clothing, shoes, home, beauty, electronics,
   grocery), each with a product type (`t-shirt`, `sneakers`, `mug`...), a brand, a price, a few
   attributes (`cotton`, `slim fit`, `machine washable`: at most one from each attribute group, so
   no shirt is both long- and short-sleeved), two option types with 3-5 choices each (`color` and
   `size`; `scent`, `flavor` or `pack` in some categories), a short description, and a title that
   names the brand, one or two of the attributes and the type (the other attributes are only on the
   item page, as on a real shop).
2. Goals are made from a *target* product: its type, one or two of its attributes, one value of
   each of its option types and a price bound a little above its price, phrased by one of three
   WebShop-like templates. The target always satisfies its goal; other products may too.
3. Four splits of goals (`sft`, `rl`, `dev`, `test`, the names the QA pools use, so SFT, PPO and
   evaluation defaults work unchanged). The store is shared, as in WebShop, but the splits'
   *target products* are disjoint (each product's goals go to one split), and so are their
   instructions.
4. Stored like the QA world: two parquet files written with `datasets` plus a manifest holding
   their sha256; the same seed gives the same bytes. A missing or damaged file is one line naming
   it and the rebuild command.
5. Tasks (`make_tasks`): a task of size N holds N goals of one split, bought one after the other
   in one episode (N = 1 is WebShop's task; N = 2..`MAX_ITEMS` is the harder split that tests
   memory, as the QA world's N questions do). The N goals are of N different product types, so
   the items are told apart by what they are.

The environment (pages, actions, reward) is in webshop_env.py, the scripted shopper in
webshop_teacher.py; `domains.WebShopDomain` ties them to the `Domain` interface.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .store import check_counts, open_store, read_parquet, register_kind, save_store, write_parquet

WEBSHOP_VERSION = 1
SPLITS = ("sft", "rl", "dev", "test")
REBUILD_COMMAND = "mem1 webshop --out data/webshop --seed 0 --force"
DEFAULT_WEBSHOP_DIR = Path(__file__).resolve().parent.parent / "data" / "webshop"


# ---------------------------------------------------------------------------------------------
# The vocabulary of the store


COLORS = (
    "black",
    "white",
    "red",
    "blue",
    "navy",
    "green",
    "grey",
    "pink",
    "beige",
    "brown",
    "yellow",
    "purple",
)


@dataclass(frozen=True)
class Category:
    name: str
    types: tuple[str, ...]
    """product types: the nouns of titles and goals (unique across categories)"""
    attribute_groups: tuple[tuple[str, ...], ...]
    """a product takes at most one attribute from each group"""
    options: tuple[tuple[str, tuple[str, ...]], ...]
    """(option type, its values in display order); values are unique across a category's types"""
    price: tuple[int, int]
    """price range in dollars"""


CATEGORIES: tuple[Category, ...] = (
    Category(
        "clothing",
        ("t-shirt", "hoodie", "sweater", "jacket", "jeans", "shorts", "dress", "pajamas"),
        (
            ("cotton", "polyester", "wool", "linen", "fleece"),
            ("long sleeve", "short sleeve"),
            ("slim fit", "relaxed fit"),
            ("machine washable",),
            ("quick dry", "water resistant"),
        ),
        (("color", COLORS), ("size", ("x-small", "small", "medium", "large", "x-large", "xx-large"))),
        (9, 79),
    ),
    Category(
        "shoes",
        ("sneakers", "boots", "sandals", "loafers", "slippers", "running shoes"),
        (
            ("leather", "canvas", "suede", "mesh"),
            ("rubber sole", "memory foam"),
            ("slip-on", "lace-up"),
            ("waterproof", "breathable"),
            ("non-slip", "lightweight"),
        ),
        (("color", COLORS), ("size", ("6", "7", "8", "9", "10", "11", "12"))),
        (19, 129),
    ),
    Category(
        "home",
        ("pillow", "blanket", "towel set", "curtains", "rug", "mug", "lamp", "storage basket"),
        (
            ("cotton", "bamboo", "ceramic", "microfiber", "wood"),
            ("machine washable", "dishwasher safe", "easy to clean"),
            ("handmade", "eco friendly"),
            ("non-slip", "blackout", "dimmable"),
        ),
        (("color", COLORS), ("size", ("small", "medium", "large", "queen", "king"))),
        (7, 89),
    ),
    Category(
        "beauty",
        ("shampoo", "conditioner", "body lotion", "face serum", "lip balm", "sunscreen", "hand cream"),
        (
            ("paraben free", "sulfate free"),
            ("vegan", "organic"),
            ("cruelty free",),
            ("fragrance free", "long lasting"),
            ("for sensitive skin", "for dry skin"),
        ),
        (
            ("scent", ("unscented", "lavender", "coconut", "citrus", "rose", "vanilla")),
            ("size", ("2 oz", "4 oz", "8 oz", "16 oz")),
        ),
        (4, 39),
    ),
    Category(
        "electronics",
        ("phone case", "charging cable", "earbuds", "headphones", "power bank", "keyboard", "mouse"),
        (
            ("wireless", "usb-c"),
            ("bluetooth", "fast charging"),
            ("noise cancelling", "shockproof", "ergonomic"),
            ("rechargeable",),
            ("water resistant", "compact"),
        ),
        (("color", COLORS), ("pack", ("pack of 1", "pack of 2", "pack of 3"))),
        (8, 99),
    ),
    Category(
        "grocery",
        ("coffee beans", "green tea", "granola", "protein bars", "mixed nuts", "dark chocolate", "olive oil"),
        (
            ("organic",),
            ("gluten free", "sugar free"),
            ("non-gmo", "keto friendly"),
            ("vegan", "low sodium"),
            ("fair trade",),
        ),
        (
            ("flavor", ("original", "vanilla", "honey", "mint", "caramel", "sea salt")),
            ("size", ("6 oz", "12 oz", "1 lb", "2 lb")),
        ),
        (3, 39),
    ),
)
CATEGORY_OF_TYPE = {t: c.name for c in CATEGORIES for t in c.types}
CATEGORY_BY_NAME = {c.name: c for c in CATEGORIES}
ALL_TYPES = tuple(t for c in CATEGORIES for t in c.types)
ALL_ATTRIBUTES = tuple(sorted({a for c in CATEGORIES for g in c.attribute_groups for a in g}))
OPTION_TYPES = ("color", "size", "scent", "flavor", "pack")

BRANDS = (
    "Northwind",
    "Bluebird",
    "Maple",
    "Harbor",
    "Summit",
    "Willow",
    "Cedar",
    "Aurora",
    "Pioneer",
    "Meadow",
    "Falcon",
    "Orchid",
    "Copper",
    "Juniper",
    "Atlas",
    "Ember",
    "Lumen",
    "Nimbus",
    "Solace",
    "Tidal",
    "Vesper",
    "Zephyr",
    "Quill",
    "Rowan",
)
PRICE_BOUNDS = (5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 70, 80, 90, 100, 120, 150)


def option_phrase(option_type: str, value: str) -> str:
    """How a goal names an option: 'red color', 'size medium', 'lavender scent', 'pack of 2'."""
    if option_type == "size":
        return f"size {value}"
    if option_type == "pack":
        return value
    return f"{value} {option_type}"


# ---------------------------------------------------------------------------------------------
# Records


@dataclass
class Product:
    id: str
    """ASIN-like id shown in brackets on pages and clicked: `B1234`"""
    title: str
    category: str
    type: str
    brand: str
    price: float
    attributes: list[str]
    options: dict[str, list[str]]
    """option type -> the values on offer, in display order"""
    description: str
    pool: str
    """the split whose goals target this product"""


@dataclass
class Goal:
    id: str
    split: str
    instruction: str
    target: str
    """id of the product the goal was made from (it satisfies every clause)"""
    category: str
    type: str
    attributes: list[str]
    options: dict[str, str]
    """option type -> wanted value"""
    price_bound: float

    def summary(self) -> str:
        """One line for trajectory records and the inspector's 'gold'."""
        opts = ", ".join(f"{k} {v}" for k, v in self.options.items())
        return (
            f"{self.type} | {', '.join(self.attributes)} | {opts} | under {self.price_bound:.2f} "
            f"| target {self.target}"
        )


@dataclass
class CatalogueConfig:
    """Size of a generated store (the defaults make the shipped one)."""

    seed: int = 0
    """seed of everything: same seed, byte-identical files"""
    products: int = 2400
    """products in the store"""
    goals_per_product: int = 10
    """goals made from each product (duplicates are dropped)"""
    pool_fractions: tuple[float, float, float, float] = (0.6, 0.2, 0.1, 0.1)
    """share of the products whose goals go to the sft, rl, dev, test splits"""
    title_attributes: tuple[int, int] = (1, 2)
    """a title names between this many of its product's attributes"""


@dataclass
class Catalogue:
    config: CatalogueConfig
    products: list[Product]
    goals: dict[str, list[Goal]] = field(default_factory=dict)
    digest: str = ""
    """sha256 of the stored files (from the manifest; empty for a catalogue generated in memory)"""

    @functools.cached_property
    def by_id(self) -> dict[str, Product]:
        return {p.id: p for p in self.products}


# ---------------------------------------------------------------------------------------------
# Generation


_DESCRIPTIONS = (
    "A {a0} {type} by {brand}, {rest}.",
    "{brand} makes this {type} {rest_with}.",
    "Our {a0} {type}: {rest}, made to last.",
)


def _describe(rng: random.Random, brand: str, ptype: str, attributes: list[str]) -> str:
    a0 = attributes[0]
    rest = " and ".join(attributes[1:]) or "simple and practical"
    rest_with = f"to be {rest}" if len(attributes) > 1 else "to be simple and practical"
    return rng.choice(_DESCRIPTIONS).format(a0=a0, type=ptype, brand=brand, rest=rest, rest_with=rest_with)


def _make_product(rng: random.Random, cfg: CatalogueConfig, pid: str, pool: str) -> Product:
    cat = rng.choice(CATEGORIES)
    ptype = rng.choice(cat.types)
    groups = rng.sample(cat.attribute_groups, min(4, len(cat.attribute_groups)))
    attributes = [rng.choice(g) for g in groups]
    options = {}
    for otype, values in cat.options:
        k = rng.randint(3, min(5, len(values)))
        chosen = set(rng.sample(values, k))
        options[otype] = [v for v in values if v in chosen]
    lo, hi = cat.price
    price = round(rng.uniform(lo, hi)) + rng.choice((0.99, 0.49, 0.0))
    price = round(price - 0.01 if price == int(price) else price, 2)  # 24.0 -> 23.99
    brand = rng.choice(BRANDS)
    n_title = rng.randint(*cfg.title_attributes)
    in_title = [a for a in attributes if a in rng.sample(attributes, n_title)]
    title = " ".join([brand, *in_title, ptype])
    return Product(
        id=pid,
        title=title,
        category=cat.name,
        type=ptype,
        brand=brand,
        price=price,
        attributes=attributes,
        options=options,
        description=_describe(rng, brand, ptype, rng.sample(attributes, len(attributes))),
        pool=pool,
    )


_TEMPLATES = (
    "i am looking for {a}{attrs} {type} in {opts}, and price lower than {bound} dollars",
    "find me {a}{type} that {is_are} {attrs}, with {opts}, priced under ${bound}",
    "i need {a}{attrs} {type} in {opts} that costs less than {bound} dollars",
)
PLURAL_TYPES = frozenset(
    ("jeans", "shorts", "pajamas", "sneakers", "boots", "sandals", "loafers", "slippers", "curtains")
    + ("earbuds", "headphones", "coffee beans", "protein bars", "mixed nuts", "running shoes")
)
"""types that take no article ('i need waterproof boots')"""


def price_bound(rng: random.Random, price: float) -> float:
    """The smallest round bound at or above price x U(1.0, 1.25): the target is always within it."""
    target = price * rng.uniform(1.0, 1.25)
    return float(next((b for b in PRICE_BOUNDS if b >= target), math.ceil(target / 50) * 50))


def _make_goal(rng: random.Random, product: Product, gid: str) -> Goal:
    k = rng.choice((1, 2, 2, 3))
    attributes = sorted(rng.sample(product.attributes, k), key=product.attributes.index)
    options = {t: rng.choice(vals) for t, vals in product.options.items()}
    bound = price_bound(rng, product.price)
    plural = product.type in PLURAL_TYPES
    instruction = rng.choice(_TEMPLATES).format(
        a="" if plural else "a ",
        is_are="are" if plural else "is",
        attrs=" and ".join(attributes),
        type=product.type,
        opts=" and ".join(option_phrase(t, v) for t, v in options.items()),
        bound=f"{bound:.2f}",
    )
    return Goal(
        id=gid,
        split=product.pool,
        instruction=instruction,
        target=product.id,
        category=product.category,
        type=product.type,
        attributes=attributes,
        options=options,
        price_bound=bound,
    )


def _pool_sizes(total: int, fractions) -> list[int]:
    sizes = [int(total * f) for f in fractions]
    sizes[0] += total - sum(sizes)
    return sizes


def generate_catalogue(config: CatalogueConfig | None = None) -> Catalogue:
    """The store and its goals, from `config.seed` alone."""
    cfg = config or CatalogueConfig()
    rng = random.Random(f"webshop/{cfg.seed}")
    if cfg.products > 9000:
        raise ValueError("at most 9,000 products (ids are B1000..B9999)")
    ids = [f"B{n}" for n in rng.sample(range(1000, 10000), cfg.products)]
    pools = [p for p, n in zip(SPLITS, _pool_sizes(cfg.products, cfg.pool_fractions)) for _ in range(n)]
    rng.shuffle(pools)
    products = [_make_product(rng, cfg, pid, pool) for pid, pool in zip(ids, pools)]
    goals: dict[str, list[Goal]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    for product in products:
        for _ in range(cfg.goals_per_product):
            g = _make_goal(rng, product, f"{product.pool}-{len(goals[product.pool])}")
            if g.instruction not in seen:  # [3] instructions never repeat, within or across splits
                seen.add(g.instruction)
                goals[product.pool].append(g)
    return Catalogue(cfg, products, goals)


# ---------------------------------------------------------------------------------------------
# Tasks


MAX_ITEMS = 4
"""[5] most goals in one task: the full-context teacher's peak context grows ~1.1 k tokens per item
(4.4 k on average at N = 4, 6.5 k at most: within the tiny model's 8,192 positions)"""


@dataclass(frozen=True)
class WebShopTask:
    """One shopping task: N goals, one item to buy for each, in order (WebShop's tasks have N = 1)."""

    id: str
    split: str
    goals: tuple[Goal, ...]
    """the goals in the order the prompt lists them"""

    @property
    def goal(self) -> Goal:
        """The first goal (the only one at N = 1)."""
        return self.goals[0]

    @property
    def questions(self) -> tuple[str, ...]:
        return tuple(g.instruction for g in self.goals)

    @property
    def objectives(self) -> int:
        return len(self.goals)


def make_tasks(catalogue: Catalogue, split: str, objectives: int, count: int, seed: int = 0) -> list:
    """`count` tasks of `split` drawn by `seed`; task i does not depend on `count` (as world.make_tasks).

    N = 1: the tasks walk through the split's goals in an order shuffled by `seed`: no goal repeats
    before all were used (the teacher is deterministic, so a repeated goal would repeat its SFT
    samples). N >= 2 [5]: task i draws N product types of the split, then one goal of each, from
    its own generator (catalogue seed, split, seed, N, i)."""
    if split not in catalogue.goals:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    if isinstance(objectives, bool) or not isinstance(objectives, int) or not 1 <= objectives <= MAX_ITEMS:
        raise ValueError(
            f"webshop tasks have 1 to {MAX_ITEMS} goals (objectives = 1..{MAX_ITEMS}), got {objectives!r}"
        )
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    pool = catalogue.goals[split]
    if objectives > 1:
        by_type: dict[str, list[Goal]] = {}
        for g in pool:
            by_type.setdefault(g.type, []).append(g)
        types = sorted(by_type)
        tasks = []
        for i in range(count):
            rng = random.Random(f"{catalogue.config.seed}/webshop/{split}/{seed}/n{objectives}/{i}")
            goals = tuple(rng.choice(by_type[t]) for t in rng.sample(types, objectives))
            tasks.append(WebShopTask(id=f"shop-{split}-n{objectives}-s{seed}-{i}", split=split, goals=goals))
        return tasks
    order = list(range(len(pool)))
    random.Random(f"{catalogue.config.seed}/webshop/{split}/{seed}").shuffle(order)
    return [
        WebShopTask(id=f"shop-{split}-s{seed}-{i}", split=split, goals=(pool[order[i % len(pool)]],))
        for i in range(count)
    ]


# ---------------------------------------------------------------------------------------------
# Storage: parquet files plus a manifest with their sha256, as the QA world (store.py).

_FILES = ("products.parquet", "goals.parquet")
register_kind("catalogue", "WebShop-lite catalogue", _FILES)


def save_catalogue(catalogue: Catalogue, out: str | Path, force: bool = False) -> Path:
    """Write the store to `out` (atomically: a temporary folder renamed into place)."""

    def write(tmp: Path) -> None:
        rows = [asdict(p) | {"options": json.dumps(p.options)} for p in catalogue.products]
        write_parquet(rows, tmp / "products.parquet")
        goals = [asdict(g) | {"options": json.dumps(g.options)} for s in SPLITS for g in catalogue.goals[s]]
        write_parquet(goals, tmp / "goals.parquet")

    manifest = {
        "version": WEBSHOP_VERSION,
        "config": asdict(catalogue.config),
        "counts": {"products": len(catalogue.products)}
        | {f"goals_{s}": len(catalogue.goals[s]) for s in SPLITS},
    }
    return save_store(out, write, manifest, _FILES, "catalogue", force)


def _config(cfg: dict) -> CatalogueConfig:
    cfg = dict(cfg)
    cfg["pool_fractions"] = tuple(cfg["pool_fractions"])
    cfg["title_attributes"] = tuple(cfg["title_attributes"])
    return CatalogueConfig(**cfg)


def load_catalogue(path: str | Path | None = None, verify: bool = True) -> Catalogue:
    """Read a store written by `save_catalogue`; every file is checked against the manifest."""
    path = Path(path) if path is not None else DEFAULT_WEBSHOP_DIR
    manifest, cfg = open_store(path, _FILES, WEBSHOP_VERSION, "catalogue", REBUILD_COMMAND, verify, _config)
    products = [
        Product(**(row | {"options": json.loads(row["options"])}))
        for row in read_parquet(path / "products.parquet", REBUILD_COMMAND)
    ]
    goals: dict[str, list[Goal]] = {s: [] for s in SPLITS}
    for row in read_parquet(path / "goals.parquet", REBUILD_COMMAND):
        goals[row["split"]].append(Goal(**(row | {"options": json.loads(row["options"])})))
    counts = {"products": len(products)} | {f"goals_{s}": len(goals[s]) for s in SPLITS}
    check_counts(path, manifest, counts, REBUILD_COMMAND)
    digest = hashlib.sha256(json.dumps(manifest["sha256"], sort_keys=True).encode()).hexdigest()
    return Catalogue(cfg, products, goals, digest)


def catalogue_statistics(catalogue: Catalogue) -> dict:
    """Counts that `mem1 webshop --check` and notebook 06 print."""
    products = catalogue.products
    stats: dict = {"products": len(products), "product_types": len({p.type for p in products})}
    for c in CATEGORIES:
        stats[f"products_{c.name}"] = sum(p.category == c.name for p in products)
    stats["price_min"] = min(p.price for p in products)
    stats["price_max"] = max(p.price for p in products)
    for s in SPLITS:
        stats[f"goals_{s}"] = len(catalogue.goals[s])
    targets = {s: {g.target for g in catalogue.goals[s]} for s in SPLITS}
    stats["targets_shared_between_splits"] = sum(
        len(targets[a] & targets[b]) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1 :]
    )
    goals = [g for s in SPLITS for g in catalogue.goals[s]]
    stats["goal_attributes_mean"] = round(sum(len(g.attributes) for g in goals) / len(goals), 2)
    stats["products_satisfying_a_goal_mean"] = round(_satisfying_mean(catalogue, goals[:300]), 2)
    return stats


def satisfies(product: Product, goal: Goal) -> bool:
    """The product can earn reward 1 for the goal (its type, attributes, the options on offer, price)."""
    return (
        product.type == goal.type
        and all(a in product.attributes for a in goal.attributes)
        and all(v in product.options.get(t, ()) for t, v in goal.options.items())
        and product.price <= goal.price_bound
    )


def _satisfying_mean(catalogue: Catalogue, goals: list[Goal]) -> float:
    """How many products satisfy a goal fully (type, attributes, options on offer, price)."""
    by_type: dict[str, list[Product]] = {}
    for p in catalogue.products:
        by_type.setdefault(p.type, []).append(p)
    return sum(sum(satisfies(p, g) for p in by_type[g.type]) for g in goals) / max(1, len(goals))
