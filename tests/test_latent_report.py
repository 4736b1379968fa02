"""The report's latent-space study section (reports/latent.py): built from hand-made study files in the schema a
latent study writes under ``<out>/latent/``, and rendered in a full report from the synthetic results."""

from __future__ import annotations

import html as html_lib
import math
import re

import numpy as np
import pandas as pd
import pytest

from reports import latent as Lt
from reports.tables import MISSING

FEATURES = Lt.FEATURES


def write_cell(d, system, effect, space, slopes, *, n_inputs=5, trained_for="grid", dims=None, budget=None,
               figures=True, slug=None, **summary):
    """One study cell: ``slopes`` maps an axis to {feature: slope} (others 0; NaN allowed). Shares are
    |slope| / sum |slope|; slope intervals +-0.1, share intervals +-0.05; change = 2 x the largest |slope|."""
    d.mkdir(parents=True, exist_ok=True)
    slug = slug or f"{effect}__{system}"
    rows = []
    for i, (axis, sl) in enumerate(slopes.items()):
        s = np.array([sl.get(f, 0.0) for f in FEATURES], dtype=float)
        share = np.abs(s) / np.nansum(np.abs(s))
        change = 2 * float(np.nanmax(np.abs(s)))
        moves = change >= 0.25
        main = int(np.nanargmax(share)) if moves else -1
        row = {"system": system, "effect": effect, "space": space, "axis": axis,
               "code_variance": 0.4 / (i + 1) if space == "code" else math.nan, "output_r2": 0.1 * (i + 1),
               "change": change, "moves": moves, "main_feature": FEATURES[main] if moves else "",
               "selectivity": share[main] if moves else math.nan, "main_param": f"p{i}", "n_inputs": n_inputs}
        for f, v, sh in zip(FEATURES, s, share, strict=True):
            row.update({f"slope/{f}": v, f"slope_low/{f}": v - 0.1, f"slope_high/{f}": v + 0.1, f"share/{f}": sh,
                        f"share_low/{f}": sh - 0.05, f"share_high/{f}": sh + 0.05})
        rows.append(row)
    pd.DataFrame(rows).to_csv(d / f"{slug}_axes.csv", index=False)
    nothing = not any(r["moves"] for r in rows)
    pd.DataFrame([{"system": system, "effect": effect, "space": space, "controller": f"{system}: before the hedge",
                   "feature_source": "audiocommons", "dims": dims or len(slopes), "n_axes": len(slopes),
                   "n_inputs": n_inputs, "n_references": 6,
                   "code_variance": 0.55 if space == "code" else math.nan, "output_r2": 0.42, "coverage": 0.31,
                   "moves_nothing": nothing, "verdict": f"verdict of {system} on {effect}",
                   "trained_for": trained_for,
                   **(budget or dict.fromkeys(("train_seconds", "train_examples", "train_steps", "train_renders"),
                                              math.nan)),
                   "mel_grid": f"{slug}_mel_grid.png", "trajectories": f"{slug}_trajectories.png", **summary}]
                 ).to_csv(d / f"{slug}_summary.csv", index=False)
    pd.DataFrame({"path": ["pc1"], "position": [0.0]}).to_csv(d / f"{slug}_probes.csv", index=False)
    if figures:
        for kind in ("mel_grid", "trajectories"):
            (d / f"{slug}_{kind}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return slug


# code space on chorus: two axes that move many features at once
CODE = {"pc1": {"brightness": 0.3, "depth": 0.3, "warmth": 0.2, "roughness": 0.2},
        "pc2": {"roughness": 0.5, "hardness": 0.3, "brightness": 0.2}}
# knob space on chorus: knob1 moves brightness nearly alone, knob2 depth; no boominess column value
KNOBS = {"knob1": {"brightness": 0.8, "depth": 0.1, "warmth": 0.1, "boominess": math.nan},
         "knob2": {"depth": 0.6, "brightness": 0.2, "reverb": 0.2, "boominess": math.nan}}
# code space on delay: nothing moves (largest change 2 x 0.03 = 0.06, on pc2)
STILL = {"pc1": {"brightness": 0.02, "depth": -0.01}, "pc2": {"reverb": -0.03, "depth": 0.01}}
BUDGET = {"train_seconds": 95.2, "train_examples": 2000, "train_steps": 500, "train_renders": 2000}


@pytest.fixture
def study(tmp_path):
    d = tmp_path / "out" / "latent"
    write_cell(d, "proposed", "chorus", "code", CODE, dims=16)
    write_cell(d, "proposed_knobs", "chorus", "knobs", KNOBS, trained_for="study: peq4, delay, chorus",
               budget=BUDGET)
    write_cell(d, "proposed", "delay", "code", STILL, dims=16, n_inputs=5)
    (d / "peq4__broken_summary.csv").write_text("system,effect,space,dims,n_axes,n_inputs,moves_nothing\n"
                                               "broken,peq4,code,16,3\n")  # a row cut short
    (d / "old_axis_features.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a file no cell owns: still linked
    return tmp_path / "out", tmp_path / "report"


def test_summary_rows_statement_and_axes(study):
    out, rep = study
    sec = Lt.build(out, rep)
    assert [(c.system, c.effect, c.space) for c in sec.cells] == [
        ("proposed", "chorus", "code"), ("proposed_knobs", "chorus", "knobs"), ("proposed", "delay", "code")]
    assert sec.summary_rows == [
        ["proposed", "chorus", "code", "16", "2", "5", "55.0", "42.0", "0.31", "verdict of proposed on chorus",
         "the grid's checkpoint"],
        ["proposed_knobs", "chorus", "knobs", "2", "2", "5", "n/a", "42.0", "0.31",
         "verdict of proposed_knobs on chorus",
         "trained for the study (peq4, delay, chorus): 95.2 s, 2,000 examples, 500 steps, 2,000 renders"],
        ["proposed", "delay", "code", "16", "2", "5", "55.0", "42.0", "0.31", "verdict of proposed on delay",
         "the grid's checkpoint"]]
    assert [h for h, _ in sec.summary_header][6:9] == ["code variance in studied axes (%)", "output R² (%)",
                                                       "coverage"]
    # only the cell whose latent moves nothing gets the loud sentence
    assert sec.nothing == ["proposed on delay: the latent moves nothing — no axis changes any AudioCommons feature "
                           "by 0.25 of the effect's spread (the largest change over a walk is 0.06 of it, on pc2)."]
    assert "n = 5" in sec.intro and "before any hedge" in sec.intro and "each of its knobs" in sec.intro
    knob1 = sec.cells[1].rows[0]
    assert (knob1.axis, knob1.code_variance, knob1.output_r2, knob1.change, knob1.main_param) == (
        "knob1", "n/a", "10.0", "1.60", "p0")
    assert knob1.top == ["brightness +0.80 [0.70, 0.90]", "depth +0.10 [0.00, 0.20]", "warmth +0.10 [0.00, 0.20]"]
    assert knob1.selectivity == "0.80 [0.75, 0.85] (brightness)"
    still = sec.cells[2].rows
    assert [a.selectivity for a in still] == ["moves nothing", "moves nothing"] and not any(a.moves for a in still)
    assert still[1].top[0] == "reverb -0.03 [-0.13, 0.07]" and still[0].code_variance == "40.0"


def test_selectivity_comparison_and_knob_sentence(study):
    out, rep = study
    sec = Lt.build(out, rep)
    chorus, delay = sec.comparisons
    assert chorus.effect == "chorus" and chorus.columns == ["proposed (code)", "proposed_knobs (knobs)"]
    rows = dict(chorus.rows)
    assert list(rows) == list(FEATURES)
    # brightness: knob1 moves it nearly alone (0.80), the code's best axis gives it 0.30 of its movement
    assert rows["brightness"] == [("0.30 [0.25, 0.35] (pc1)", False), ("0.80 [0.75, 0.85] (knob1)", True)]
    assert chorus.best["brightness"] == ["proposed_knobs (knobs)"]
    assert chorus.best["depth"] == ["proposed_knobs (knobs)"] and chorus.best["reverb"] == ["proposed_knobs (knobs)"]
    assert chorus.best["roughness"] == ["proposed (code)"] and chorus.best["hardness"] == ["proposed (code)"]
    # a share of exactly 0 (or NaN) is a feature the space does not move: no entry, no winner
    assert rows["boominess"] == [(MISSING, False), (MISSING, False)] and "boominess" not in chorus.best
    assert rows["sharpness"] == [(MISSING, False), (MISSING, False)] and "sharpness" not in chorus.best
    assert chorus.sentence == ("chorus: the knobs of proposed_knobs are more selective than the code of proposed for "
                               "3 of 8 features (the code is more selective for 3; neither space moves 2).")
    # delay: one code space that moves nothing, no knob system
    assert delay.columns == ["proposed (code)"] and delay.best == {}
    assert all(entries == [(MISSING, False)] for _, entries in delay.rows)
    assert delay.sentence == ("delay: no knob system was studied on delay, so there is no knob space to compare the "
                              "code with.")


def test_files_are_copied_and_linked(study):
    out, rep = study
    sec = Lt.build(out, rep)
    chorus_knobs = sec.cells[1]
    assert [f["name"] for f in chorus_knobs.files] == [
        "chorus__proposed_knobs_summary.csv", "chorus__proposed_knobs_axes.csv", "chorus__proposed_knobs_probes.csv"]
    assert [f["src"] for f in chorus_knobs.figures] == ["latent/chorus__proposed_knobs_mel_grid.png",
                                                       "latent/chorus__proposed_knobs_trajectories.png"]
    assert "each knob" in chorus_knobs.figures[0]["caption"] and "knob space" in chorus_knobs.figures[1]["caption"]
    assert "principal axis of the code" in sec.cells[0].figures[0]["caption"]
    linked = {f["name"] for f in sec.files}
    csvs = {p.name for p in (out / "latent").glob("*.csv")}
    assert csvs <= linked and "old_axis_features.png" in linked  # every CSV, and the figure no cell shows
    assert not {p for p in linked if p.endswith(("_mel_grid.png", "_trajectories.png"))}  # those are figures
    for f in sec.files + [x for c in sec.cells for x in c.files + c.figures]:
        assert (rep / f["src"]).is_file(), f


def test_partial_or_corrupt_cells_are_skipped_with_a_note(study):
    out, rep = study
    d = out / "latent"
    write_cell(d, "gone", "peq4", "code", CODE)
    (d / "peq4__gone_axes.csv").unlink()
    write_cell(d, "cut", "peq4", "code", CODE)
    text = (d / "peq4__cut_axes.csv").read_text().splitlines()
    (d / "peq4__cut_axes.csv").write_text("\n".join(text[:-1] + [text[-1][:40]]) + "\n")  # last row cut short
    write_cell(d, "mangled", "peq4", "code", CODE)
    (d / "peq4__mangled_axes.csv").write_text('axis,change,moves\n"pc1,0.3,True\n')  # an unclosed quote
    write_cell(d, "twice", "peq4", "code", CODE)
    s = pd.read_csv(d / "peq4__twice_summary.csv")
    pd.concat([s, s]).to_csv(d / "peq4__twice_summary.csv", index=False)
    write_cell(d, "nocol", "peq4", "code", CODE)
    pd.read_csv(d / "peq4__nocol_summary.csv").drop(columns=["space"]).to_csv(d / "peq4__nocol_summary.csv",
                                                                              index=False)
    write_cell(d, "nofig", "peq4", "knobs", KNOBS, figures=False)  # shown, with a note for each figure
    write_cell(d, "blank", "peq4", "code", CODE, moves_nothing="")  # every field there, one of them empty
    write_cell(d, "maybe", "peq4", "code", CODE, moves_nothing="perhaps")
    sec = Lt.build(out, rep)
    assert [c.system for c in sec.cells if c.effect == "peq4"] == ["nofig"]
    notes = {n.split(":", 1)[0]: n for n in sec.notes}
    assert set(notes) == {"peq4__blank", "peq4__broken", "peq4__cut", "peq4__gone", "peq4__mangled", "peq4__maybe",
                          "peq4__nocol", "peq4__twice"}
    assert "peq4__blank_summary.csv is incomplete (no moves_nothing)" in notes["peq4__blank"]
    assert "moves_nothing is 'perhaps', not true or false" in notes["peq4__maybe"]
    assert notes["peq4__broken"] == ("peq4__broken: not shown, peq4__broken_summary.csv is incomplete (row 1 has 5 "
                                     "of 7 fields). Its files are linked below.")
    assert "peq4__gone_axes.csv is missing" in notes["peq4__gone"]
    assert "peq4__cut_axes.csv is incomplete" in notes["peq4__cut"]
    assert "peq4__mangled_axes.csv is unreadable" in notes["peq4__mangled"]
    assert "has 2 rows, expected one" in notes["peq4__twice"]
    assert "lacks the column space" in notes["peq4__nocol"]
    nofig = next(c for c in sec.cells if c.system == "nofig")
    assert nofig.figures == [] and len(nofig.notes) == 2 and "peq4__nofig_mel_grid.png" in nofig.notes[0]
    assert {"peq4__cut_axes.csv", "peq4__broken_summary.csv"} <= {f["name"] for f in sec.files}
    # the rest of the section is unaffected
    assert len(sec.summary_rows) == 4 and sec.comparisons[0].best["brightness"] == ["proposed_knobs (knobs)"]


def test_no_study_no_section(tmp_path):
    assert Lt.build(tmp_path, tmp_path / "report") is None  # no latent/ folder
    (tmp_path / "latent").mkdir()
    (tmp_path / "latent" / "gain_mel_grid.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert Lt.build(tmp_path, tmp_path / "report") is None  # files, but no study summary
    assert not (tmp_path / "report").exists()


def test_the_report_shows_the_section(tmp_path):
    from reports.build import build_report
    from reports.synthetic import make_results

    out = make_results(tmp_path / "results", n=3, n_audio=1, seeds=(0,))
    write_cell(out / "latent", "x<i>y", "peq4", "code", STILL, slug="peq4__x_i_y")  # names are escaped
    page = build_report(out, n_resamples=50, max_mel=0).read_text()
    d = out / "report"
    assert '<a href="#latent">Latent-space study</a>' in page
    section = re.search(r'<section id="latent">.*?</section>', page, re.S).group(0)
    text = html_lib.unescape(section)
    assert "<h2>Latent-space study</h2>" in section
    assert ("proposed on chorus: the latent moves nothing — no axis changes any AudioCommons feature by 0.25 of "
            "the effect's spread") in text
    assert "trained for the study (peq4, delay, chorus): 95.2 s, 2,000 examples, 500 steps, 2,000 renders" in text
    table = re.search(r'<table class="sig" id="latent-selectivity-chorus">.*?</table>', section, re.S).group(0)
    row = re.search(r"<td class=\"sys\">brightness</td>(.*?)</tr>", table, re.S).group(1)
    assert re.findall(r"<td[^>]*>(.*?)</td>", row) == [MISSING, '<b>0.65 [0.57, 0.73] (knob2)</b>']
    assert "the knobs of proposed_knobs are more selective than the code of proposed for 8 of 8 features" in text
    axes = re.search(r'id="latent-chorus__proposed_knobs-axes">.*?</table>', section, re.S).group(0)
    assert "brightness +0.60 [0.55, 0.65]" in axes and "0.70 [0.62, 0.78] (reverb)" in axes
    refs = re.findall(r'(?:src|href)="(latent/[^"]+)"', section)
    assert {"latent/chorus__proposed_axes.csv", "latent/chorus__proposed_knobs_probes.csv",
            "latent/chorus__proposed_mel_grid.png", "latent/chorus__proposed_knobs_trajectories.png"} <= set(refs)
    for p in refs:
        assert (d / p).is_file(), p
    assert "x&lt;i&gt;y on peq4: the latent moves nothing" in section and "x<i>y" not in section
