"""Parameter files are validated on every run (issue 13, cases 8-11).

Each bad file is checked three ways: by the reader (`load_job`), by `--only NAME` and by
`--dry-run`; all three must stop before anything executes, with an error naming the file, the
key and the fix.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import paramfiles, pipeline, publish

REPO = Path(__file__).resolve().parents[1]
GOOD = (REPO / "notebooks" / "params" / "organism_grpo.yml").read_text()


@pytest.fixture
def params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository copy (templates, parameter files; organisms linked); nothing may execute."""
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "organisms").symlink_to(REPO / "data" / "organisms")
    monkeypatch.setenv("RL_CIRCUITRY_ROOT", str(tmp_path))
    folder = tmp_path / "notebooks" / "params"

    def no_execution(*args, **kwargs):
        raise AssertionError("a bad parameter file reached execution")

    monkeypatch.setattr(pipeline, "execute", no_execution)
    return folder


def _refused(folder: Path, name: str, text: str, capsys) -> str:
    """The error for file `name` with `text`, which all three entry points must agree on."""
    path = folder / f"{name}.yml"
    path.write_text(text)
    with pytest.raises(paramfiles.ParamFileError) as err:
        pipeline.load_job(path)
    message = str(err.value)
    assert str(path) in message
    for argv in (["--only", name], ["--dry-run"]):
        assert pipeline.main(argv) == 2, argv
        assert message in capsys.readouterr().err
    return message


def test_committed_files_are_valid() -> None:
    jobs = pipeline.discover()
    assert {j.pair for j in jobs if j.template.stem == "pair_analysis"} == {
        j.name for j in jobs if j.template.stem == "pair_analysis"
    }


def test_case8_no_parameters_block_is_refused(params: Path, capsys) -> None:
    text = GOOD.split("parameters:")[0].replace("pair_grpo", "pair_grpo_copy")
    message = _refused(params, "grpo_copy", text, capsys)
    assert "parameters.pair is None but must equal the file's name 'grpo_copy'" in message


def test_case8_two_files_cannot_share_a_pair(params: Path, capsys) -> None:
    text = GOOD.replace("pair_grpo.ipynb", "pair_sft_as_grpo.ipynb").replace(
        'tuned: "organism:grpo"', 'tuned: "organism:sft"'
    )
    message = _refused(params, "sft_as_grpo", text, capsys)
    assert "parameters.pair is 'organism_grpo' but must equal the file's name" in message
    assert "set `pair: sft_as_grpo`" in message


def test_case8_duplicate_outputs_or_pairs_across_files(params: Path) -> None:
    (params / "organism_grpo2.yml").write_text(
        GOOD.replace("pair: organism_grpo", "pair: organism_grpo2")
    )
    with pytest.raises(paramfiles.ParamFileError, match="both write output"):
        pipeline.discover(params)


def test_case9_paths_outside_the_repository(params: Path, capsys) -> None:
    message = _refused(
        params,
        "escape",
        GOOD.replace("book/organisms/pair_grpo.ipynb", "book/../../escape_output.ipynb"),
        capsys,
    )
    assert "output = 'book/../../escape_output.ipynb' resolves to" in message
    assert "outside the repository" in message
    message = _refused(
        params, "escape", GOOD.replace("pair: organism_grpo", "pair: ../../../escape_pair"), capsys
    )
    assert "must equal the file's name 'escape'" in message
    message = _refused(
        params, "escape", GOOD.replace("inputs: [data/organisms/sft", "inputs: [/etc"), capsys
    )
    assert "inputs[0] = '/etc' resolves to /etc, outside the repository" in message
    with pytest.raises(ValueError, match="plain file name"):
        publish.target("../../../escape_pair")


def test_case10_keys_cannot_carry_code(params: Path, capsys) -> None:
    evil = GOOD.replace(
        "  focus_alpha: 0.3",
        "  focus_alpha: 0.3\n  \"x\\nimport os; os.system('touch /tmp/pwned')\\ny\": 1",
    )
    message = _refused(params, "organism_grpo", evil, capsys)
    assert "is not a plain name" in message and "parameter names become Python variables" in message
    message = _refused(params, "organism_grpo", GOOD + "  when: 2024-01-01\n", capsys)
    assert "parameters.when is a date" in message and "quote it" in message
    message = _refused(
        params, "organism_grpo", GOOD.replace("n_items: 600", "n_items: .nan"), capsys
    )
    assert "parameters.n_items is nan; give a finite number" in message


def test_case11_misspelled_keys_get_did_you_mean(params: Path, capsys) -> None:
    message = _refused(params, "organism_grpo", GOOD + "  n_question: 4\n", capsys)
    assert "unknown parameter 'n_question' for template pair_analysis.ipynb" in message
    assert "did you mean 'n_questions'?" in message
    message = _refused(params, "organism_grpo", "require_gpu: true\n" + GOOD, capsys)
    assert "unknown key 'require_gpu'; did you mean 'requires_gpu'?" in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("stage: 2", "stage: two", "stage is 'two'; it must be an integer"),
        ("stage: 2", "stage: -1", "stage = -1 is outside [0, 99]"),
        (
            "inputs: [data/organisms/sft, data/organisms/grpo, data/organisms/grpo-s1, data/organisms/grpo-s2]",
            "inputs: data/organisms",
            "inputs is 'data/organisms'; it must be a list",
        ),
        (
            "n_items: 600",
            "n_items: 0",
            "parameters: n_items must be a positive integer or null, got 0",
        ),
        (
            "n_items: 600",
            "n_items: many",
            "parameters.n_items is 'many'; the template expects an integer like its default 500",
        ),
        (
            "alphas: [0.03, 0.1, 0.3, 0.5]",
            "alphas: [0.1, 3]",
            "alphas must be a non-empty list of numbers in (0, 1], got (0.1, 3)",
        ),
        (
            "alphas: [0.03, 0.1, 0.3, 0.5]",
            "alphas: []",
            "alphas must be a non-empty list of numbers in (0, 1], got ()",
        ),
        (
            'tuned: "organism:grpo"',
            'tuned: "organism:grpo-typo"',
            "parameters.tuned = 'organism:grpo-typo': no model at",
        ),
        (
            'tuned: "organism:grpo"',
            'tuned: "./models/missing"',
            "parameters.tuned = './models/missing': no model at",
        ),
        (
            "template: organism",
            "template: organism\n  positions: some",
            "positions 'some' unknown; choose one of ['all', 'labelled']",
        ),
    ],
)
def test_case11_types_ranges_and_local_paths(params: Path, capsys, old, new, expected) -> None:
    assert old in GOOD
    message = _refused(params, "organism_grpo", GOOD.replace(old, new), capsys)
    assert expected in message


def test_template_defaults_read_the_parameters_cell() -> None:
    defaults = paramfiles.template_defaults(REPO / "notebooks" / "pair_analysis.ipynb")
    assert defaults["n_questions"] == 100 and defaults["seed"] == 42 and defaults["beta"] == 0.5
    assert defaults["base_revision"] is None and defaults["alphas"] == [0.1, 0.3, 0.5]


CAUSAL = (REPO / "notebooks" / "params" / "causal_ppo.yml").read_text()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'tuned_seeds: ["organism:ppo-s1", "organism:ppo-s2"]',
            'tuned_seeds: ["organism:ppo-s1", "organism:ppo-s9"]',
            "parameters.tuned_seeds[1] = 'organism:ppo-s9': no model at",
        ),
        (
            'base_ref: "organism:sft"',
            'base_ref: "organism:sfx"',
            "parameters.base_ref = 'organism:sfx': no model at",
        ),
        ("removal_scale: 0.5", "removal_scale: 1.5", "removal_scale = 1.5 is outside (0, 1]"),
        (
            'ablation_baseline: "mean"',
            'ablation_baseline: "median"',
            "ablation_baseline = 'median'; choose one of ['zero', 'mean']",
        ),
    ],
)
def test_causal_files_check_models_removal_and_baseline(
    params: Path, capsys, old, new, expected
) -> None:
    assert old in CAUSAL
    message = _refused(params, "causal_ppo", CAUSAL.replace(old, new), capsys)
    assert expected in message
