"""Module II: Student's t mixture with diagonal scales, fitted by MAP-EM.

Everything is plain torch on the input's device and dtype, vectorised over
genes x components x dimensions (O(G K D) time and O(G K) memory per
iteration; no G x G and no G x K x D tensors).

Model and objective
-------------------
``p(z) = sum_k pi_k t_D(z | mu_k, diag(var_k), nu_k)`` with the MAP objective

    L = sum_i log p(z_i) + (alpha - 1) sum_k log pi_k
        + sum_{k,d} [-(a + 1) log var_kd - b / var_kd]      (+ const)

i.e. a symmetric Dirichlet(alpha) prior on ``pi`` and an inverse-gamma(a, b)
prior on every diagonal scale; ``mu`` and ``nu`` have flat priors (``nu`` is
box-constrained to ``nu_bounds``).

EM (the t as a Gaussian scale mixture, ``z | u ~ N(mu, var / u)``,
``u ~ Gamma(nu/2, nu/2)``): the E-step gives responsibilities ``r_ik`` and
``u_ik = E[u | z_i, k] = (nu_k + D) / (nu_k + delta_ik)``.  The expected
complete-data log posterior separates into (pi), (mu, var) and (nu) parts:

* ``pi_k  = (N_k + alpha - 1) / (N + K (alpha - 1))``;
* ``mu_k  = sum_i r u z / sum_i r u``;
* ``var_kd``: maximise ``-(N_k/2 + a + 1) log s - (S_kd/2 + b) / s`` with
  ``S_kd = sum_i r u (z - mu)^2``; setting the derivative to zero gives
  ``var_kd = (S_kd + 2 b) / (N_k + 2 (a + 1))`` (floored at ``min_var``, which
  is the constrained maximiser as the function is unimodal in ``s``);
* ``nu_k``: the root of ``log(nu/2) - psi(nu/2) + 1 + (1/N_k) sum_i r (log u - u)
  + psi((nu_old + D)/2) - log((nu_old + D)/2) = 0`` (the left side decreases
  in ``nu``), found by vectorised bisection in ``log nu`` and clipped to the
  bounds, which is the constrained maximiser of a concave function.

Each step maximises its block of the EM surrogate exactly, so the objective
never decreases (up to floating-point rounding).  Components whose
responsibility mass vanishes keep their mean and ``nu`` (no NaN, still
monotone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MixtureParams", "StudentTMixture"]

_FIELDS = ("log_pi", "mu", "var", "nu")
_KINDS = ("student_t", "gaussian")


@dataclass
class MixtureParams:
    """Parameters of a diagonal Student-t (or Gaussian) mixture.

    Attributes
    ----------
    log_pi : Tensor
        ``(K,)`` log mixing weights.
    mu : Tensor
        ``(K, D)`` component locations.
    var : Tensor
        ``(K, D)`` diagonal scales ``sigma^2``.
    nu : Tensor
        ``(K,)`` degrees of freedom (``+inf`` for the Gaussian kind).
    """

    log_pi: Tensor
    mu: Tensor
    var: Tensor
    nu: Tensor

    @property
    def n_components(self) -> int:
        """Number of components ``K``."""
        return int(self.mu.shape[0])

    def to(self, *args, **kwargs) -> "MixtureParams":
        """Move/cast every tensor; arguments as for :meth:`torch.Tensor.to`."""
        return MixtureParams(*(getattr(self, f).to(*args, **kwargs) for f in _FIELDS))

    def state_dict(self) -> dict[str, Tensor]:
        """Plain, contiguous tensors keyed by field name (safetensors-ready)."""
        return {f: getattr(self, f).detach().contiguous().clone() for f in _FIELDS}

    @classmethod
    def from_state_dict(cls, d) -> "MixtureParams":
        """Rebuild parameters from :meth:`state_dict` output."""
        return cls(**{f: torch.as_tensor(d[f]) for f in _FIELDS})


def _wide(device: torch.device) -> torch.dtype:
    """Accumulation dtype for the small K-sized pieces (MPS has no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _sq_mahalanobis(z: Tensor, mu: Tensor, var: Tensor) -> Tensor:
    """``delta_ik = sum_d (z_id - mu_kd)^2 / var_kd`` as ``(G, K)`` via matmuls."""
    c = mu.mean(0)  # common shift: delta is invariant, cancellation is smaller
    zc, mc, prec = z - c, mu - c, var.reciprocal()
    d = (zc * zc) @ prec.T - 2.0 * (zc @ (mc * prec).T) + (mc * mc * prec).sum(1)
    return d.clamp_min(0.0)


def _t_log_norm(nu: Tensor, dim: int) -> Tensor:
    """Log normaliser of the D-variate t without the scale term, in float64."""
    nu = nu.to(_wide(nu.device))
    return torch.lgamma((nu + dim) / 2) - torch.lgamma(nu / 2) - dim / 2 * torch.log(nu * math.pi)


def _solve_nu(c: Tensor, lo: float, hi: float, n_steps: int = 50) -> Tensor:
    """Vectorised bisection for ``log(nu/2) - psi(nu/2) + c = 0`` on ``[lo, hi]``."""
    a = torch.full_like(c, math.log(lo))
    b = torch.full_like(c, math.log(hi))
    for _ in range(n_steps):
        m = 0.5 * (a + b)
        half = 0.5 * m.exp()
        above = (torch.log(half) - torch.digamma(half) + c) > 0  # root lies above m
        a = torch.where(above, m, a)
        b = torch.where(above, b, m)
    return (0.5 * (a + b)).exp()


class StudentTMixture:
    """Diagonal Student-t mixture fitted by MAP-EM (Module II of SIGEL).

    Parameters
    ----------
    n_components : int
        Number of components (contexts) ``K``.
    kind : {"student_t", "gaussian"}
        ``"gaussian"`` is the ablation with ``u == 1`` and ``nu = inf``.
    dirichlet_alpha : float, default 2.0
        Symmetric Dirichlet concentration on ``pi`` (must be >= 1); the default
        adds one pseudo-count per component, which keeps empty components at
        a small positive weight and counters collapse.
    var_prior_shape : float, default 1.0
        Inverse-gamma shape ``a`` (>= 0); the prior counts as ``2 (a + 1)``
        pseudo-observations in the variance update.
    var_prior_scale : float or None, default None
        Inverse-gamma scale ``b``.  ``None`` is data-driven, recomputed at each
        :meth:`fit`: ``b = (a + 1) * 0.1 * mean_d Var(z_d)``, so the prior mode
        of every ``var_kd`` is 10 % of the average per-dimension data variance.
    nu_init : float, default 5.0
        Initial degrees of freedom.
    nu_bounds : tuple of float, default (2.0, 200.0)
        Box constraint for ``nu``.
    min_var : float, default 1e-4
        Floor on every ``var_kd``.
    n_iter : int, default 20
        Default maximum number of EM iterations per :meth:`fit`.
    tol : float, default 1e-5
        Stop when the relative change of the log posterior is below ``tol``.
    seed : int, default 0
        Seed of the k-means++ initialisation.

    Attributes
    ----------
    params : MixtureParams or None
        Current parameters.
    history_ : list of float
        Log posterior before the first and after every M-step of the last fit.
    converged_ : bool
        Whether the last fit met ``tol``.
    n_iter_ : int
        Number of M-steps done in the last fit.
    resp_ : Tensor
        ``(G, K)`` memberships under the final parameters of the last fit.
    """

    def __init__(self, n_components: int, *, kind: str = "student_t",
                 dirichlet_alpha: float = 2.0, var_prior_shape: float = 1.0,
                 var_prior_scale: float | None = None, nu_init: float = 5.0,
                 nu_bounds: tuple[float, float] = (2.0, 200.0), min_var: float = 1e-4,
                 n_iter: int = 20, tol: float = 1e-5, seed: int = 0):
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        if int(n_components) < 1:
            raise ValueError("n_components must be >= 1")
        if dirichlet_alpha < 1.0:
            raise ValueError("dirichlet_alpha must be >= 1 (the MAP is unbounded below 1)")
        if var_prior_shape < 0 or (var_prior_scale is not None and var_prior_scale < 0):
            raise ValueError("inverse-gamma shape and scale must be >= 0")
        lo, hi = float(nu_bounds[0]), float(nu_bounds[1])
        if not 0 < lo < hi:
            raise ValueError("nu_bounds must satisfy 0 < low < high")
        if min_var <= 0:
            raise ValueError("min_var must be > 0")
        self.n_components, self.kind = int(n_components), kind
        self.dirichlet_alpha, self.var_prior_shape = float(dirichlet_alpha), float(var_prior_shape)
        self.var_prior_scale, self.nu_init = var_prior_scale, float(nu_init)
        self.nu_bounds, self.min_var = (lo, hi), float(min_var)
        self.n_iter, self.tol, self.seed = int(n_iter), float(tol), int(seed)
        self.params: MixtureParams | None = None
        self.var_prior_scale_: float | None = None
        self.history_: list[float] = []
        self.converged_, self.n_iter_ = False, 0
        self.resp_: Tensor | None = None

    # ------------------------------------------------------------------ helpers
    def _require_params(self) -> MixtureParams:
        if self.params is None:
            raise RuntimeError("the mixture has no parameters yet; call fit() first")
        return self.params

    def _prior_scale(self, z: Tensor) -> float:
        if self.var_prior_scale is not None:
            return float(self.var_prior_scale)
        if self.var_prior_scale_ is None:
            v = z.detach().var(0, unbiased=False).mean() if z.shape[0] > 1 else z.new_zeros(())
            self.var_prior_scale_ = (self.var_prior_shape + 1.0) * 0.1 * float(v)
        return self.var_prior_scale_

    def _log_prior(self, p: MixtureParams, b: float) -> Tensor:
        a = self.var_prior_shape
        out = (self.dirichlet_alpha - 1.0) * p.log_pi.sum()
        return out + (-(a + 1.0) * p.var.log() - b / p.var).sum()

    def _component_log_density(self, z: Tensor, p: MixtureParams) -> tuple[Tensor, Tensor]:
        """``(G, K)`` log component densities and latent scale weights ``u``."""
        dim = z.shape[-1]
        delta = _sq_mahalanobis(z, p.mu, p.var)
        half_logdet = 0.5 * p.var.log().sum(1)
        if self.kind == "gaussian":
            logd = -0.5 * dim * math.log(2 * math.pi) - half_logdet - 0.5 * delta
            return logd, torch.ones_like(delta)
        nu = p.nu
        logd = (_t_log_norm(nu, dim).to(z.dtype) - half_logdet
                - 0.5 * (nu + dim) * torch.log1p(delta / nu))
        return logd, (nu + dim) / (nu + delta)

    def _check_params(self, z: Tensor) -> MixtureParams:
        p = self._require_params()
        if p.mu.device != z.device or p.mu.dtype != z.dtype:
            p = self.params = p.to(device=z.device, dtype=z.dtype)
        return p

    # ---------------------------------------------------------------- EM steps
    def init_kmeanspp(self, z: Tensor, generator: torch.Generator | None = None,
                      n_lloyd: int = 5) -> MixtureParams:
        """k-means++ seeding plus a few Lloyd steps; sets and returns :attr:`params`.

        Parameters
        ----------
        z : Tensor
            ``(G, D)`` data.
        generator : torch.Generator, optional
            CPU generator for the seeding draws; defaults to one seeded with
            ``seed`` (so the result is deterministic and device-independent
            up to floating-point rounding).
        n_lloyd : int, default 5
            Number of Lloyd (hard k-means) refinement steps.

        Returns
        -------
        MixtureParams
            Weights, means and (MAP) variances of the hard clusters, ``nu = nu_init``.
        """
        z = z.detach()
        n, k = z.shape[0], self.n_components
        if n < k:
            raise ValueError(f"need at least n_components={k} points, got {n}")
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed)
        trials = 2 + int(math.log(k))  # greedy k-means++ (as in scikit-learn)
        wide = _wide(z.device)
        draws = torch.rand(k, trials, generator=generator, dtype=torch.float64).to(z.device, wide)
        first = (draws[0, 0] * n).long().clamp_max(n - 1)
        idx = [first]
        d2 = ((z - z[first]) ** 2).sum(1).to(wide)
        sq = (z * z).sum(1, keepdim=True)
        for j in range(1, k):  # sequential by definition; each step is O(G D trials)
            cw = torch.cumsum(d2.clamp_min(0.0), 0)
            cand = torch.searchsorted(cw, draws[j] * cw[-1]).clamp_max(n - 1)
            zc = z[cand]
            dc = (sq - 2.0 * z @ zc.T + (zc * zc).sum(1)).clamp_min(0.0).to(wide)
            dc = torch.minimum(d2[:, None], dc)
            best = dc.sum(0).argmin()
            idx.append(cand[best])
            d2 = dc[:, best]
        centres = z[torch.stack(idx)]
        for _ in range(n_lloyd + 1):
            dist = ((z * z).sum(1, keepdim=True) - 2.0 * z @ centres.T + (centres * centres).sum(1))
            onehot = z.new_zeros(n, k).scatter_(1, dist.argmin(1, keepdim=True), 1.0)
            counts = onehot.sum(0)
            new = (onehot.T @ z) / counts.clamp_min(1.0)[:, None]
            centres = torch.where(counts[:, None] > 0, new, centres)
        nu0 = math.inf if self.kind == "gaussian" else self.nu_init
        self.params = MixtureParams(
            log_pi=torch.full((k,), -math.log(k), dtype=z.dtype, device=z.device),
            mu=centres, var=torch.ones_like(centres),
            nu=torch.full((k,), nu0, dtype=z.dtype, device=z.device))
        return self._m_step(z, onehot, torch.ones_like(onehot), update_nu=False)

    def e_step(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Expectation step in log space.

        Parameters
        ----------
        z : Tensor
            ``(G, D)`` data.

        Returns
        -------
        log_resp : Tensor
            ``(G, K)`` log memberships (rows log-sum-exp to 0).
        u : Tensor
            ``(G, K)`` latent scale weights ``(nu + D) / (nu + delta)`` (ones if Gaussian).
        loglik : Tensor
            ``(G,)`` per-point log mixture density.
        """
        p = self._check_params(z)
        logd, u = self._component_log_density(z, p)
        joint = logd + p.log_pi
        loglik = torch.logsumexp(joint, 1)
        return joint - loglik[:, None], u, loglik

    def m_step(self, z: Tensor, resp: Tensor, u: Tensor) -> MixtureParams:
        """MAP maximisation step; sets and returns :attr:`params`.

        Parameters
        ----------
        z : Tensor
            ``(G, D)`` data.
        resp : Tensor
            ``(G, K)`` memberships (probabilities, not logs).
        u : Tensor
            ``(G, K)`` latent scale weights from :meth:`e_step`.

        Returns
        -------
        MixtureParams
            Updated weights, means, variances and (Student-t only) ``nu``.
        """
        self._check_params(z)
        return self._m_step(z.detach(), resp.detach(), u.detach(), update_nu=True)

    def _m_step(self, z: Tensor, resp: Tensor, u: Tensor, update_nu: bool) -> MixtureParams:
        old = self.params
        a, b = self.var_prior_shape, self._prior_scale(z)
        fin = torch.finfo(z.dtype)
        nk = resp.sum(0)
        w = resp * u
        wk = w.sum(0)
        pi = (nk + self.dirichlet_alpha - 1.0).clamp_min(fin.tiny)
        log_pi = pi.log() - pi.sum().log()
        c = z.mean(0)
        zc = z - c
        wz = w.T @ zc
        mu = torch.where((wk > fin.eps)[:, None], wz / wk.clamp_min(fin.tiny)[:, None] + c, old.mu)
        mc = mu - c
        s = (w.T @ (zc * zc) - 2.0 * mc * wz + mc * mc * wk[:, None]).clamp_min(0.0)
        var = ((s + 2.0 * b) / (nk[:, None] + 2.0 * (a + 1.0))).clamp_min(self.min_var)
        nu = old.nu
        if self.kind == "student_t" and update_nu:
            dim = z.shape[1]
            log_u = u.clamp_min(fin.tiny).log()
            wide = _wide(z.device)
            mean_term = ((resp * (log_u - u)).sum(0) / nk.clamp_min(fin.tiny)).to(wide)
            half = (old.nu.to(wide) + dim) / 2
            cst = 1.0 + mean_term + torch.digamma(half) - torch.log(half)
            nu_new = _solve_nu(cst, *self.nu_bounds).to(z.dtype)
            nu = torch.where(nk > fin.eps, nu_new, old.nu)
        self.params = MixtureParams(log_pi=log_pi, mu=mu, var=var, nu=nu)
        return self.params

    # ------------------------------------------------------------- public API
    def log_posterior(self, z: Tensor) -> Tensor:
        """MAP objective ``sum_i log p(z_i) + log prior(pi, var)`` (up to a constant).

        Parameters
        ----------
        z : Tensor
            ``(G, D)`` data.

        Returns
        -------
        Tensor
            Scalar; the quantity that EM never decreases.
        """
        p = self._check_params(z)
        return self.e_step(z)[2].sum() + self._log_prior(p, self._prior_scale(z))

    def fit(self, z: Tensor, n_iter: int | None = None,
            warm_start: bool = True) -> "StudentTMixture":
        """Run MAP-EM.

        Parameters
        ----------
        z : Tensor
            ``(G, D)`` data (gradients are not tracked).
        n_iter : int, optional
            Maximum number of EM iterations (default: ``self.n_iter``).
        warm_start : bool, default True
            Continue from :attr:`params` when they exist and match ``K`` and
            ``D``; otherwise initialise with k-means++.

        Returns
        -------
        StudentTMixture
            ``self``, with ``history_``, ``converged_``, ``n_iter_``, ``resp_`` set.
        """
        z = z.detach()
        n_iter = self.n_iter if n_iter is None else int(n_iter)
        with torch.no_grad():
            if self.var_prior_scale is None:
                self.var_prior_scale_ = None  # recomputed from the current data
            b = self._prior_scale(z)
            p = self.params
            if p is None or not warm_start or p.mu.shape != (self.n_components, z.shape[1]):
                self.init_kmeanspp(z)
            log_resp, u, ll = self.e_step(z)
            obj = float(ll.sum() + self._log_prior(self.params, b))
            history, converged, it = [obj], False, 0
            for it in range(1, n_iter + 1):
                self.m_step(z, log_resp.exp(), u)
                log_resp, u, ll = self.e_step(z)
                new = float(ll.sum() + self._log_prior(self.params, b))
                history.append(new)
                if abs(new - obj) <= self.tol * max(abs(obj), 1.0):
                    converged = True
                    break
                obj = new
        self.history_, self.converged_, self.n_iter_ = history, converged, it
        self.resp_ = log_resp.exp()
        return self

    def predict_proba(self, z: Tensor) -> Tensor:
        """Soft memberships.

        Parameters
        ----------
        z : Tensor
            ``(G, D)`` data.

        Returns
        -------
        Tensor
            ``(G, K)`` memberships; rows sum to 1.
        """
        return self.e_step(z)[0].exp()

    def log_prob(self, z: Tensor) -> Tensor:
        """Log mixture density, differentiable with respect to ``z``.

        Parameters
        ----------
        z : Tensor
            ``(G, D)`` data (may require grad; the parameters are constants).

        Returns
        -------
        Tensor
            ``(G,)`` ``log sum_k pi_k f_k(z_i)``.
        """
        p = self._check_params(z)
        logd, _ = self._component_log_density(z, p)
        return torch.logsumexp(logd + p.log_pi, 1)
