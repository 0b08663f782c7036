"""ectc.runtime.models: tokenizer, tiny Llama, LoRA targets, NF4 loading, the recipe cache."""

import pytest

torch = pytest.importorskip("torch")

from ectc.runtime.models import (  # noqa: E402
    apply_lora, build_tiny_llama, build_word_tokenizer, cached_model_dir, get_or_build,
)
from ectc.schema import trainer_kwargs  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models on a shared 2-core box: one intra-op thread is faster than two contending.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TEXTS = ["What is 3 + 4? I think it is 12. Correct or Incorrect? Suggestibility Level: 73%"]


def test_tokenizer_splits_words_punctuation_and_digits():
    tok = build_word_tokenizer(TEXTS, extra_tokens=["Yes", "No"])
    pieces = tok.convert_ids_to_tokens(tok("Level: 73% Correct?")["input_ids"])
    assert pieces == ["<bos>", "Level", ":", "7", "3", "%", "Correct", "?"]
    # Numbers never seen whole are still spelled from digits, not <unk>.
    assert "<unk>" not in tok.convert_ids_to_tokens(tok("Level: 1984%")["input_ids"])
    assert tok.convert_ids_to_tokens(tok("zebra")["input_ids"]) == ["<bos>", "<unk>"]
    assert tok.padding_side == "left"


def test_tokenizer_can_keep_numbers_whole():
    tok = build_word_tokenizer(TEXTS + ["0 100"], split_digits=False)
    pieces = tok.convert_ids_to_tokens(tok("Level: 73% is 12 or 100")["input_ids"])
    assert pieces == ["<bos>", "Level", ":", "73", "%", "is", "12", "or", "100"]
    # A whole number never seen is unknown: the corpus must hold every number used.
    assert tok.convert_ids_to_tokens(tok("1984")["input_ids"]) == ["<bos>", "<unk>"]


def test_tokenizer_is_deterministic_and_round_trips(tmp_path):
    a = build_word_tokenizer(TEXTS, ["Yes"])
    b = build_word_tokenizer(list(reversed(TEXTS * 2)), ["Yes"])
    assert a.get_vocab() == b.get_vocab()
    assert [a.pad_token_id, a.bos_token_id, a.eos_token_id, a.unk_token_id] == [0, 1, 2, 3]
    text = "What is 3 + 4 ? Correct"
    ids = a(text)["input_ids"]
    assert a.decode(ids, skip_special_tokens=True) == text
    a.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text)["input_ids"] == ids
    assert loaded.pad_token == "<pad>" and loaded.bos_token == "<bos>"


def test_tiny_llama_lora_targets_match_real_names():
    tok = build_word_tokenizer(TEXTS)
    model = build_tiny_llama(tok, layers=2, width=96, heads=4)
    assert model.config.vocab_size == len(tok) and model.config.num_hidden_layers == 2
    peft = apply_lora(model, trainer_kwargs("lora", {"rank": 4, "alpha": 8, "dropout": 0.0,
                                                     "targets": ["q", "k", "v", "o", "up", "down", "gate"]}))
    assert set(peft.peft_config["default"].target_modules) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"}
    wrapped = {n.split(".")[-2] for n, _ in peft.named_parameters() if "lora_A" in n}
    assert len(wrapped) == 1  # lora_A.default
    n_lora = sum(1 for n, _ in peft.named_parameters() if "lora_A" in n)
    assert n_lora == 2 * 7


def test_same_seed_same_weights():
    tok = build_word_tokenizer(TEXTS)
    a, b = build_tiny_llama(tok, seed=3), build_tiny_llama(tok, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_cache_builds_once_and_is_keyed_by_recipe(tmp_path):
    calls = []

    def build():
        calls.append(1)
        tok = build_word_tokenizer(TEXTS)
        return build_tiny_llama(tok, layers=1, width=32, heads=2), tok

    recipe = {"layers": 1, "width": 32, "warmup": {"steps": 5, "lr": 0.001}}
    m1, t1, hit1 = get_or_build(tmp_path, recipe, build)
    m2, t2, hit2 = get_or_build(tmp_path, dict(reversed(list(recipe.items()))), build)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert all(torch.equal(x, y) for x, y in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert cached_model_dir(tmp_path, recipe) != cached_model_dir(tmp_path, {**recipe, "width": 64})
    # Only the finished directory is left, no temp dirs.
    assert [p.name for p in tmp_path.iterdir()] == [cached_model_dir(tmp_path, recipe).name]


def test_short_lora_names_map():
    assert trainer_kwargs("lora", {"targets": ["q", "gate", "lm_head"]})["target_modules"] == [
        "q_proj", "gate_proj", "lm_head"]
