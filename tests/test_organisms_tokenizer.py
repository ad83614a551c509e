"""The character-level tokenizer encodes one token per character and round-trips via save/load."""

from transformers import AutoTokenizer

from helpers.organisms.tasks import make_problems, prompt_of
from helpers.organisms.tokenizer import ALPHABET, SPECIAL_TOKENS, build_tokenizer


def test_one_token_per_character_with_bos() -> None:
    tok = build_tokenizer()
    text = "start with 47, add 18.\n\nexpr: (47+18)*3-25"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id
    assert len(ids) == len(text) + 1
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert len(tok) == len(SPECIAL_TOKENS) + len(ALPHABET)


def test_special_tokens_are_distinct() -> None:
    tok = build_tokenizer()
    special = {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}
    assert len(special) == 4
    assert tok.decode([tok.eos_token_id]) == "<eos>"
    assert tok("Q").input_ids == [tok.bos_token_id, tok.unk_token_id]


def test_whole_problem_set_is_in_vocabulary() -> None:
    tok = build_tokenizer()
    for p in make_problems("train", 200, n_ops=(2, 5)):
        for solution in p.solutions.values():
            assert tok.unk_token_id not in tok(prompt_of(p) + solution).input_ids


def test_left_padding_and_offline_round_trip(tmp_path) -> None:
    tok = build_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    batch = loaded(["ab", "abcd"], padding=True)
    assert batch["input_ids"][0][:2] == [loaded.pad_token_id] * 2
    assert batch["attention_mask"][0] == [0, 0, 1, 1, 1]
    text = "12*3=36\nanswer: 36"
    assert loaded(text).input_ids == tok(text).input_ids
    assert loaded.decode(loaded(text).input_ids, skip_special_tokens=True) == text
    assert loaded.eos_token_id == tok.eos_token_id
