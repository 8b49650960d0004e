"""The command line (``sigel demo``, ``sigel train``) and the HTML report, end to end.

Every run is tiny: the demo on the 30 olfactory bulb genes with the highest
Moran's I, ``sigel train`` on a 30-gene synthetic tissue, two epochs and two
contexts, one thread. The command is called in-process (``sigel.cli.main``);
the checks read back what it wrote: the output folder's files, the tables'
genes and values, the saved model and the report's sections and figures.
"""
from __future__ import annotations

import base64
import html
import json
import re
import struct

import numpy as np
import pandas as pd
import pytest

import sigel
from sigel import SIGEL

FAST = ["--epochs", "2", "--n-contexts", "2", "--quiet", "--threads", "1"]
OUTPUTS = {"embeddings.tsv", "contexts.tsv", "memberships.tsv", "history.json", "model", "report.html",
           "sigel-outputs.json"}
DEMO_GENES = 30
REPORT_SECTIONS = [
    "Largest contexts",
    "Example gene images (most confident gene of the largest contexts)",
    "Context maps: membership-weighted mean image of each context's genes",
    "Gene embedding layout",
    "Training curves",
]


def run(args, capsys):
    """``sigel <args>`` in this process: (exit status, stdout, stderr)."""
    from sigel.cli import main

    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def tissue(n_genes=30, seed=0):
    return sigel.datasets.synthetic_tissue(n_genes, n_families=2, shape=(10, 10), seed=seed)


def read_tables(out):
    emb = pd.read_csv(out / "embeddings.tsv", sep="\t", index_col="gene")
    ctx = pd.read_csv(out / "contexts.tsv", sep="\t", index_col="gene")
    mem = pd.read_csv(out / "memberships.tsv", sep="\t", index_col="gene")
    # strict JSON (no bare NaN): what jq or a browser would accept
    hist = json.loads((out / "history.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    return emb, ctx, mem, hist


def png_size(data: bytes) -> tuple:
    """(width, height) of a PNG, read from its header."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def parse_report(text: str) -> dict:
    """The parts of a report page: title, summary table, context table, sections and their figures."""
    title = re.search(r"<title>(.*?)</title>", text, re.S).group(1)
    h1 = re.search(r"<h1>(.*?)</h1>", text, re.S).group(1)
    summary_table = re.search(r"</p>\s*<table>(.*?)</table>", text, re.S).group(1)
    summary = {html.unescape(k): html.unescape(v) for k, v in
               re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", summary_table)}
    ctx_table = re.search(r"<h2>Largest contexts</h2><table>(.*?)</table>", text, re.S).group(1)
    ctx_rows = [tuple(html.unescape(c) for c in row)
                for row in re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", ctx_table)]
    sections = [html.unescape(h) for h in re.findall(r"<h2>(.*?)</h2>", text)]
    figures = {html.unescape(h): base64.b64decode(b)
               for h, b in re.findall(r"<h2>([^<]*)</h2><img src='data:image/png;base64,([A-Za-z0-9+/=]+)'/>", text)}
    return dict(title=title, h1=h1, summary=summary, ctx_rows=ctx_rows, sections=sections, figures=figures)


def check_outputs(out, genes, *, n_contexts=2, epochs=2, title=None):
    """What every successful run writes, checked against each other and the saved model."""
    assert {p.name for p in out.iterdir()} == OUTPUTS
    marker = json.loads((out / "sigel-outputs.json").read_text())
    assert marker["format"] == "sigel-outputs" and set(marker["files"]) == OUTPUTS - {"sigel-outputs.json"}

    emb, ctx, mem, hist = read_tables(out)
    assert set(emb.index) == set(genes) and len(emb) == len(genes)
    assert ctx.index.equals(emb.index) and mem.index.equals(emb.index)
    assert list(emb.columns) == [f"dim_{i}" for i in range(emb.shape[1])]
    assert np.isfinite(emb.to_numpy()).all()
    # soft memberships: K columns, rows sum to one; the hard context is their argmax, its confidence their max
    assert list(mem.columns) == [f"context_{k}" for k in range(n_contexts)]
    M = mem.to_numpy()
    assert (M >= 0).all() and np.allclose(M.sum(1), 1.0, atol=1e-5)
    assert list(ctx.columns) == ["context", "confidence"]
    assert np.array_equal(ctx["context"].to_numpy(), M.argmax(1))
    assert np.allclose(ctx["confidence"].to_numpy(), M.max(1), atol=1e-6)
    # one history record per epoch
    assert [r["epoch"] for r in hist] == list(range(1, epochs + 1))
    assert all(np.isfinite(r["loss"]) for r in hist)
    assert {r["phase"] for r in hist} <= {"pretrain", "refine"}

    # the saved model holds the same vectors and memberships as the tables
    model = SIGEL.load(out / "model")
    assert model.is_trained
    np.testing.assert_allclose(model.embeddings_.loc[emb.index].to_numpy(), emb.to_numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.memberships_.loc[mem.index].to_numpy(), M, rtol=1e-6, atol=1e-12)
    assert len(model.history_) == epochs

    # the report: title, summary, the table of the largest contexts, four figures
    rep = parse_report((out / "report.html").read_text(encoding="utf-8"))
    if title is not None:
        assert html.unescape(rep["title"]) == title and html.unescape(rep["h1"]) == title
    s = rep["summary"]
    assert s["genes embedded"] == f"{len(genes):,}"
    assert s["embedding dimension"] == str(emb.shape[1])
    assert s["contexts"] == str(n_contexts)
    assert s["epochs"] == str(epochs)
    assert re.fullmatch(r"\d+×\d+ px, [\d,]+ in tissue \(\w+\)", s["image"])
    assert s["model"] == repr(model)
    assert rep["sections"] == REPORT_SECTIONS
    assert list(rep["figures"]) == REPORT_SECTIONS[1:]
    for name, png in rep["figures"].items():
        w, h = png_size(png)
        assert w > 100 and h > 100, name
    sizes = ctx["context"].value_counts()
    assert [(int(k), int(n)) for k, n, _ in rep["ctx_rows"]] == list(sizes.items())
    for k, _, shown in rep["ctx_rows"]:
        members = ctx[ctx["context"] == int(k)]
        listed = shown.split(", ")
        assert 1 <= len(listed) <= 8 and set(listed) <= set(members.index)
        # the most confident genes of the context, in falling order of confidence
        assert np.all(np.diff(members.loc[listed, "confidence"].to_numpy()) <= 0)
        assert members.loc[listed[0], "confidence"] == members["confidence"].max()
    return emb, ctx, mem, model


def check_stdout(stdout, out, model):
    assert repr(model).splitlines()[0] in stdout
    assert re.search(r"finished in \d+ s; wrote:", stdout)
    for name in OUTPUTS - {"sigel-outputs.json"}:
        assert f"  {out / name}\n" in stdout


# ------------------------------------------------------------------ sigel demo
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One small ``sigel demo`` run shared by the demo checks: (folder, stdout, stderr)."""
    from sigel.cli import main

    out = tmp_path_factory.mktemp("demo") / "demo_out"
    import contextlib
    import io

    so, se = io.StringIO(), io.StringIO()  # (a module fixture cannot use capsys)
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        rc = main([*"demo --out".split(), str(out), "--n-genes", str(DEMO_GENES), *FAST])
    assert rc == 0, se.getvalue()
    return out, so.getvalue(), se.getvalue()


def test_demo_embeds_the_top_morans_i_genes_of_the_olfactory_bulb(demo):
    out, stdout, _ = demo
    mob = sigel.datasets.mouse_olfactory_bulb()
    top = sigel.tl.morans_i(mob).index[:DEMO_GENES]
    emb, ctx, mem, model = check_outputs(out, top, title="sigel demo: mouse olfactory bulb (Ståhl et al. 2016)")
    assert emb.shape[1] == model.embed_dim
    assert model.image_options_["counts"] is True and model.image_options_["spatial_key"] == "spatial"
    check_stdout(stdout, out, model)
    # no temporary or checkpoint folder is left beside the output
    assert sorted(p.name for p in out.parent.iterdir()) == ["demo_out"]


def test_demo_reruns_into_its_own_folder_and_refuses_a_foreign_one(demo, tmp_path, capsys, monkeypatch):
    out, _, _ = demo
    first = (out / "embeddings.tsv").read_bytes()
    again = tmp_path / "again"
    again.mkdir()
    for p in out.iterdir():  # a copy of the first run's outputs
        if p.is_dir():
            (again / p.name).mkdir()
            for f in p.iterdir():
                (again / p.name / f.name).write_bytes(f.read_bytes())
        else:
            (again / p.name).write_bytes(p.read_bytes())
    # the demo replaces its own earlier results without --overwrite; another seed gives other vectors
    rc, stdout, err = run(["demo", "--out", again, "--n-genes", DEMO_GENES, *FAST, "--seed", "1"], capsys)
    assert rc == 0, err
    emb, _, _, _ = check_outputs(again, sigel.tl.morans_i(sigel.datasets.mouse_olfactory_bulb()).index[:DEMO_GENES])
    assert (again / "embeddings.tsv").read_bytes() != first
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # the earlier results were removed, not kept aside

    # ... but never a folder holding files sigel did not write: refused before any training
    calls = []
    monkeypatch.setattr(SIGEL, "fit", lambda *a, **k: calls.append(1))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    rc, stdout, err = run(["demo", "--out", mine, "--n-genes", DEMO_GENES, *FAST], capsys)
    assert rc == 2 and err.startswith("sigel: error: ") and "did not write" in err and "Traceback" not in err
    assert calls == [] and [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_demo_help_names_its_options_and_default_gene_count(capsys):
    from sigel.cli import main

    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--out", "--overwrite", "--epochs", "--n-contexts", "--seed", "--device", "--threads", "--n-genes",
                "--checkpoint-every", "--checkpoint-dir", "--resume", "--quiet"):
        assert opt in text, opt
    assert "1500" in text  # the demo embeds 1500 genes unless told otherwise
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "train" in text and "demo" in text


# ----------------------------------------------------------------- sigel train
@pytest.fixture()
def h5ad(tmp_path):
    src = tmp_path / "in.h5ad"
    tissue().write_h5ad(src)
    return src


def test_train_embeds_every_gene_of_the_input(tmp_path, capsys, h5ad):
    out = tmp_path / "out"
    rc, stdout, err = run(["train", h5ad, "--out", out, *FAST], capsys)
    assert rc == 0, err
    genes = tissue().var_names
    emb, ctx, mem, model = check_outputs(out, genes, title="sigel: in.h5ad")
    check_stdout(stdout, out, model)
    assert model.image_options_["layer"] is None and model.image_options_["library_size_key"] is None
    # the input file is left alone and nothing else appears beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "out"]


def test_train_is_reproducible_for_a_seed(tmp_path, capsys, h5ad):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(["train", h5ad, "--out", a, *FAST, "--seed", "3"], capsys)[0] == 0
    assert run(["train", h5ad, "--out", b, *FAST, "--seed", "3"], capsys)[0] == 0
    for name in ("embeddings.tsv", "contexts.tsv", "memberships.tsv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_train_layer_library_size_and_n_genes(tmp_path, capsys):
    """--layer and --library-size-key reach the fit and the Moran's I ranking behind --n-genes."""
    ad = tissue()
    ad.layers["counts"] = ad.X.copy()
    # library sizes unrelated to the spots' totals, so that they change the Moran's I ranking
    ad.obs["umi"] = np.random.default_rng(0).uniform(200, 5000, ad.n_obs)
    ad.X = ad.X.toarray() * 0.5 + 0.25  # not counts: training on X would be refused
    src = tmp_path / "in.h5ad"
    ad.write_h5ad(src)
    rc, _, err = run(["train", src, "--out", tmp_path / "x", *FAST], capsys)
    assert rc == 2 and "counts" in err

    out = tmp_path / "out"
    rc, _, err = run(["train", src, "--out", out, "--layer", "counts", "--library-size-key", "umi",
                      "--n-genes", "12", *FAST], capsys)
    assert rc == 0, err
    top = sigel.tl.morans_i(ad, layer="counts", library_size_key="umi").index[:12]
    _, _, _, model = check_outputs(out, top)
    assert model.image_options_["layer"] == "counts" and model.image_options_["library_size_key"] == "umi"


@pytest.mark.parametrize("argv,pattern", [
    (["train", "{missing}", "--out", "{out}"], "input file not found"),
    (["train", "{h5ad}", "--out", "{out}", "--n-genes", "0"], "--n-genes must be at least 1; got 0"),
    (["train", "{h5ad}", "--out", "{out}", "--n-contexts", "0"], "--n-contexts must be at least 1; got 0"),
    (["train", "{h5ad}", "--out", "{out}", "--checkpoint-every", "0"], "--checkpoint-every must be at least 1"),
    (["train", "{h5ad}", "--out", "{out}", "--seed", "-1"], r"--seed must be in \[0, 2\*\*32\)"),
    (["demo", "--out", "{out}", "--epochs", "0"], "--epochs must be at least 1; got 0"),
    (["demo", "--out", "{out}", "--threads", "0"], "--threads must be at least 1; got 0"),
])
def test_bad_arguments_exit_2_with_one_line_before_training(tmp_path, capsys, monkeypatch, h5ad, argv, pattern):
    calls = []
    monkeypatch.setattr(SIGEL, "fit", lambda *a, **k: calls.append(1))
    paths = dict(missing=tmp_path / "nope.h5ad", out=tmp_path / "out", h5ad=h5ad)
    rc, stdout, err = run([a.format(**paths) for a in argv], capsys)
    assert rc == 2
    assert err.startswith("sigel: error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(pattern, err), err
    assert calls == [] and not (tmp_path / "out").exists() and stdout == ""


def test_usage_errors_exit_2_from_argparse(tmp_path, capsys, h5ad):
    from sigel.cli import main

    for argv in (["train", str(h5ad)], [], ["fit"], ["train", str(h5ad), "--out", str(tmp_path / "o"), "--epochs",
                                                     "two"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, argv
        assert "usage: sigel" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def fitted():
    ad = sigel.datasets.synthetic_tissue(40, n_families=3, shape=(10, 10), seed=2)
    return SIGEL(epochs=3, pretrain_epochs=1, width=16, depth=1, n_heads=2, decoder_width=16, embed_dim=8,
                 batch_size=32, n_contexts=3).fit(ad, progress=False, n_threads=1, seed=0)


def test_report_sections_figures_and_escaped_title(fitted, tmp_path, monkeypatch):
    import sigel.pl as pl
    from sigel.report import write_report

    shown = []
    orig = pl.gene_images

    def spy(images, genes=None, **kw):  # records the example genes, draws as before
        shown.append((list(genes), list(kw.get("titles") or [])))
        return orig(images, genes, **kw)

    monkeypatch.setattr(pl, "gene_images", spy)
    title = 'run <7> & "best"'
    path = write_report(fitted, tmp_path / "new" / "dir" / "r.html", title=title, n_example_genes=2)
    assert path == tmp_path / "new" / "dir" / "r.html" and path.is_file()
    text = path.read_text(encoding="utf-8")
    assert "<7>" not in text and html.escape(title) in text
    rep = parse_report(text)
    assert html.unescape(rep["title"]) == title and html.unescape(rep["h1"]) == title
    assert rep["sections"] == REPORT_SECTIONS and list(rep["figures"]) == REPORT_SECTIONS[1:]
    for png in rep["figures"].values():
        png_size(png)

    # example genes: the most confident gene of each of the largest contexts, at most n_example_genes
    ctx = fitted.contexts_
    sizes = ctx["context"].value_counts()
    want = [ctx[ctx["context"] == k]["confidence"].idxmax() for k in sizes.index][:2]
    assert len(shown) == 1 and shown[0][0] == want
    assert shown[0][1] == [f"{g} (ctx {ctx.loc[g, 'context']})" for g in want]

    s = rep["summary"]
    im = fitted.images_
    assert s["genes embedded"] == str(len(fitted.embeddings_)) and s["embedding dimension"] == "8"
    assert s["contexts"] == "3" and s["epochs"] == str(len(fitted.history_))
    assert s["image"].startswith(f"{im.height}×{im.width} px, {int(im.mask.sum()):,} in tissue")
    assert [(int(k), int(n)) for k, n, _ in rep["ctx_rows"]] == list(sizes.head(15).items())


def test_report_shows_every_example_gene_it_can(fitted, tmp_path, monkeypatch):
    """More example genes asked for than there are contexts: one per non-empty context."""
    import sigel.pl as pl
    from sigel.report import write_report

    shown = []
    orig = pl.gene_images
    monkeypatch.setattr(pl, "gene_images", lambda images, genes=None, **kw: (shown.append(list(genes)),
                                                                            orig(images, genes, **kw))[1])
    write_report(fitted, tmp_path / "r.html")
    n_used = fitted.contexts_["context"].nunique()
    assert len(shown[0]) == n_used and len(set(shown[0])) == n_used
    assert parse_report((tmp_path / "r.html").read_text(encoding="utf-8"))["title"] == "sigel report"


def test_report_of_a_loaded_model_says_what_it_needs(fitted, tmp_path):
    """A model loaded from disk keeps no images: a clear error naming the fix, and the fix works."""
    from sigel._validate import SigelInputError
    from sigel.report import write_report

    fitted.save(tmp_path / "m")
    loaded = SIGEL.load(tmp_path / "m")
    with pytest.raises(SigelInputError, match="images_for"):
        write_report(loaded, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    loaded.images_ = fitted.images_
    assert write_report(loaded, tmp_path / "r.html").read_text().count("<img") >= 4
    with pytest.raises(SigelInputError, match="fitted"):
        write_report(SIGEL(), tmp_path / "r2.html")
