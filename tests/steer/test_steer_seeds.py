"""The bundled seed rationales: valid, covering every label, pointing at real training utterances."""

from __future__ import annotations

import pytest

from coe_runtime.data.labels import get_label_set
from coe_runtime.data.readers import find_split_files, read_file
from coe_runtime.data.seeds import load_seeds
from tests.support.shared import need_shared

DATASETS = {"meld": ("meld", "meld"), "emorynlp": ("emorynlp", "emorynlp")}  # label set -> (folder, format)


@pytest.mark.parametrize("label_set_name", sorted(DATASETS))
def test_bundled_seeds_cover_every_label(label_set_name):
    seeds = load_seeds(label_set_name)
    assert len(seeds) >= 10
    assert {s.label for s in seeds} == set(get_label_set(label_set_name).labels)
    for s in seeds:
        # Short but specific: a sentence or three, well under the token budget of a target.
        assert 80 <= len(s.rationale) <= 400, s.uid


@pytest.mark.realdata
@pytest.mark.parametrize("label_set_name", sorted(DATASETS))
def test_every_seed_is_a_real_training_utterance_with_that_label(data_dir, label_set_name):
    folder, fmt = DATASETS[label_set_name]
    need_shared(data_dir / folder)
    train = find_split_files(data_dir / folder, fmt)["train"]
    gold = {u.uid: u.label for d in read_file(train, fmt, "train", label_set_name) for u in d.utterances}
    for s in load_seeds(label_set_name):
        assert s.uid in gold, f"{s.uid} is not a {label_set_name} training utterance"
        assert gold[s.uid] == s.label, f"{s.uid}: seed says {s.label}, data says {gold[s.uid]}"
