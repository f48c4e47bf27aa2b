"""The typed experiment spec: one source for defaults, the generated schema, and clear config errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import jsonschema
import pytest
import yaml

from conftest import REPO
from pretrain_knowledge import catalog, layout, players, spec
from pretrain_knowledge.cli.schema import text as schema_text
from pretrain_knowledge.typed import ConfigError, fields_of, merge

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _config(*extra: str) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for name in extra:
        config = merge(config, yaml.safe_load((REPO / name).read_text()))
    return config


def _error(change: dict) -> str:
    with pytest.raises(ConfigError) as err:
        spec.load_experiments(merge(_config(), change))
    return str(err.value)


def test_committed_schema_is_the_generated_one() -> None:
    assert SCHEMA.read_text() == schema_text(), "run: python -m pretrain_knowledge schema > " + str(SCHEMA)


@pytest.mark.parametrize("extra", [(), ("config/test.yaml",), ("config/paper.yaml",), ("config/paper.yaml", "tests/data/paper-overlay.yaml")])
def test_shipped_configs_pass_the_schema_and_the_spec(extra: tuple[str, ...]) -> None:
    config = _config(*extra)
    jsonschema.validate(config, yaml.safe_load(SCHEMA.read_text()))  # an independent validator
    assert spec.load_experiments(config)


def _walk(cls: type, seen: set[type]) -> None:
    if cls in seen:
        return
    seen.add(cls)
    for name, (field, annotation) in fields_of(cls).items():
        for inner in [annotation, *getattr(annotation, "__args__", ())]:
            if dataclasses.is_dataclass(inner):
                _walk(inner, seen)


def test_schema_and_dataclasses_agree_on_every_field_and_default() -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    classes: set[type] = set()
    _walk(spec.Config, classes)
    for cls in classes:
        node = schema if cls is spec.Config else schema["$defs"][cls.__name__]
        fields = fields_of(cls)
        assert set(node["properties"]) == set(fields), cls.__name__
        assert node["additionalProperties"] is False, cls.__name__
        for name, (field, _) in fields.items():
            prop = node["properties"][name]
            assert prop.get("description"), f"{cls.__name__}.{name} has no description"
            if field.default is not dataclasses.MISSING:
                assert prop["default"] == spec.to_plain(field.default), f"{cls.__name__}.{name}"


def test_schema_rejects_an_unknown_key_at_every_level() -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    for bad in ({"extracton": {}}, {"extraction": {"sparsify": {"qthres": 0.1, "typo": 1}}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(merge(_config(), bad), schema)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"extracton": {}}, "config: extracton: unknown key. Did you mean 'extraction'?"),
        ({"foo": 1}, "config: foo: unknown key."),
        ({"extraction": {"sparsfy": {}}}, "config: extraction.sparsfy: unknown key. Did you mean 'sparsify'?"),
        ({"extraction": {"sparsify": {"qthres": 2}}}, "config: extraction.sparsify.qthres: must be ≤ 1, got 2"),
        ({"selection": {"players": {"n": 17}}}, "selection.players.n: 17 players exceed the 16"),
        ({"selection": {"players": {"patch_size": 5}}}, "selection.players.patch_size: 5 does not divide the 28-px images"),
        ({"selection": {"players": {"options": {"regoin": 0.5}}}}, "options.regoin: no player rule takes this option. Did you mean 'region'?"),
        ({"selection": {"players": {"options": {"region": 0.1}}}}, "the central region holds"),
        ({"extraction": {"shards": 21}}, "extraction.shards: 21 shards for the 20 samples"),
        ({"extraction": {"checkpoints": [0, 12]}}, "extraction.checkpoints: 12 is outside finetune's checkpoints 0 … 8"),
        ({"extraction": {"sparsify": {"options": {"tolerance": 1}}}}, "extraction.sparsify.options.tolerance: method 'lp' takes no option"),
        (
            {"datasets": {"fmnist": {"overrides": {"extraction": {"sparsfy": {}}}}}},
            "config: datasets.fmnist.overrides.extraction.sparsfy: unknown key. Did you mean 'sparsify'?",
        ),
        (
            {"architectures": {"small_cnn": {"overrides": {"knowledge": {"tau_scope": "all"}}}}},
            "architectures.small_cnn.overrides.knowledge.tau_scope: 'all' is not one of",
        ),
        ({"architectures": {"small_cnn": {"weights": "imagenet"}}}, "small_cnn has no ImageNet weights"),
        ({"datasets": {"fmnist": {"downstream": {"classes": [5, 12]}}}}, "[12] are not classes of fashion_mnist"),
        ({"selection": {"players": {"rule": "bbox"}}}, "rule 'bbox' needs bounding boxes"),
    ],
)
def test_config_errors_name_the_key_where_it_was_written(change: dict, expected: str) -> None:
    assert expected in _error(change)


def test_command_line_values_are_understood() -> None:
    """Snakemake's --config hands a nested value over as a mapping of strings, or a whole string."""
    for given in ({"shards": "2"}, "{shards: 2}"):
        e = next(iter(spec.load_experiments(merge(_config(), {"extraction": given})).values()))
        assert e.extraction.shards == 2
    assert "expected a number, got 'high'" in _error({"knowledge": {"salience": "high"}})


def test_expansion_merges_overrides_architecture_last() -> None:
    config = _config("config/paper.yaml")
    experiments = spec.load_experiments(config)
    assert len(experiments) == 12
    vgg = experiments["cub200-vgg16-s0"]
    assert vgg.training.finetune.lr == 0.001 and vgg.training.finetune.epochs == 60
    assert vgg.selection.players.rule == "parts" and vgg.selection.players.options == {"min_overlap": 0.5}
    cifar = experiments["cifar10-vit_b_16-s0"]
    assert cifar.training.scratch.optimizer == "adamw" and cifar.training.scratch.epochs == 30
    assert cifar.epochs("pretrain") == 0  # ImageNet weights are stored, not trained
    # ViT-S/16 shares ViT-B/16's recipes (a YAML anchor), and the converged baseline merges over scratch.
    small = experiments["cifar10-vit_s_16-s0"]
    assert small.training.scratch == cifar.training.scratch and small.training.finetune == cifar.training.finetune
    converged = small.training.mode("scratch_converged")
    assert (converged.epochs, converged.optimizer, converged.warmup_epochs) == (60, "adamw", 5)


def test_stage_settings_hold_only_what_the_stage_reads() -> None:
    e = next(iter(spec.load_experiments(_config()).values()))
    assert "sparsify" not in e.games_settings() and "qthres" not in str(e.games_settings())
    down = e.prepare_settings("downstream")
    assert down["dataset"]["upstream"] == spec.to_plain(spec.TaskSpec()) and down["dataset"]["overrides"]["training"] == {}
    assert e.train_settings("finetune")["threads"] == e.threads.training
    parsed = spec.parse(spec.SparsifySettings, e.sparsify_settings())
    assert parsed.sparsify == e.extraction.sparsify


def test_catalog_names_have_implementations() -> None:
    from pretrain_knowledge.data.sources import READERS
    from pretrain_knowledge.models import available_models

    assert set(READERS) == set(catalog.SOURCES)
    assert available_models() == sorted(catalog.ARCHITECTURES)
    assert set(players.PLAYER_RULES) == {"central", "bbox", "parts", "words"}
    assert set(catalog.SPARSIFY_OPTIONS) == set(catalog.SPARSIFY_METHODS) == set(catalog.MAX_PLAYERS)
    assert layout.MODELS == tuple(m for m in layout.MODES if m != "probe")


def test_spec_imports_no_torch() -> None:
    code = "import sys; import pretrain_knowledge.spec; print(any(m == 'torch' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_converged_scratch_baseline_and_kept_checkpoints() -> None:
    config = merge(_config(), {"training": {"scratch_converged": {"epochs": 20}, "keep": "explained"}})
    e = next(iter(spec.load_experiments(config).values()))
    assert "scratch_converged" in e.modes and "scratch_converged" in e.models
    converged = e.training.mode("scratch_converged")
    assert converged.epochs == 20 and converged.lr == e.training.scratch.lr
    assert e.explained_epochs("scratch_converged") == [20]
    assert e.train_settings("scratch_converged")["keep"] == [20]
    assert e.train_settings("finetune")["keep"] == e.explained_epochs("finetune")
    assert e.train_settings("probe")["keep"] == [e.epochs("probe")]
    plain = next(iter(spec.load_experiments(_config()).values()))
    assert "scratch_converged" not in plain.modes and plain.train_settings("scratch")["keep"] is None
    assert "training.scratch_converged.epoch" in _error({"training": {"scratch_converged": {"epoch": 3}}})
