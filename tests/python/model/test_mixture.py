"""Tests for Module II: the diagonal Student-t mixture fitted by MAP-EM."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from sigel.model.mixture import MixtureParams, StudentTMixture

W_TRUE = np.array([0.45, 0.35, 0.20])
NU_TRUE = np.array([4.0, 15.0, 50.0])


def _sample_t_mixture(seed=0, n=3000, dim=6):
    """3-component diagonal t mixture: separated means, different scales and nu."""
    rng = np.random.default_rng(seed)
    mu = np.array([[0.0] * dim, [6.0] * dim, [0.0, 6.0] * (dim // 2)])
    mu[:, 0] += [0.0, 0.0, -6.0]
    var = np.stack([np.linspace(0.5, 1.5, dim), np.linspace(2.0, 0.8, dim), np.full(dim, 0.3)])
    lab = rng.choice(3, n, p=W_TRUE)
    g = rng.gamma(NU_TRUE[lab] / 2, 2 / NU_TRUE[lab])
    z = mu[lab] + np.sqrt(var[lab]) * rng.standard_normal((n, dim)) / np.sqrt(g)[:, None]
    return z, mu, var


def _random_data(dtype, seed=1):
    """Two Gaussian blobs plus a heavy-tailed (t, nu=2) background."""
    rng = np.random.default_rng(seed)
    parts = [rng.standard_normal((300, 5)) + 4, rng.standard_normal((200, 5)) * 0.5 - 3,
             rng.standard_t(2.0, (100, 5)) * 2]
    return torch.tensor(np.concatenate(parts), dtype=dtype)


@pytest.mark.parametrize("kind", ["student_t", "gaussian"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_posterior_never_decreases(kind, dtype):
    z = _random_data(dtype)
    # K=6 on ~3 groups also exercises near-empty components.
    m = StudentTMixture(6, kind=kind, tol=0.0).fit(z, n_iter=40)  # stops only at a fixed point
    h = np.asarray(m.history_)
    assert len(h) == m.n_iter_ + 1 and len(h) > 10 and np.isfinite(h).all()
    rtol = 1e-5 if dtype == torch.float32 else 1e-9  # float rounding only
    assert (np.diff(h) >= -rtol * np.abs(h[1:])).all(), np.diff(h).min()
    # the recorded value is the MAP objective of the final parameters
    assert float(m.log_posterior(z)) == pytest.approx(h[-1], rel=1e-5)
    p = m.params
    for t in (p.log_pi, p.mu, p.var):
        assert t.dtype == dtype and torch.isfinite(t).all()
    assert (p.var >= m.min_var).all()
    if kind == "gaussian":
        assert torch.isinf(p.nu).all()
    else:
        assert ((p.nu >= 2.0) & (p.nu <= 200.0)).all()


def test_recovers_known_mixture():
    z, mu, var = _sample_t_mixture()
    # nu of a near-Gaussian component creeps up slowly (flat likelihood), so a
    # moderate tolerance; the other parameters have converged well before.
    m = StudentTMixture(3, tol=1e-6).fit(torch.tensor(z), n_iter=300)
    assert m.converged_
    p = m.params
    cost = ((p.mu.numpy()[:, None] - mu[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    order = rows[np.argsort(cols)]  # estimated component matched to true component j
    # means: sampling s.d. of a mean is <= sqrt(2/600) ~ 0.06, allow 0.2 absolute
    assert np.abs(p.mu.numpy()[order] - mu).max() < 0.2
    # scales: 20 % relative per dimension
    assert np.abs(p.var.numpy()[order] / var - 1).max() < 0.2
    # weights: 0.03 absolute
    assert np.abs(p.log_pi.exp().numpy()[order] - W_TRUE).max() < 0.03
    nu = p.nu.numpy()[order]
    assert NU_TRUE[0] / 1.5 < nu[0] < NU_TRUE[0] * 1.5    # heavy tail: within factor 1.5
    assert NU_TRUE[1] / 2.0 < nu[1] < NU_TRUE[1] * 2.0    # moderate: within factor 2
    assert nu[2] > 15.0                                   # nearly Gaussian: just "large"
    # float32 gives the same answer up to float error
    m32 = StudentTMixture(3, tol=1e-6).fit(torch.tensor(z, dtype=torch.float32), n_iter=300)
    assert m32.params.mu.dtype == torch.float32
    assert torch.allclose(m32.params.mu.double()[order], p.mu[order], atol=1e-2)


@pytest.mark.parametrize("kind", ["student_t", "gaussian"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_far_points_are_stable(kind, dtype):
    z = _random_data(dtype)
    m = StudentTMixture(4, kind=kind).fit(z, n_iter=10)
    far = torch.full((5, z.shape[1]), 1e6, dtype=dtype)
    far[1] *= -1
    far[2, 0] = -1e6
    log_resp, u, ll = m.e_step(far)
    resp = log_resp.exp()
    assert torch.isfinite(log_resp).all() and torch.isfinite(u).all() and torch.isfinite(ll).all()
    assert torch.allclose(resp.sum(1), torch.ones(5, dtype=dtype), atol=1e-5)
    assert (u >= 0).all()
    # an M-step that sees them stays finite, too
    zz = torch.cat([z, far])
    m.fit(zz, n_iter=3)
    for t in (m.params.log_pi, m.params.mu, m.params.var):
        assert torch.isfinite(t).all()


def test_determinism_memberships_and_gradients():
    z = _random_data(torch.float32)
    a = StudentTMixture(5, seed=3).fit(z, n_iter=15)
    b = StudentTMixture(5, seed=3).fit(z, n_iter=15)
    for k, v in a.params.state_dict().items():
        assert torch.equal(v, b.params.state_dict()[k])
    assert a.history_ == b.history_
    r = a.predict_proba(z)
    assert r.shape == (z.shape[0], 5)
    assert torch.allclose(r.sum(1), torch.ones(z.shape[0]), atol=1e-5)
    assert torch.allclose(r, a.resp_, atol=1e-6)
    zg = z[:50].clone().requires_grad_(True)
    lp = a.log_prob(zg)
    assert lp.shape == (50,)
    lp.sum().backward()
    assert zg.grad is not None and torch.isfinite(zg.grad).all() and zg.grad.abs().sum() > 0


def test_large_nu_matches_gaussian():
    z = _random_data(torch.float64)
    g = StudentTMixture(3, kind="gaussian").fit(z, n_iter=10)
    t = StudentTMixture(3)
    p = g.params
    t.params = MixtureParams(p.log_pi, p.mu, p.var, torch.full_like(p.nu, 1e7))
    assert torch.allclose(t.log_prob(z), g.log_prob(z), atol=1e-4)
    # and moderate nu is visibly heavier-tailed: larger density far out
    t.params.nu = torch.full_like(p.nu, 3.0)
    far = z[:5] + 30.0
    assert (t.log_prob(far) > g.log_prob(far)).all()


def test_state_dict_roundtrip_and_warm_start():
    z = _random_data(torch.float32)
    m = StudentTMixture(3).fit(z, n_iter=5)
    sd = m.params.state_dict()
    assert set(sd) == {"log_pi", "mu", "var", "nu"}
    q = MixtureParams.from_state_dict(sd).to(torch.float64)
    assert q.mu.dtype == torch.float64 and q.n_components == 3
    m2 = StudentTMixture(3)
    m2.params = MixtureParams.from_state_dict(sd)
    m2.fit(z, n_iter=5)  # warm start continues the climb
    assert m2.history_[0] == pytest.approx(m.history_[-1], rel=1e-6)


def test_empty_component_keeps_parameters():
    z = _random_data(torch.float64)
    m = StudentTMixture(3).fit(z, n_iter=3)
    old = m.params
    resp, u = m.predict_proba(z), m.e_step(z)[1]
    resp[:, 0] = 0.0
    resp = resp / resp.sum(1, keepdim=True)
    new = m.m_step(z, resp, u)
    assert torch.equal(new.mu[0], old.mu[0]) and torch.equal(new.nu[0], old.nu[0])
    assert all(torch.isfinite(t).all() for t in (new.log_pi, new.mu, new.var, new.nu))
    assert math.isclose(float(new.log_pi.exp().sum()), 1.0, rel_tol=1e-9)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        StudentTMixture(3, kind="laplace")
    with pytest.raises(ValueError):
        StudentTMixture(3, dirichlet_alpha=0.5)
    with pytest.raises(RuntimeError):
        StudentTMixture(3).predict_proba(torch.zeros(4, 2))
    with pytest.raises(ValueError):
        StudentTMixture(10).fit(torch.randn(5, 2))
