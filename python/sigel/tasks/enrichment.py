"""Gene-set enrichment of contexts (or of any gene grouping, at several resolutions).

One-sided hypergeometric test of every (group, gene set) pair with at least
one shared gene, Benjamini-Hochberg correction; the universe is the set of
embedded genes. Counting is one sparse product (genes x groups)' (genes x
sets), so thousands of sets and dozens of groups take well under a second.
"""
from __future__ import annotations

import gzip
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._settings import logger
from .._stats import bh as _bh
from .._validate import SigelInputError, assert_one_of, assert_positive
from ._genes import GeneMapper, embedding_frame, hard_contexts, report_unmapped, symbol_series, unit_rows


# ---------------------------------------------------------------------- GMT
def read_gmt(paths, *, min_size: int | None = None, max_size: int | None = None) -> dict[str, list[str]]:
    """Read gene sets from one or several GMT files (plain or gzip-compressed).

    Each line is ``name <TAB> description <TAB> gene1 <TAB> gene2 ...``.

    Parameters
    ----------
    paths
        A path or a list of paths (``.gmt`` or ``.gmt.gz``).
    min_size, max_size
        Optionally keep only sets with this many distinct genes (sizes in the
        file; `enrichment` filters again on sizes within the universe).

    Returns
    -------
    dict
        Set name -> list of distinct gene identifiers (file order). A name seen
        twice keeps its first occurrence (with a warning).

    Examples
    --------
    >>> import sigel, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "sets.gmt")
    >>> _ = open(p, "w").write("SET_A\\tdesc\\tg1\\tg2\\tg3\\nSET_B\\tdesc\\tg4\\tg5\\n")
    >>> sorted(sigel.tl.read_gmt(p))
    ['SET_A', 'SET_B']
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: dict[str, list[str]] = {}
    n_dup = 0
    for path in paths:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise SigelInputError(f"GMT file not found: {path!r}")
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for ln, line in enumerate(fh, 1):
                parts = line.rstrip("\n\r").split("\t")
                if len(parts) < 2 or not parts[0].strip():
                    if line.strip():
                        raise SigelInputError(f"{path}:{ln}: not a GMT line (name<TAB>description<TAB>genes...)")
                    continue
                name = parts[0].strip()
                genes = list(dict.fromkeys(g.strip() for g in parts[2:] if g.strip()))
                if min_size is not None and len(genes) < min_size:
                    continue
                if max_size is not None and len(genes) > max_size:
                    continue
                if name in out:
                    n_dup += 1
                    continue
                out[name] = genes
    if n_dup:
        logger.warning(f"read_gmt: {n_dup} duplicated set names kept their first occurrence")
    return out


def _as_gene_sets(gene_sets) -> dict[str, list[str]]:
    if isinstance(gene_sets, (str, os.PathLike)):
        return read_gmt(gene_sets)
    if isinstance(gene_sets, Mapping):
        return {str(k): [str(g) for g in np.atleast_1d(np.asarray(list(v), dtype=object))]
                for k, v in gene_sets.items()}
    if isinstance(gene_sets, (list, tuple)) and gene_sets and all(isinstance(p, (str, os.PathLike)) for p in gene_sets):
        return read_gmt(gene_sets)
    raise SigelInputError(
        "gene_sets must be a GMT path, a list of GMT paths or a dict {set name: genes}; "
        f"got {type(gene_sets).__name__}"
    )


# ----------------------------------------------------------- resolutions
def gene_clusters(model, n_clusters=(5, 10, 20), *, method: str = "kmeans", seed: int = 0) -> pd.DataFrame:
    """Cluster the embedded genes at several resolutions.

    Parameters
    ----------
    model
        A fitted `sigel.SIGEL`, an AnnData with ``varm['sigel']`` or a genes x
        D embedding DataFrame.
    n_clusters
        One or several numbers of clusters.
    method
        ``'kmeans'`` (k-means on unit-length vectors, i.e. by cosine) or
        ``'mixture'`` (the Student's t mixture of SIGEL refitted with ``K``
        components on the vectors; hard arg-max labels).
    seed
        Seed of the initialisation (same seed, same labels).

    Returns
    -------
    pandas.DataFrame
        Genes x resolutions; column ``'k<K>'`` holds labels ``'cluster_<j>'``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, sigel
    >>> emb = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 8)),
    ...                    index=[f"g{i}" for i in range(60)])
    >>> sigel.tl.gene_clusters(emb, [3, 6]).columns.tolist()
    ['k3', 'k6']
    """
    assert_one_of("method", method, ("kmeans", "mixture"))
    emb = embedding_frame(model)
    ks = [int(k) for k in np.atleast_1d(n_clusters)]
    for k in ks:
        if k < 1 or k > emb.shape[0]:
            raise SigelInputError(f"n_clusters must be in [1, {emb.shape[0]}] (the number of genes); got {k}")
    X = unit_rows(emb.to_numpy(np.float64))
    cols = {}
    for k in ks:
        if method == "kmeans":
            from sklearn.cluster import KMeans

            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1):
                lab = KMeans(n_clusters=k, n_init=4, random_state=int(seed)).fit_predict(X)
        else:
            import torch

            from ..model.mixture import StudentTMixture

            z = torch.as_tensor(emb.to_numpy(np.float32))
            old = torch.get_num_threads()
            torch.set_num_threads(1)          # tiny tensors: threads only contend
            try:
                mix = StudentTMixture(k, seed=int(seed), n_iter=30).fit(z)
            finally:
                torch.set_num_threads(old)
            lab = mix.resp_.argmax(1).cpu().numpy()
        cols[f"k{k}"] = np.array([f"cluster_{j}" for j in lab], dtype=object)
    return pd.DataFrame(cols, index=emb.index)


# ------------------------------------------------------------- enrichment

def _groupings(model, emb_index, groups, resolutions, cluster_method, seed) -> pd.DataFrame:
    """Genes x groupings table of labels (NaN = gene not in any group of that grouping)."""
    if groups is not None and resolutions is not None:
        raise SigelInputError("give either `groups` or `resolutions`, not both")
    if resolutions is not None:
        return gene_clusters(model, resolutions, method=cluster_method, seed=seed)
    if groups is None:
        lab = hard_contexts(model)
        return pd.DataFrame({"contexts": lab}).reindex(emb_index)
    if isinstance(groups, pd.DataFrame):
        df = groups.copy()
    elif isinstance(groups, pd.Series):
        df = pd.DataFrame({groups.name if groups.name is not None else "groups": groups})
    elif isinstance(groups, Mapping):
        vals = list(groups.values())
        if vals and all(isinstance(v, (list, tuple, set, np.ndarray, pd.Index)) for v in vals):
            # {group: [genes]} -> gene -> group (a gene in several groups keeps its first)
            pairs = [(str(g), str(k)) for k, v in groups.items() for g in v]
            s = pd.Series(dict(reversed(pairs)))
        else:
            s = pd.Series({str(k): v for k, v in groups.items()})
        df = pd.DataFrame({"groups": s})
    else:
        raise SigelInputError(
            "groups must be None (contexts), a Series/dict gene -> group, a dict group -> genes or a "
            f"DataFrame genes x groupings; got {type(groups).__name__}"
        )
    df.index = pd.Index(df.index.astype(str))
    return df


def _set_members(sets: dict, universe: pd.Index, mapper: GeneMapper):
    """(set, embedded id) pairs of the members (by id, symbol, then upper-case symbol), all members, n unmapped."""
    lens = np.array([len(v) for v in sets.values()])
    long = pd.DataFrame({"set": np.repeat(np.arange(len(sets)), lens),
                         "member": np.concatenate([np.asarray(v, dtype=object) for v in sets.values()])
                         if lens.sum() else np.array([], dtype=object)})
    direct = long[long["member"].isin(universe)].rename(columns={"member": "id"})
    parts = [direct]
    if mapper.symbols is not None:
        sym = mapper.symbols.dropna()
        sym_tab = pd.DataFrame({"id": sym.index.to_numpy(), "member": sym.to_numpy()})
        parts.append(long.merge(sym_tab, on="member", how="inner")[["set", "id"]])
        # case-insensitive fallback for symbols
        rest = long[~long["member"].isin(universe) & ~long["member"].isin(sym_tab["member"])]
        if len(rest):
            up = sym_tab.assign(member=sym_tab["member"].str.upper())
            parts.append(rest.assign(member=rest["member"].str.upper()).merge(up, on="member")[["set", "id"]])
    hits = pd.concat(parts, ignore_index=True).drop_duplicates()
    all_members = pd.Index(pd.unique(long["member"]))
    is_mapped = all_members.isin(universe)
    if mapper.symbols is not None and len(all_members):
        okm = pd.Index(mapper.symbols.dropna().to_numpy())
        is_mapped |= all_members.isin(okm) | all_members.str.upper().isin(okm.str.upper())
    return hits, all_members, int((~is_mapped).sum())


def _set_matrix(hits: pd.DataFrame, universe: pd.Index, n_sets: int, min_size: int, max_size: int):
    """Sparse genes x sets membership, set sizes within the universe and the sets of a testable size."""
    gidx = universe.get_indexer(hits["id"].to_numpy())
    S = sp.csr_matrix((np.ones(len(hits), dtype=np.float64), (gidx, hits["set"].to_numpy())),
                      shape=(len(universe), n_sets))
    set_size = np.asarray(S.sum(0)).ravel()
    keep_sets = np.flatnonzero((set_size >= min_size) & (set_size <= max_size))
    return S, set_size, keep_sets


def _test_grouping(res: str, lab: pd.Series, universe: pd.Index, S, set_size, set_names, fdr_scope: str,
                   label_fn):
    """Hypergeometric tests of every (group, set) pair with an overlap in one grouping: (table, number of groups)."""
    from scipy.stats import hypergeom

    N = len(universe)
    ok = lab.notna().to_numpy()
    if not ok.any():
        raise SigelInputError(f"grouping {res!r} shares no gene with the embedding")
    cats = pd.Index(pd.unique(lab[ok].astype(str)))
    code = np.full(N, -1)
    code[ok] = cats.get_indexer(lab[ok].astype(str))
    M = sp.csr_matrix((np.ones(ok.sum()), (np.flatnonzero(ok), code[ok])), shape=(N, len(cats)))
    group_size = np.asarray(M.sum(0)).ravel()
    O = (M.T @ S).tocoo()                                   # groups x sets overlaps (sparse)
    ov = O.data.astype(np.int64)
    gi, si = O.row, O.col
    p = hypergeom.sf(ov - 1, N, set_size[si], group_size[gi])
    p = np.clip(p, 0.0, 1.0)
    if fdr_scope == "all":
        q = _bh(p)
    else:
        q = np.empty_like(p)
        for g in np.unique(gi):
            sel = gi == g
            q[sel] = _bh(p[sel])
    expected = group_size[gi] * set_size[si] / N
    tab = pd.DataFrame({
        "resolution": res, "context": cats.to_numpy(dtype=object)[gi],
        "set": set_names[si], "overlap": ov, "set_size": set_size[si].astype(np.int64),
        "group_size": group_size[gi].astype(np.int64), "expected": expected, "fold": ov / expected,
        "p": p, "q": q, "_g": gi, "_s": si,
    })
    # shared genes: (gene, group) x (gene, set) join, only for tested pairs
    Sc = S.tocoo()
    gs = pd.DataFrame({"gene": Sc.row, "_s": Sc.col})
    gg = pd.DataFrame({"gene": np.flatnonzero(ok), "_g": code[ok]})
    both = gs.merge(gg, on="gene")
    both["name"] = label_fn(universe.to_numpy(dtype=object)[both["gene"].to_numpy()])
    names = both.groupby(["_g", "_s"], sort=False)["name"].agg(lambda x: ",".join(sorted(map(str, x))))
    tab["genes"] = names.reindex(pd.MultiIndex.from_arrays([tab["_g"], tab["_s"]])).to_numpy()
    return tab.drop(columns=["_g", "_s"]), int(len(cats))


def enrichment(model, gene_sets, groups=None, *, resolutions=None, cluster_method: str = "kmeans",
               gene_symbols=None, adata=None, min_size: int = 5, max_size: int = 500,
               fdr_scope: str = "group", seed: int = 0) -> pd.DataFrame:
    """Gene-set enrichment of SIGEL contexts or any gene grouping (hypergeometric + BH).

    For every group (context / cluster) and gene set sharing at least one
    gene, the one-sided hypergeometric p-value ``P(X >= overlap)`` of drawing
    the group's genes from the universe of embedded genes; q-values by
    Benjamini-Hochberg within each group (``fdr_scope='group'``, as for one
    enrichment analysis per group) or across all tests of a grouping
    (``'all'``).

    Parameters
    ----------
    model
        A fitted `sigel.SIGEL`, an AnnData with ``varm['sigel']`` (and
        ``varm['sigel_contexts']`` when ``groups`` is None) or a genes x D
        embedding DataFrame. Its genes are the universe.
    gene_sets
        GMT path(s) (``.gmt`` / ``.gmt.gz``) or a dict {set name: genes}.
        Members may be embedded ids or, with ``gene_symbols``, symbols.
    groups
        ``None``: the model's contexts (hard arg-max of the memberships).
        Otherwise a Series/dict gene -> group, a dict group -> genes, or a
        DataFrame genes x groupings (one column per resolution).
    resolutions
        Instead of ``groups``: numbers of clusters; the embedding is
        clustered at each (see `gene_clusters`) and each clustering tested.
    cluster_method
        ``'kmeans'`` or ``'mixture'`` for ``resolutions``.
    gene_symbols
        Identifier mapping: a ``var`` column name (of ``adata`` or of
        ``model`` when it is an AnnData) or a mapping {embedded id: symbol}.
        Set members are matched to embedded ids directly or through their
        symbol (every id with that symbol); reported genes are symbols.
    adata
        AnnData holding the ``gene_symbols`` column.
    min_size, max_size
        Test only sets with this many genes in the universe.
    fdr_scope
        ``'group'`` or ``'all'`` (see above).
    seed
        Seed for ``resolutions`` clustering.

    Returns
    -------
    pandas.DataFrame
        One row per tested (grouping, group, set), sorted by resolution,
        context and p: ``resolution`` (grouping name: ``'contexts'``, a
        DataFrame column or ``'k<K>'``), ``context`` (group label), ``set``,
        ``overlap``, ``set_size`` and ``group_size`` (within the universe),
        ``expected`` (overlap under independence), ``fold`` (overlap /
        expected), ``p``, ``q``, ``genes`` (comma-separated shared genes).
        ``attrs`` holds ``universe_size``, ``n_sets_tested``,
        ``n_genes_without_symbol`` (embedded genes whose id has no symbol) and
        ``n_set_genes_unmapped`` (distinct set members matching no embedded
        gene).

    Examples
    --------
    >>> import numpy as np, pandas as pd, sigel
    >>> rng = np.random.default_rng(0)
    >>> emb = pd.DataFrame(rng.normal(size=(60, 4)), index=[f"g{i}" for i in range(60)])
    >>> groups = {f"g{i}": ("a" if i < 20 else "b") for i in range(60)}
    >>> sets = {"first20": [f"g{i}" for i in range(20)], "other": [f"g{i}" for i in range(30, 45)]}
    >>> tab = sigel.tl.enrichment(emb, sets, groups)
    >>> tab.loc[tab["set"].eq("first20") & tab["context"].eq("a"), "q"].iloc[0] < 1e-6
    True
    """
    assert_one_of("fdr_scope", fdr_scope, ("group", "all"))
    assert_one_of("cluster_method", cluster_method, ("kmeans", "mixture"))
    assert_positive("min_size", min_size)
    if max_size < min_size:
        raise SigelInputError(f"max_size ({max_size}) must be >= min_size ({min_size})")
    emb = embedding_frame(model)
    universe = emb.index
    N = len(universe)
    mapper = GeneMapper(universe, symbol_series(gene_symbols, universe, adata=adata, model=model))
    sets = _as_gene_sets(gene_sets)
    if not sets:
        raise SigelInputError("no gene sets given")
    set_names = np.array(list(sets), dtype=object)
    hits, all_members, n_set_unmapped = _set_members(sets, universe, mapper)
    if mapper.symbols is not None and mapper.n_without_symbol:
        logger.warning(f"enrichment: {mapper.n_without_symbol} of {N} embedded genes have no symbol "
                       "(they stay in the universe but can only match sets by id)")
    S, set_size, keep_sets = _set_matrix(hits, universe, len(set_names), min_size, max_size)
    if len(keep_sets) == 0:
        raise SigelInputError(
            f"no gene set has between {min_size} and {max_size} genes among the {N} embedded genes "
            f"({n_set_unmapped} of {len(all_members)} set genes could not be mapped; "
            "check the identifiers or pass gene_symbols=)"
        )
    S = S[:, keep_sets].tocsc()
    set_size = set_size[keep_sets]
    set_names_k = set_names[keep_sets]
    report_unmapped("enrichment (gene-set members)", n_set_unmapped, len(all_members))

    grouping = _groupings(model, universe, groups, resolutions, cluster_method, seed)
    tables, n_groups = [], {}
    for res in grouping.columns:
        tab, n_groups[str(res)] = _test_grouping(str(res), grouping[res].reindex(universe), universe, S,
                                                 set_size, set_names_k, fdr_scope, mapper.label)
        tables.append(tab)
    out = pd.concat(tables, ignore_index=True)
    out = out.sort_values(["resolution", "context", "p", "set"], kind="stable").reset_index(drop=True)
    out.attrs.update(universe_size=int(N), n_sets_tested=int(len(keep_sets)),
                     n_genes_without_symbol=int(mapper.n_without_symbol),
                     n_set_genes_unmapped=n_set_unmapped, n_groups=n_groups)
    n_sig = out.loc[out["q"] < 0.05].groupby("resolution")["context"].nunique()
    logger.info(f"enrichment: {len(keep_sets)} sets x {len(grouping.columns)} grouping(s); groups with a set at "
                f"q < 0.05: {n_sig.to_dict()}")
    return out


def enrichment_summary(table: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per resolution: number of groups and fraction with at least one set at ``q < alpha``.

    Parameters
    ----------
    table
        The table returned by `enrichment`.
    alpha
        FDR threshold.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``resolution``: ``n_groups`` (all groups of the grouping,
        from ``table.attrs['n_groups']``; else the groups with a tested set),
        ``n_enriched``, ``frac_enriched``, ``n_sets_significant`` (distinct
        sets at ``q < alpha``).

    Examples
    --------
    >>> import numpy as np, pandas as pd, sigel
    >>> emb = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 4)), index=[f"g{i}" for i in range(40)])
    >>> tab = sigel.tl.enrichment(emb, {"s": [f"g{i}" for i in range(10)]},
    ...                           {f"g{i}": i // 10 for i in range(40)})
    >>> sigel.tl.enrichment_summary(tab)["n_enriched"].iloc[0]
    1
    """
    sig = table[table["q"] < alpha]
    g = table.groupby("resolution")["context"].nunique().rename("n_groups")
    known = table.attrs.get("n_groups") or {}
    if known:
        g = pd.Series(known, name="n_groups").rename_axis("resolution")
    e = sig.groupby("resolution")["context"].nunique().rename("n_enriched")
    s = sig.groupby("resolution")["set"].nunique().rename("n_sets_significant")
    out = pd.concat([g, e, s], axis=1).fillna(0)
    out[["n_enriched", "n_sets_significant"]] = out[["n_enriched", "n_sets_significant"]].astype(int)
    out["frac_enriched"] = out["n_enriched"] / out["n_groups"]
    return out[["n_groups", "n_enriched", "frac_enriched", "n_sets_significant"]]
