"""Sufficient statistics of the MAP-EM M-step, for sharded (data-parallel) mixture fits.

The M-step of :class:`~sigel.model.mixture.StudentTMixture` only needs a few
per-component weighted sums over the genes. With the genes split across
processes (ranks), each rank computes these sums on its own rows, one
all-reduce adds them up, and every rank then applies the same closed-form
update, so all ranks hold the same mixture without ever exchanging the
embeddings themselves. With responsibilities ``r_ik``, latent scale weights
``u_ik`` and a common shift ``c`` (the global mean of ``z``, for numerical
stability) the statistics are

* ``n_k   = sum_i r_ik``                       (mixing weights, variance counts)
* ``w_k   = sum_i r_ik u_ik``                  (mean denominators)
* ``wz_k  = sum_i r_ik u_ik (z_i - c)``        (``K x D``, means)
* ``wzz_k = sum_i r_ik u_ik (z_i - c)^2``      (``K x D``, diagonal scales)
* ``t_k   = sum_i r_ik (log u_ik - u_ik)``     (degrees of freedom ``nu``)

and the data-driven inverse-gamma scale needs the global per-dimension
variance (``sum_i 1`` and ``sum_i z_i``, then ``sum_i (z_i - c)^2``).

:func:`m_step_from_stats` reproduces ``StudentTMixture._m_step`` exactly (same
formulas and guards); :func:`fit_sharded` reproduces
:meth:`StudentTMixture.fit <sigel.model.mixture.StudentTMixture.fit>` with the
sums all-reduced. Results equal a one-process fit on the concatenated rows up
to floating-point summation order (the sums are accumulated in float64
before the reduction, so the difference is at the level of float32 rounding).

The ``all_reduce`` argument is any callable that sums a tensor over the
ranks and returns the result (identity for one process); this module does
not import :mod:`torch.distributed` itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .mixture import MixtureParams, StudentTMixture, _solve_nu, _wide

__all__ = ["MixtureStats", "global_moments", "sufficient_stats", "m_step_from_stats", "fit_sharded"]

AllReduce = Callable[[Tensor], Tensor]


def _identity(t: Tensor) -> Tensor:
    return t


@dataclass
class MixtureStats:
    """Per-component weighted sums of one shard (or of all shards after a reduction).

    Attributes
    ----------
    n : Tensor
        ``(K,)`` ``sum_i r_ik``.
    w : Tensor
        ``(K,)`` ``sum_i r_ik u_ik``.
    wz : Tensor
        ``(K, D)`` ``sum_i r_ik u_ik (z_i - c)``.
    wzz : Tensor
        ``(K, D)`` ``sum_i r_ik u_ik (z_i - c)^2``.
    nu_term : Tensor
        ``(K,)`` ``sum_i r_ik (log u_ik - u_ik)``.
    """

    n: Tensor
    w: Tensor
    wz: Tensor
    wzz: Tensor
    nu_term: Tensor

    def flatten(self) -> Tensor:
        """All sums in one float64 vector (one all-reduce instead of five)."""
        return torch.cat([self.n.double().ravel(), self.w.double().ravel(), self.wz.double().ravel(),
                          self.wzz.double().ravel(), self.nu_term.double().ravel()])

    @classmethod
    def unflatten(cls, flat: Tensor, k: int, d: int, dtype: torch.dtype) -> "MixtureStats":
        """Inverse of :meth:`flatten`, cast back to ``dtype``."""
        sizes = [k, k, k * d, k * d, k]
        n, w, wz, wzz, t = torch.split(flat, sizes)
        return cls(n=n.to(dtype), w=w.to(dtype), wz=wz.reshape(k, d).to(dtype), wzz=wzz.reshape(k, d).to(dtype),
                   nu_term=t.to(dtype))

    def __add__(self, other: "MixtureStats") -> "MixtureStats":
        return MixtureStats(self.n + other.n, self.w + other.w, self.wz + other.wz, self.wzz + other.wzz,
                            self.nu_term + other.nu_term)


def global_moments(z: Tensor, all_reduce: AllReduce = _identity) -> tuple[int, Tensor, Tensor]:
    """Row count, mean and per-dimension (biased) variance of the rows of every shard.

    Parameters
    ----------
    z : Tensor
        ``(n_local, D)`` this shard's rows.
    all_reduce : callable
        Sums a tensor over the ranks.

    Returns
    -------
    n : int
        Total number of rows.
    mean : Tensor
        ``(D,)`` global mean (``z``'s dtype).
    var : Tensor
        ``(D,)`` global ``mean((z - mean)^2)`` (two-pass, ``z``'s dtype).
    """
    z = z.detach()
    head = torch.cat([z.new_tensor([z.shape[0]], dtype=torch.float64), z.double().sum(0)])
    head = all_reduce(head)
    n = int(round(float(head[0])))
    mean = (head[1:] / max(n, 1)).to(z.dtype)
    ss = all_reduce(((z - mean).double() ** 2).sum(0))
    var = (ss / max(n, 1)).to(z.dtype)
    return n, mean, var


def sufficient_stats(z: Tensor, resp: Tensor, u: Tensor, center: Tensor, *, with_nu: bool = True) -> MixtureStats:
    """The M-step sums of one shard.

    Parameters
    ----------
    z : Tensor
        ``(n, D)`` rows of this shard.
    resp : Tensor
        ``(n, K)`` memberships (probabilities).
    u : Tensor
        ``(n, K)`` latent scale weights (ones for the Gaussian kind).
    center : Tensor
        ``(D,)`` common shift ``c`` (the same on every rank).
    with_nu : bool
        Compute the ``nu`` statistic (zeros otherwise).

    Returns
    -------
    MixtureStats
    """
    fin = torch.finfo(z.dtype)
    zc = z - center
    w = resp * u
    stats = MixtureStats(n=resp.sum(0), w=w.sum(0), wz=w.T @ zc, wzz=w.T @ (zc * zc),
                         nu_term=(resp * (u.clamp_min(fin.tiny).log() - u)).sum(0) if with_nu
                         else resp.new_zeros(resp.shape[1]))
    return stats


def m_step_from_stats(mixture: StudentTMixture, stats: MixtureStats, center: Tensor, prior_scale: float,
                      dim: int, update_nu: bool = True) -> MixtureParams:
    """The MAP M-step of :class:`StudentTMixture` from (reduced) sufficient statistics.

    Same formulas and guards as the one-process M-step: Dirichlet-smoothed
    weights, inverse-gamma-smoothed diagonal scales floored at ``min_var``,
    ``nu`` by bisection; components without mass keep their mean and ``nu``.
    Sets and returns ``mixture.params``.

    Parameters
    ----------
    mixture : StudentTMixture
        The mixture (its current ``params`` are the "old" ones).
    stats : MixtureStats
        Sums over all genes.
    center : Tensor
        ``(D,)`` the shift used for ``stats``.
    prior_scale : float
        Inverse-gamma scale ``b``.
    dim : int
        Dimension ``D``.
    update_nu : bool
        Update ``nu`` (Student-t kind only).

    Returns
    -------
    MixtureParams
    """
    old = mixture.params
    a, b = mixture.var_prior_shape, float(prior_scale)
    dtype = stats.wz.dtype
    fin = torch.finfo(dtype)
    nk, wk, wz = stats.n, stats.w, stats.wz
    pi = (nk + mixture.dirichlet_alpha - 1.0).clamp_min(fin.tiny)
    log_pi = pi.log() - pi.sum().log()
    mu = torch.where((wk > fin.eps)[:, None], wz / wk.clamp_min(fin.tiny)[:, None] + center, old.mu)
    mc = mu - center
    s = (stats.wzz - 2.0 * mc * wz + mc * mc * wk[:, None]).clamp_min(0.0)
    var = ((s + 2.0 * b) / (nk[:, None] + 2.0 * (a + 1.0))).clamp_min(mixture.min_var)
    nu = old.nu
    if mixture.kind == "student_t" and update_nu:
        wide = _wide(nk.device)
        mean_term = (stats.nu_term / nk.clamp_min(fin.tiny)).to(wide)
        half = (old.nu.to(wide) + dim) / 2
        cst = 1.0 + mean_term + torch.digamma(half) - torch.log(half)
        nu_new = _solve_nu(cst, *mixture.nu_bounds).to(dtype)
        nu = torch.where(nk > fin.eps, nu_new, old.nu)
    mixture.params = MixtureParams(log_pi=log_pi, mu=mu, var=var, nu=nu)
    return mixture.params


def fit_sharded(mixture: StudentTMixture, z: Tensor, n_iter: int | None = None, *,
                all_reduce: AllReduce = _identity) -> StudentTMixture:
    """MAP-EM on genes split across ranks: :meth:`StudentTMixture.fit` with all-reduced sums.

    Every rank calls this with its own rows and the same (warm-start)
    ``mixture.params``; each E-step is local, each M-step uses the summed
    statistics, and the objective used for the stopping rule is the summed
    log-likelihood plus the log prior, so every rank takes the same number of
    iterations and ends with the same parameters.

    Parameters
    ----------
    mixture : StudentTMixture
        Must already have parameters (initialise with
        :meth:`~StudentTMixture.init_kmeanspp` on the gathered data, or load
        them); they must be identical on every rank.
    z : Tensor
        ``(n_local, D)`` this rank's rows.
    n_iter : int, optional
        Maximum EM iterations (default ``mixture.n_iter``).
    all_reduce : callable
        Sums a tensor over the ranks (identity: a one-process fit).

    Returns
    -------
    StudentTMixture
        ``mixture`` with ``params``, ``history_`` (global log posterior),
        ``converged_``, ``n_iter_`` and ``resp_`` (memberships of *this
        rank's* rows) set.
    """
    if mixture.params is None:
        raise RuntimeError("fit_sharded needs initial parameters (init_kmeanspp on the gathered data first)")
    z = z.detach()
    n_iter = mixture.n_iter if n_iter is None else int(n_iter)
    dim = z.shape[1]
    if mixture.params.mu.shape != (mixture.n_components, dim):
        raise ValueError(f"mixture parameters have shape {tuple(mixture.params.mu.shape)}, data has D={dim}")
    with torch.no_grad():
        n, center, var = global_moments(z, all_reduce)
        if mixture.var_prior_scale is None:
            v = float(var.mean()) if n > 1 else 0.0
            mixture.var_prior_scale_ = (mixture.var_prior_shape + 1.0) * 0.1 * v
        b = mixture._prior_scale(z)
        mixture._check_params(z)

        def objective(ll: Tensor) -> float:
            tot = all_reduce(ll.double().sum().reshape(1))
            return float(tot[0]) + float(mixture._log_prior(mixture.params, b))

        log_resp, u, ll = mixture.e_step(z)
        obj = objective(ll)
        history, converged, it = [obj], False, 0
        k = mixture.n_components
        for it in range(1, n_iter + 1):
            local = sufficient_stats(z, log_resp.exp(), u, center, with_nu=mixture.kind == "student_t")
            total = MixtureStats.unflatten(all_reduce(local.flatten()), k, dim, z.dtype)
            m_step_from_stats(mixture, total, center, b, dim, update_nu=True)
            log_resp, u, ll = mixture.e_step(z)
            new = objective(ll)
            history.append(new)
            if abs(new - obj) <= mixture.tol * max(abs(obj), 1.0):
                converged = True
                break
            obj = new
    mixture.history_, mixture.converged_, mixture.n_iter_ = history, converged, it
    mixture.resp_ = log_resp.exp()
    return mixture

