import pytest

from bench.config import ConfigError, load_config


def test_presets_load_and_validate():
    for p in ("smoke", "quick", "record", "full", "gpu"):
        cfg = load_config(p)
        assert cfg.preset == p and cfg.segment_samples > 0
        assert cfg.system_names() and cfg.metric_names()


def test_every_preset_asks_for_sources_its_corpora_can_give():
    """Distinct identities (docs/corpora.md): a preset that asked for more would fail at the start of its run."""
    from bench.corpora import get_corpus
    from bench.plan import check_sources

    for p in ("smoke", "quick", "record", "full", "gpu"):
        d = load_config(p).data
        sizes = {"train": d.train_sources, "valid": d.valid_sources, "test": d.test_sources}
        check_sources(get_corpus("speech", seed=load_config(p).run.seed), sizes)


def test_the_record_preset_is_a_run_of_record():
    cfg = load_config("record")
    assert len(cfg.training_seeds()) >= 3 and cfg.data.test_sources >= 24 and cfg.run.segment_seconds >= 3
    assert cfg.tasks.n_test >= cfg.data.test_sources  # every source in every cell
    assert cfg.run.budget and cfg.analysis.focus in cfg.system_names()
    assert set(cfg.analysis.against) <= set(cfg.system_names())


def test_narrowing_and_sets():
    cfg = load_config("smoke", systems=["bypass"], effects=["peq4", "chorus"], sets=["tasks.n_test=7"])
    assert cfg.system_names() == ["bypass"]
    assert cfg.effects.seen == ["peq4"] and cfg.effects.unseen == ["chorus"]
    assert cfg.tasks.n_test == 7
    cfg = load_config("smoke", corpora=["music"])
    assert cfg.data.seen_corpora == [] and cfg.data.unseen_corpora == ["music"]
    assert cfg.train_corpora() == ["speech"]  # training keeps the configured seen corpus


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"systems": ["nope"]}, r"systems.include: unknown \['nope'\]; valid: .*bypass"),
        ({"effects": ["flanger9000"]}, r"effects: unknown \['flanger9000'\]; valid: .*peq4"),
        ({"corpora": ["radio"]}, r"unknown corpus 'radio'; valid: .*speech"),
        ({"corpora": ["folder:/no/such/dir"]}, r"no such directory /no/such/dir"),
        ({"corpora": ["folder"]}, r"folder needs a path"),
        ({"sets": ["tasks.n_test=-1"]}, r"tasks.n_test: must be at least 1"),
        ({"sets": ["run.segment_seconds=0"]}, r"run.segment_seconds: must be positive"),
        ({"sets": ["run.sample_rate='fast'"]}, r"run.sample_rate: expected an integer"),
        ({"sets": ["run.colour=3"]}, r"run: unknown key\(s\) \['colour'\]; valid: .*seed"),
        ({"sets": ["run.device=tpu"]}, r"run.device: 'tpu'; valid"),
        ({"sets": ["data.source_seconds=0.5"]}, r"cannot hold two segments"),
        ({"sets": ["noseg"]}, r"expected key=value"),
        ({"sets": ["metrics.include=[mrstft"]}, r"--set metrics.include: '\[mrstft' is not a valid TOML value"),
        ({"sets": ['metrics.include="mrstft"']}, r"metrics.include: expected a list of names"),
        ({"sets": ["run.cell_timeout_s=-1"]}, r"run.cell_timeout_s: must be >= 0"),
        ({"sets": ['run.executor="spark"']}, r"run.executor: 'spark'; valid: local \| ray"),
    ],
)
def test_bad_config_names_the_key(kwargs, message):
    from bench.plan import check  # names are checked by the plan, against their registries

    with pytest.raises(ConfigError, match=message):
        check(load_config("smoke", **kwargs))


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'; valid: smoke, quick, record, full"):
        load_config("huge")


def test_system_and_metric_sections_raise_the_one_config_error():
    from bench.metrics import get_metric
    from bench.systems import get_system

    with pytest.raises(ConfigError, match=r"systems.random: unknown key\(s\) \['sed'\]; valid: \['seed'\]"):
        get_system("random", {"sed": 1})
    with pytest.raises(ConfigError, match="systems.random.seed: expected an integer, got 'x'"):
        get_system("random", {"seed": "x"})
    with pytest.raises(ConfigError, match="systems.random.seed: expected an integer, got 1.5"):
        get_system("random", {"seed": 1.5})
    assert get_system("random", {"seed": 3.0}).cfg.seed == 3  # an integral float is an integer
    with pytest.raises(ConfigError, match=r"systems.proposed.eps: must be in \(0, 0.5\)"):  # a section's own check
        get_system("proposed", {"eps": 0.9})
    with pytest.raises(ConfigError, match=r"metrics.mrstft: unknown key\(s\) \['fft'\]; valid: \[.*'max_examples'"):
        get_metric("mrstft", {"fft": [1]})
    with pytest.raises(ConfigError, match="metrics.pesq.max_examples: expected an integer >= 0"):
        get_metric("pesq", {"max_examples": -1})
    assert get_metric("pesq", {"max_examples": 2}).limit(24) == 2  # per-metric options live in its own config


def test_a_bad_section_stops_the_run_before_training_with_the_key(tmp_path, capsys):
    from bench.cli import main

    code = main(["run", "--preset", "smoke", "--out", str(tmp_path), "--systems", "bypass",
                 "--set", "metrics.mrstft.fft_sizez=[256]"])
    err = capsys.readouterr().err
    assert code == 2
    assert "config error: metrics.mrstft: unknown key(s) ['fft_sizez']" in err and "valid:" in err
    assert "Traceback" not in err
    code = main(["run", "--preset", "smoke", "--out", str(tmp_path), "--systems", "random",
                 "--set", "systems.random.seed=\"x\""])
    assert code == 2 and "systems.random.seed: expected an integer" in capsys.readouterr().err


# --- every bad input a line: the file or key named, exit 2, no traceback ------------------------------------------


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_a_malformed_config_file_is_one_line_naming_it(tmp_path, capsys):
    from bench.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nseed = [1, \n")
    assert main(["run", "--preset", "smoke", "--config", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert f"--config {bad}: not valid TOML" in _one_line(capsys)
    bad.write_bytes(b"\xff\xfe[run]")
    assert main(["run", "--preset", "smoke", "--config", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert f"--config {bad}: not valid TOML" in _one_line(capsys)
    assert not (tmp_path / "out").exists()  # nothing written for a run that never started


def test_a_set_list_that_is_not_toml_is_one_line_naming_the_key(tmp_path, capsys):
    from bench.cli import main

    assert main(["run", "--preset", "smoke", "--set", "metrics.include=[mrstft", "--out", str(tmp_path)]) == 2
    assert "--set metrics.include: '[mrstft' is not a valid TOML value" in _one_line(capsys)
    assert main(["run", "--preset", "smoke", "--set", "metrics.include=mrstft", "--out", str(tmp_path)]) == 2
    assert "metrics.include: expected a list of names" in _one_line(capsys)


def test_listen_analyze_names_a_malformed_ratings_file(tmp_path, capsys):
    from bench.cli import main

    good, bad = tmp_path / "A.csv", tmp_path / "B.csv"
    good.write_text("listener,trial,condition,system,rating\nA,t1,hidden_reference,ref,100\n")
    bad.write_text('listener,trial,condition,system,rating\nB,t1,"anchor,anchor,1\nB,t2,x,y,50,7,8\n')
    assert main(["listen", "analyze", str(good), str(bad)]) == 2
    assert f"listen analyze: {bad}:" in _one_line(capsys)
