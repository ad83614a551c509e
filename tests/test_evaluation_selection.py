"""Question selection and truncation against a hand-computed example."""

import random

import pandas as pd
import pytest
import torch

from helpers.evaluation.selection import (
    NoQuestionsSelected,
    select_questions,
    truncation_batch,
)
from helpers.tiny_models import tiny_model

# Hand-built records. Answer lengths (T_a, T_b) of the questions that reach the length filters:
#   q3 (10,10) mean 10 | q4 (20,16) 18 | q5 (4,2) 3 | q6 (36,34) 35 | q7 (12,20) 16 | q8 (14,8) 11
# mean T_a = 96/6 = 16, mean T_b = 90/6 = 15 -> refer (code) = min = 15; paper: 186/12 = 15.5.
# Window [0.5*15, 1.5*15] = [7.5, 22.5] drops q5 (3) and q6 (35) -> 4 left.
# Balance |T_a-T_b|/mean <= 0.5: q3 0, q4 4/18, q7 8/16 = 0.5 (kept, boundary), q8 6/11 (dropped).
# q1: only A correct; q2: prompt lengths differ (3 vs 4); q9: only in A's records.
LENGTHS = {
    "q1": (5, 5),
    "q2": (10, 10),
    "q3": (10, 10),
    "q4": (20, 16),
    "q5": (4, 2),
    "q6": (36, 34),
    "q7": (12, 20),
    "q8": (14, 8),
}


def records(model: int) -> pd.DataFrame:
    """Records of model 0 (A) or 1 (B); answer tokens encode (model, question) to spot mix-ups."""
    rows = []
    for q, lengths in LENGTHS.items():
        k = int(q[1:])
        prompt_len = 4 if (q == "q2" and model == 1) else 3
        rows.append(
            {
                "id": q,
                "prompt_ids": [1] + [50 + k] * (prompt_len - 1),
                "answer_ids": [100 * (model + 1) + k] * lengths[model],
                "correct": not (q == "q1" and model == 1),
            }
        )
    if model == 0:
        rows.append({"id": "q9", "prompt_ids": [1, 2], "answer_ids": [3], "correct": True})
    return pd.DataFrame(rows)


def test_hand_computed_selection():
    with pytest.warns(UserWarning, match="only 3 questions"):
        sel = select_questions(records(0), records(1), n=5, alpha=0.3)
    assert sel.refer == 15.0
    assert sel.t_cut == 4  # int(0.3 * 15) = int(4.5)
    assert sel.counts == {
        "common": 8,
        "both_correct": 7,
        "equal_prompt_length": 6,
        "window": 4,
        "balance": 3,
        "long_enough": 3,
        "selected": 3,
    }
    assert sel.ids == ["q3", "q4", "q7"]
    assert sel.lengths.loc["q7"].tolist() == [12.0, 20.0, 16.0]


def test_seeded_sample_follows_the_documented_rule():
    sel = select_questions(records(0), records(1), n=2, alpha=0.3, seed=7)
    assert sel.ids == random.Random(7).sample(["q3", "q4", "q7"], 2)
    assert sel.counts["selected"] == 2
    again = select_questions(records(0), records(1), n=2, alpha=0.3, seed=7)
    assert again.ids == sel.ids


def test_paper_reference_and_short_answers():
    paper = select_questions(records(0), records(1), n=3, alpha=0.3, reference="paper")
    assert paper.refer == 15.5 and paper.t_cut == 4
    # alpha 0.8 -> T_cut = int(12.0) = 12: q3 (10, 10) cannot give 12 tokens of its own.
    dropped = select_questions(records(0), records(1), n=2, alpha=0.8)
    assert dropped.t_cut == 12 and dropped.counts["long_enough"] == 2
    assert sorted(dropped.ids) == ["q4", "q7"]
    with pytest.warns(UserWarning):
        kept = select_questions(records(0), records(1), n=5, alpha=0.8, short_answers="keep")
    row = kept.ids.index("q3")
    assert int((kept.batches["base"].labels[row] != -100).sum()) == 10


def test_truncation_labels_exactly_t_cut_tokens_of_each_models_own_answer():
    sel = select_questions(records(0), records(1), n=3, alpha=0.3, pad_id=0)
    for model, name in enumerate(("base", "tuned")):
        batch = sel.batches[name]
        assert batch.input_ids.shape == batch.labels.shape == batch.attention_mask.shape
        for row, q in enumerate(sel.ids):
            k = int(q[1:])
            own = [100 * (model + 1) + k] * sel.t_cut
            labelled = batch.labels[row][batch.labels[row] != -100].tolist()
            assert labelled == own  # T_cut tokens, this model's answer
            n_real = int(batch.attention_mask[row].sum())
            assert n_real == 3 + sel.t_cut
            assert batch.input_ids[row, :n_real].tolist() == [1, 50 + k, 50 + k, *own]
            assert batch.labels[row, :3].tolist() == [-100] * 3  # prompt unlabelled
            assert (batch.labels[row, n_real:] == -100).all()  # padding unlabelled
            assert (batch.attention_mask[row, :n_real] == 1).all()  # right padding


def test_labels_give_method_loss_on_first_t_cut_answer_tokens():
    """transformers' shifted loss on the batch = mean NLL of answer[0:T] given prompt+answer[:T-1]."""
    model = tiny_model("llama", vocab_size=64, seed=0)
    prompts, answers, t_cut = [[1, 5, 6], [1, 7]], [[9, 10, 11, 12, 13], [20, 21, 22]], 3
    batch = truncation_batch(prompts, answers, t_cut, pad_id=0)
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        n = len(prompt) + t_cut
        with torch.no_grad():
            loss = model(
                batch.input_ids[i : i + 1, :n],
                attention_mask=batch.attention_mask[i : i + 1, :n],
                labels=batch.labels[i : i + 1, :n],
            ).loss
            context = torch.tensor([prompt + answer[: t_cut - 1]])
            logp = model(context).logits[0].log_softmax(-1)
        targets = answer[:t_cut]
        first = len(prompt) - 1  # the logits at the last prompt token predict answer[0]
        manual = -torch.stack([logp[first + j, t] for j, t in enumerate(targets)]).mean()
        torch.testing.assert_close(loss, manual, rtol=1e-5, atol=1e-6)


def test_errors_report_filter_counts():
    wrong = records(1).assign(correct=False)
    with pytest.raises(NoQuestionsSelected, match="both_correct=0") as info:
        select_questions(records(0), wrong)
    assert "common=8" in str(info.value)
    # window [1.05 * 15, 22.5] keeps q4 (18) and q7 (16); delta 0.1 rejects both (0.22, 0.5).
    with pytest.raises(NoQuestionsSelected, match="window=2, balance=0"):
        select_questions(records(0), records(1), beta=1.05, delta=0.1)
    with pytest.raises(ValueError, match="lack columns"):
        select_questions(records(0).drop(columns="correct"), records(1))
    with pytest.raises(ValueError, match="reference"):
        select_questions(records(0), records(1), reference="median")
    with pytest.raises(ValueError, match="t_cut"):
        truncation_batch([[1]], [[2]], 0, pad_id=0)
    with pytest.raises(ValueError, match="empty"):
        truncation_batch([[1], [1]], [[2], []], 1, pad_id=0)


def test_generated_records_flow_into_edge_scores(tmp_path):
    """Cached generations of two models -> selection -> batches that `edge_scores` accepts."""
    from helpers.eap import edge_scores
    from helpers.evaluation import GenerationSettings, generate_cached, load_items
    from helpers.organisms.tokenizer import build_tokenizer

    tok = build_tokenizer()
    items = load_items("organisms", n=8, seed=0)
    models = [tiny_model("llama", vocab_size=len(tok), seed=s) for s in (2, 3)]
    settings = GenerationSettings(max_new_tokens=12, batch_size=8)
    frames = [
        generate_cached(
            m,
            tok,
            items,
            dataset="organisms",
            template="organism",
            settings=settings,
            cache_dir=tmp_path,
            model_name=f"m{i}",
            progress=False,
        ).assign(correct=True)  # random models are never right: pretend, to reach the filters
        for i, m in enumerate(models)
    ]
    sel = select_questions(*frames, n=4, alpha=0.5, delta=2.0, beta=0.0, gamma=10.0)
    assert len(sel.ids) == 4 and sel.t_cut == max(1, int(0.5 * sel.refer))
    for model, name in zip(models, ("base", "tuned"), strict=True):
        batch = sel.batches[name]
        scores = edge_scores(model, batch.input_ids, batch.attention_mask, batch.labels)
        assert scores.scores.shape[0] == 4
        for row in range(4):
            n = int(batch.attention_mask[row].sum())
            with torch.no_grad():
                loss = model(
                    batch.input_ids[row : row + 1, :n], labels=batch.labels[row : row + 1, :n]
                ).loss
            torch.testing.assert_close(scores.loss[row], loss, rtol=1e-4, atol=1e-5)
