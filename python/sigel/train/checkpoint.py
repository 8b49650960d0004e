"""Training checkpoints: save the whole training state at epoch boundaries and resume from it.

A checkpoint holds everything the next epoch reads: network weights, AdamW
state, mixture parameters, the batch-order and masking generators (and the
global generators), the step counter, the previous hard labels and the
history so far. Resuming from it on the same data, options, seed and thread
count gives bitwise the same result as a run that was never interrupted.

Files are written with ``torch.save`` to a temporary name and renamed (an
interrupted write never replaces the last good checkpoint) and read back with
``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers (no pickled code runs).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .._settings import logger
from .._validate import SigelInputError

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "sigel-checkpoint"


def images_fingerprint(images) -> str:
    """Hash of the training images (values, genes, grid, mask)."""
    h = hashlib.blake2b(digest_size=20)
    v = images.values
    for a in (v.indptr, v.indices, v.data, np.asarray(images.mask), np.asarray(images.spot_pixel)):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    h.update("\x00".join(map(str, images.genes)).encode())
    h.update(f"{images.height}x{images.width}".encode())
    return h.hexdigest()


def remove_checkpoint(directory) -> None:
    """Delete the checkpoint file of ``directory`` (and the directory when that leaves it empty)."""
    d = Path(directory)
    for name in (CHECKPOINT_FILE, CHECKPOINT_FILE + ".tmp"):
        if (d / name).is_file():
            (d / name).unlink()
    try:
        d.rmdir()
    except OSError:
        pass


def _mixture_state(mix) -> dict:
    p = mix.params
    return {
        "params": None if p is None else {k: v.detach().cpu().clone() for k, v in p.state_dict().items()},
        "var_prior_scale_": mix.var_prior_scale_,
        "history_": [float(x) for x in mix.history_],
        "converged_": bool(mix.converged_),
        "n_iter_": int(mix.n_iter_),
        "resp_": None if mix.resp_ is None else mix.resp_.detach().cpu().clone(),
    }


def _set_mixture_state(mix, st: dict, device) -> None:
    from ..model.mixture import MixtureParams

    mix.params = None if st["params"] is None else MixtureParams.from_state_dict(st["params"]).to(device)
    mix.var_prior_scale_ = st["var_prior_scale_"]
    mix.history_ = list(st["history_"])
    mix.converged_ = bool(st["converged_"])
    mix.n_iter_ = int(st["n_iter_"])
    mix.resp_ = None if st["resp_"] is None else st["resp_"].to(device)


class Checkpointer:
    """Saves the training state every ``every`` epochs into ``directory`` and restores it on ``resume``.

    Used by :class:`sigel.train.trainer.Trainer` through two calls:
    :meth:`restore` before the first epoch and :meth:`epoch_end` after each.

    Parameters
    ----------
    directory
        Folder for ``checkpoint.pt`` (created when needed).
    every
        Save after every ``every``-th epoch (and never after the last one:
        the fit then finishes and returns its results).
    resume
        Continue from the checkpoint in ``directory`` when there is one (a
        fresh start otherwise). Without ``resume`` an existing checkpoint is
        refused rather than silently replaced.
    seed
        The fit's seed (part of the compatibility key).
    """

    def __init__(self, directory, *, every: int = 1, resume: bool = False, seed: int = 0):
        self.dir = Path(directory)
        self.every = int(every)
        if self.every < 1:
            raise SigelInputError(f"`checkpoint_every` must be >= 1; got {every!r}")
        self.resume = bool(resume)
        self.seed = int(seed)
        self.file = self.dir / CHECKPOINT_FILE
        if self.dir.exists() and not self.dir.is_dir():
            raise SigelInputError(f"`checkpoint_dir` {str(self.dir)!r} exists and is not a directory")
        if self.file.exists() and not self.resume:
            raise SigelInputError(f"`checkpoint_dir` {str(self.dir)!r} already holds a checkpoint; pass resume=True "
                                  "(sigel train --resume) to continue it, or choose another folder")
        self._key = None

    def _compat_key(self, trainer) -> str:
        if self._key is None:
            shapes = {k: list(v.shape) for k, v in trainer.model.state_dict().items()}
            blob = json.dumps({"images": images_fingerprint(trainer.images), "config": asdict(trainer.cfg),
                               "seed": self.seed, "shapes": shapes, "K": trainer.mixture.n_components,
                               "mixture": trainer.mixture.kind}, sort_keys=True, default=str)
            self._key = hashlib.sha256(blob.encode()).hexdigest()
        return self._key

    def restore(self, trainer, optimizer, batch_gen, mask_gen):
        """Load the checkpoint into ``trainer`` and the generators; returns the loop state or ``None``."""
        if not self.resume or not self.file.exists():
            if self.resume:
                logger.info("no checkpoint in %s yet: training from the first epoch", self.dir)
            return None
        try:
            st = torch.load(self.file, map_location="cpu", weights_only=True)
        except Exception as e:
            raise SigelInputError(f"checkpoint {str(self.file)!r} is unreadable: {e}") from None
        if not isinstance(st, dict) or st.get("format") != FORMAT:
            raise SigelInputError(f"{str(self.file)!r} is not a sigel checkpoint")
        if st.get("key") != self._compat_key(trainer):
            raise SigelInputError(f"the checkpoint in {str(self.dir)!r} was made for other data, options or seed; "
                                  "resume with the same input and options, or choose another checkpoint folder")
        device = trainer.device
        trainer.model.load_state_dict(st["model"])
        if trainer.ema is not None:
            if "ema" not in st:
                raise SigelInputError(f"{str(self.file)!r} holds no weight average (`ema_decay`)")
            trainer.ema.module.load_state_dict(st["ema"])
        optimizer.load_state_dict(st["optimizer"])
        _set_mixture_state(trainer.mixture, st["mixture"], device)
        batch_gen.set_state(st["rng"]["batch"])
        mask_gen.set_state(st["rng"]["mask"])
        torch.set_rng_state(st["rng"]["torch"])
        np_state = st["rng"]["numpy"]
        np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
        py = st["rng"]["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        if getattr(trainer.images, "draws", False) and "draws" in st["rng"]:
            trainer.images.generator.set_state(st["rng"]["draws"])  # depth-matched draws go on where they were
        loop = st["loop"]
        prev = loop["prev_labels"]
        logger.info("resumed from %s after epoch %d", self.file, loop["epoch"])
        return {"epoch": int(loop["epoch"]), "step": int(loop["step"]),
                "prev_labels": None if prev is None else prev.to(device), "history": list(loop["history"])}

    def epoch_end(self, trainer, epoch: int, optimizer, batch_gen, mask_gen, *, step: int, prev_labels,
                  history: list) -> None:
        """Save after 0-based ``epoch`` when it is due."""
        done = epoch + 1
        if done % self.every or done >= trainer.cfg.epochs:
            return
        np_state = np.random.get_state()
        py_state = random.getstate()
        st = {
            "format": FORMAT,
            "key": self._compat_key(trainer),
            "model": {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "mixture": _mixture_state(trainer.mixture),
            "rng": {"batch": batch_gen.get_state(), "mask": mask_gen.get_state().cpu(),
                    "torch": torch.get_rng_state(),
                    "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                              int(np_state[3]), float(np_state[4])],
                    "python": [py_state[0], list(py_state[1]), py_state[2]]},
            "loop": {"epoch": done, "step": int(step),
                     "prev_labels": None if prev_labels is None else prev_labels.detach().cpu().clone(),
                     "history": [{k: v.item() if isinstance(v, np.generic) else v for k, v in r.items()}
                                 for r in history]},
        }
        if trainer.ema is not None:
            st["ema"] = {k: v.detach().cpu().clone() for k, v in trainer.ema.module.state_dict().items()}
        if getattr(trainer.images, "draws", False):
            st["rng"]["draws"] = trainer.images.generator.get_state()
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / (CHECKPOINT_FILE + ".tmp")
        torch.save(st, tmp)
        os.replace(tmp, self.file)
        logger.debug("checkpoint after epoch %d -> %s", done, self.file)
