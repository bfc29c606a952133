"""codec.py: the Rust tokenizer called directly gives transformers' ids and texts."""

from mem1lite.codec import codec


def test_codec_gives_the_tokenizer_s_ids_and_texts(world, tokenizer):
    encode, decode = codec(tokenizer)
    texts = [q.text for q in world.questions["dev"][:50]] + [d.text for d in world.documents[:50]]
    texts += [
        "<think> answers: none.</think><search> Kel Works</search>",
        "",
        " é\n\t<|im_end|>",
        "\ud800x"[1:],
    ]
    for text in texts:
        ids = encode(text)
        assert ids == tokenizer.encode(text, add_special_tokens=False)
        assert decode(ids) == tokenizer.decode(ids, skip_special_tokens=False)
    broken = [300, 4, 301, 2]  # any ids, whether or not they make valid text
    assert decode(broken) == tokenizer.decode(broken, skip_special_tokens=False)


def test_codec_keeps_transformers_where_it_changes_the_result(tokenizer, monkeypatch):
    """With clean-up of spaces on decode, transformers' own calls are used."""
    calls = []
    monkeypatch.setattr(tokenizer, "clean_up_tokenization_spaces", True)
    real = tokenizer.decode
    monkeypatch.setattr(tokenizer, "decode", lambda ids, **k: calls.append(ids) or real(ids, **k))
    encode, decode = codec(tokenizer)
    decode(encode("a b"))
    assert calls
