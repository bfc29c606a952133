from pathlib import Path

import pytest

from mem1lite.realdata import load_search_r1_corpus, load_search_r1_questions
from mem1lite.retrieval import Retriever
from mem1lite.store import DataError

FIXTURES = Path(__file__).parent / "fixtures"


def test_search_r1_questions_and_corpus_load_and_retrieve():
    qs = load_search_r1_questions(FIXTURES / "search_r1_questions.jsonl")
    assert [q.id for q in qs] == ["train_0", "train_1", "train_2"]
    assert qs[0].golden_answers == ("Mara Quill", "M. Quill")
    assert qs[2].golden_answers == ("the Ellin River",)
    docs = load_search_r1_corpus(FIXTURES / "search_r1_corpus.jsonl")
    assert docs[1].title == "Mara Quill" and docs[1].text.startswith("Mara Quill was born")
    hits = Retriever(docs).search("mara quill born", k=1)
    assert hits[0].doc.title == "Mara Quill"


def test_malformed_lines_name_file_and_line(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "q", "golden_answers": ["a"]}\n{"question": \n')
    with pytest.raises(DataError, match=r"q\.jsonl:2 is not valid JSON"):
        load_search_r1_questions(bad)
    bad.write_text('{"question": "q", "golden_answers": []}\n')
    with pytest.raises(DataError, match=r"q\.jsonl:1 needs"):
        load_search_r1_questions(bad)
    with pytest.raises(DataError, match="missing"):
        load_search_r1_corpus(tmp_path / "none.jsonl")
