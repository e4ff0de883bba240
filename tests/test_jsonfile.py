"""read_json_object: every JSON file moai reads as one object (config.json, tokenizer_config.json,
a base tokenizer.json) fails the same way when damaged: one line naming the file, no traceback."""

from __future__ import annotations

import pytest

from moai_llm.errors import MoaiInputError
from moai_llm.jsonfile import read_json_object


@pytest.mark.parametrize(("content", "message"), [
    (b'{"a": 1', "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"[1, 2]", "not a JSON object (found list)"),
    (b'"text"', "not a JSON object (found str)"),
])
def test_a_damaged_file_is_named_with_what_is_wrong(tmp_path, content, message):
    f = tmp_path / "config.json"
    f.write_bytes(content)
    with pytest.raises(MoaiInputError) as err:
        read_json_object(f, "m/config.json", hint="save the model again")
    assert str(err.value).startswith(f"m/config.json: {message}") and err.value.hint == "save the model again"
    assert "\n" not in str(err.value)


def test_a_folder_in_place_of_the_file_cannot_be_read(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(MoaiInputError, match=r"config.json: cannot be read"):
        read_json_object(tmp_path / "config.json")


def test_an_object_is_returned(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"vocab_size": 8}')
    assert read_json_object(f) == {"vocab_size": 8}


def test_extend_refuses_a_base_tokenizer_json_that_is_not_an_object(tmp_path):
    """A tokenizer.json holding a list used to reach the BPE checks and fail with AttributeError."""
    from moai_llm.tokenizer.extend import extend_tokenizer

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "tokenizer.json").write_text("[]")
    with pytest.raises(MoaiInputError, match=r"--base-tokenizer .*tokenizer.json: not a JSON object"):
        extend_tokenizer(str(tmp_path / "base"), ["some text"], tmp_path / "out", 400)
    assert not (tmp_path / "out").exists()
