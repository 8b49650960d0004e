"""Quick screen of SIGEL variants on the synthetic tissue: detection-rate read-out, effective rank, family ARI.

The 300-gene synthetic tissue of ``tests/python/data/test_views.py`` (planted
pattern families, negative binomial counts); each variant is fitted for 24
epochs on one thread (~10-15 s each) and scored by the 5-fold ridge R² of
detection rate from the vectors, the effective rank and the adjusted Rand
index of cosine k-means clusters against the planted families.

    .venv/bin/python benchmarks/bench_synthetic.py default standardize:input_norm=standardize \\
        rank:input_norm=rank den:denoise=true
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import sigel  # noqa: E402
from bench_embeddings import parse_variant  # noqa: E402
from sigel.model.diagnostics import detection_rate, effective_rank, ridge_cv_r2  # noqa: E402

DATA = dict(n_genes=300, shape=(24, 24), depth=300.0, dispersion=3.0, fold_change=6.0, seed=0)


def main(argv=None):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    torch.set_num_threads(1)
    adata = sigel.datasets.synthetic_tissue(**DATA)
    fam = adata.var["family"].astype(str)
    for spec in (argv if argv is not None else sys.argv[1:]) or ["default"]:
        name, kw = parse_variant(spec)
        t = time.perf_counter()
        m = sigel.SIGEL(n_contexts=6, epochs=24, **kw).fit(adata, progress=False, n_threads=1, seed=0)
        E = m.embeddings_
        det = pd.Series(detection_rate(m.images_), index=m.images_.genes)
        r2 = ridge_cv_r2(E.loc[det.index].to_numpy(), det.to_numpy())
        keep = [g for g in E.index if fam[g] != "none"]
        U = E.loc[keep].to_numpy()
        U = U - U.mean(0)
        U /= np.linalg.norm(U, axis=1, keepdims=True)
        lab = KMeans(fam[keep].nunique(), n_init=10, random_state=0).fit_predict(U)
        print(f"{name}: detection R2 {r2:.3f}  effective rank {float(effective_rank(torch.tensor(E.to_numpy()))):.1f}  "
              f"family ARI {adjusted_rand_score(fam[keep], lab):.3f}  ({time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
