import filecmp
import json
from dataclasses import replace

import pytest

from mem1lite.cli import main
from mem1lite.store import DataError
from mem1lite.world import (
    DEFAULT_WORLD_DIR,
    RELATIONS,
    SPLITS,
    WorldConfig,
    generate_world,
    load_world,
    make_tasks,
    save_world,
)
from tests.conftest import SMALL


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = save_world(generate_world(SMALL), tmp_path / "a")
    b = save_world(generate_world(SMALL), tmp_path / "b")
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert mismatch == [] and errors == [] and len(match) == 5


def test_other_seed_gives_other_world(small_world):
    other = generate_world(replace(SMALL, seed=8))
    assert [e.name for e in other.entities] != [e.name for e in small_world.entities]


def test_shipped_world_is_seed_zero_regenerated(tmp_path):
    fresh = save_world(generate_world(WorldConfig(seed=0)), tmp_path / "qa")
    shipped = json.loads((DEFAULT_WORLD_DIR / "manifest.json").read_text())["sha256"]
    assert json.loads((fresh / "manifest.json").read_text())["sha256"] == shipped


def test_shipped_world_sizes(world):
    assert len(world.entities) >= 20_000
    assert {e.type for e in world.entities} == {"person", "org", "city", "work"}
    minimum = {"sft": 20_000, "rl": 5_000, "dev": 1_000, "test": 1_000}
    for split in SPLITS:
        assert len(world.questions[split]) >= minimum[split]
        hops = {q.hops for q in world.questions[split]}
        assert hops == {1, 2}
    size = sum(f.stat().st_size for f in DEFAULT_WORLD_DIR.iterdir())
    assert size < 20e6


def test_pools_are_disjoint_and_closed(world):
    by_name = world.by_name()
    docs = {d.id: d for d in world.documents}
    pool_names = {}
    for split in SPLITS:
        names = set()
        for q in world.questions[split]:
            for n in q.chain:
                assert by_name[n].pool == split
                names.add(n)
            assert all(docs[d].pool == split for d in q.gold_docs)
        pool_names[split] = names
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not pool_names[a] & pool_names[b]
    # every relation points inside its own pool, to an entity of the relation's value type
    for e in world.entities[:3000]:
        for rel, v in e.facts.items():
            assert world.entities[v].pool == e.pool
            assert world.entities[v].type == RELATIONS[rel][1]


def test_names_are_unique_and_made_of_name_parts(world):
    names = [e.name for e in world.entities]
    assert len(names) == len(set(names))
    parts = set(world.parts.all_parts())
    assert all(len(n.split()) == 2 and set(n.split()) <= parts for n in names)


def test_questions_are_answered_by_their_gold_documents(world):
    docs = {d.id: d for d in world.documents}
    for q in world.questions["dev"]:
        assert len(q.chain) == q.hops + 1 and q.answer == q.chain[-1]
        for rel, subject, value, doc in zip(q.relations, q.chain, q.chain[1:], q.gold_docs):
            assert docs[doc].title == subject
            assert f"The {rel} of {subject} is {value}." in docs[doc].text


def test_some_entities_have_a_second_document_without_the_asked_facts(world):
    seconds = [d for d in world.documents if "(" in d.title]
    assert len(seconds) > 0.2 * len(world.entities)
    assert not any(f"The {r} of" in d.text for d in seconds for r in RELATIONS)


def test_tasks_are_deterministic_prefix_stable_and_distinct(world):
    a = make_tasks(world, "dev", 4, 10, seed=3)
    assert a == make_tasks(world, "dev", 4, 10, seed=3)
    assert a[:5] == make_tasks(world, "dev", 4, 5, seed=3)
    assert a != make_tasks(world, "dev", 4, 10, seed=4)
    for t in a:
        assert t.objectives == 4 and len(set(t.question_ids)) == 4
        assert all(qid.startswith("dev-") for qid in t.question_ids)
    assert len(make_tasks(world, "test", 16, 2)[0].questions) == 16


@pytest.mark.parametrize(
    ("split", "n", "count"), [("train", 2, 1), ("dev", 0, 1), ("dev", 10**6, 1), ("dev", 2, -1)]
)
def test_bad_task_requests_raise_clear_errors(world, split, n, count):
    with pytest.raises(ValueError):
        make_tasks(world, split, n, count)


def test_missing_and_corrupted_files_name_the_file_and_the_fix(tmp_path, small_world):
    out = save_world(small_world, tmp_path / "w")
    (out / "documents.parquet").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"documents\.parquet is corrupted.*mem1 world --out"):
        load_world(out)
    (out / "documents.parquet").unlink()
    with pytest.raises(DataError, match=r"documents\.parquet is missing.*mem1 world"):
        load_world(out)
    with pytest.raises(DataError, match="manifest.json is missing"):
        load_world(tmp_path / "nowhere")


def test_cli_refuses_to_overwrite_and_reports_one_line(tmp_path, capsys, small_world):
    out = save_world(small_world, tmp_path / "w")
    before = (out / "manifest.json").read_bytes()
    assert main(["world", "--out", str(out), "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mem1: error:") and "--force" in err and "\n" not in err
    assert (out / "manifest.json").read_bytes() == before
    (out / "questions.parquet").write_bytes(b"x")
    assert main(["world", "--check", "--path", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "questions.parquet is corrupted" in err and "\n" not in err


def test_world_check_prints_retrieval_figures(capsys):
    assert main(["world", "--check"]) == 0
    out = capsys.readouterr().out
    assert "recall@1" in out and "recall@3" in out and "sample task" in out


@pytest.mark.parametrize(
    "damage",
    [
        ("config", None),
        ("sha256", None),
        ("config.seed", None),
        ("config.seed", "0"),
        ("config.pool_fractions", None),
        ("config.questions", [1, 2]),
        ("config.pool_fractions", "drop"),
        ("config.bogus", 1),
    ],
)
def test_a_manifest_missing_a_key_or_holding_a_null_is_one_line_naming_it(tmp_path, small_world, damage):
    """Never a traceback, and never a silent load: a null seed would draw other tasks."""
    out = save_world(small_world, tmp_path / "w")
    manifest = json.loads((out / "manifest.json").read_text())
    key, value = damage
    table, _, field = key.rpartition(".")
    where = manifest[table] if table else manifest
    if value == "drop":
        del where[field]
    else:
        where[field] = value
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"manifest\.json is corrupted .*mem1 world --out") as info:
        load_world(out, verify=False)
    assert field in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("counts", ["12", {"entities": "many"}, {"entities": -1}])
def test_a_manifest_whose_counts_are_not_whole_numbers_is_refused(tmp_path, small_world, counts):
    out = save_world(small_world, tmp_path / "w")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["counts"] = counts
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"manifest\.json is corrupted \(TypeError: counts is not a table"):
        load_world(out)


def test_a_manifest_counting_other_rows_than_its_files_hold_is_refused(tmp_path, small_world):
    """The counts are outside the files' sha256: an edited count is caught by reading the rows."""
    out = save_world(small_world, tmp_path / "w")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["counts"]["entities"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"does not match its files \(entities: \d+ recorded, \d+ read\)"):
        load_world(out)


def test_a_store_of_the_other_domain_is_called_what_it_is_not_corrupted(tmp_path, small_world):
    from mem1lite.webshop import CatalogueConfig, generate_catalogue, load_catalogue, save_catalogue

    world = save_world(small_world, tmp_path / "w")
    shop = save_catalogue(
        generate_catalogue(CatalogueConfig(seed=3, products=300, goals_per_product=2)), tmp_path / "s"
    )
    with pytest.raises(DataError, match=f"^{shop} is a WebShop-lite catalogue, not a QA world"):
        load_world(shop)
    with pytest.raises(DataError, match=f"^{world} is a QA world, not a WebShop-lite catalogue"):
        load_catalogue(world)
    (world / "manifest.json").unlink()  # its files alone still say what it is
    with pytest.raises(DataError, match="is a QA world, not a WebShop-lite catalogue"):
        load_catalogue(world)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        load_world(tmp_path / "file")
