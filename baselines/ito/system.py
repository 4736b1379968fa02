"""``ito_cmaes``: inference-time optimisation of an effect's settings with CMA-ES (after ST-ITO, Steinmetz et al.,
ISMIR 2024), with nothing trained.

For each example, CMA-ES (the ``cma`` package) searches the effect's settings in the normalised box [0, 1]^P to
minimise the distance between style features (:mod:`baselines.ito.features`: statistics over time, since input
and reference are different segments) of ``effect(input, params)`` and of the reference. Each generation's
renders, and their features, run on a thread pool (pedalboard, scipy's FFT and BLAS release the GIL).

Budget: ``renders`` effect renders per example. A first look spends ``init_fraction`` of them on settings drawn
from the effect's data distribution (``effect.sample``); CMA-ES then runs whole generations from the best of
them while one fits in the rest of the budget, or until its search has narrowed below ``tolx``. The answer is a
candidate already rendered (the lowest distance, or the minimum-Bayes-risk choice of :meth:`_Trail.mbr`), so the
output costs no extra render. Per example, ``info`` records ``renders``, ``seconds``, ``cpu_seconds`` and
``generations``, which the runner writes as ``cost/<key>`` rows.

Optional: a checkpoint of the proposed model (``encoder_checkpoint``, or the runner's ``checkpoint`` key, which
calls :meth:`load`) replaces the statistics by the distance between the model's embeddings of the two clips.
That needs ``models.proposed`` to provide a system with ``embed``, ``code`` or ``encode`` mapping audio (B, n) to
embeddings (B, D) (numpy or torch); when it does not, construction fails with a message that says so, and the
default features are unaffected.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.effects import Chain, Effect, default_workers
from bench.systems import CheckpointError, Estimate, System, SystemError_, register_system

from .features import KINDS, FeatureSpec, StyleFeatures
from .prior import GaussianPrior, read_presets

FEATURES = ("auto", *KINDS, "embedding")
SELECT = ("best", "mbr")
ENCODER_METHODS = ("embed", "code", "encode")  # looked up in this order on the proposed system
PRIORS = ("sample", "uniform", "gaussian")


def one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


class EncoderEmbedding:
    """The proposed model's encoder as a feature: Euclidean distance between embeddings (guarded import)."""

    def __init__(self, checkpoint: str | Path, sample_rate: int, device: str):
        path = Path(checkpoint)
        if not path.exists():
            raise CheckpointError(f"ito_cmaes: encoder checkpoint {path} does not exist (expected a checkpoint "
                                  "of the 'proposed' system)")
        try:
            from bench.systems import get_system

            model = get_system("proposed", {}, sample_rate=sample_rate, device=device)
        except ImportError as e:
            raise SystemError_(f"ito_cmaes: feature 'embedding' needs the proposed model (models.proposed), "
                               f"which is not available: {e}") from e
        model.load(path)
        fn = next((getattr(model, m) for m in ENCODER_METHODS if callable(getattr(model, m, None))), None)
        if fn is None:
            raise SystemError_("ito_cmaes: feature 'embedding' needs the proposed system to provide one of "
                               f"{', '.join(ENCODER_METHODS)} mapping audio (B, n) to embeddings (B, D)")
        self.model, self.fn = model, fn

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        z = self.fn(np.asarray(audio, dtype=np.float32))
        if hasattr(z, "detach"):  # a torch tensor
            z = z.detach().float().cpu().numpy()
        z = np.asarray(z, dtype=np.float64)
        return z.reshape(len(z), -1)

    @staticmethod
    def distance(feats: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return np.sqrt(((np.atleast_2d(feats) - np.asarray(ref)[None]) ** 2).mean(axis=1))


@register_system("ito_cmaes")
class ItoCmaes(System):
    """Per-example CMA-ES over the effect's normalised settings; distance between style statistics."""

    name = "ito_cmaes"
    controls = "any"
    trainable = False

    @dataclass
    class Config:
        feature: str = "auto"  # auto (mel, or embedding when an encoder checkpoint is given) | mel | mfcc | embedding
        renders: int = 256  # effect renders per example (the budget), the starting point included
        popsize: int = 0  # CMA-ES population per generation; 0 = its default 4 + 3 ln(P)
        sigma0: float = 0.25  # initial step size in the normalised [0, 1] box
        tolx: float = 2e-3  # stop early once the search has narrowed below this (normalised units)
        start: str = "default"  # default (each parameter's default value) | centre
        init_fraction: float = 0.125  # share of the budget spent on a first look before CMA-ES
        prior: str = "sample"  # sample: first look drawn from effect.sample(), search box = its support | uniform
        # | gaussian: maximum a posteriori under a Gaussian fitted to prior_presets, else to effect.sample() draws
        prior_pool: int = 128  # settings drawn once per effect for the sample (and default gaussian) prior
        prior_weight: float = 1.0  # gaussian: the objective is distance + prior_weight * 0.5 * Mahalanobis^2 / P
        prior_presets: str = ""  # gaussian: a folder of JSON presets (baselines/ito/prior.py); empty: effect.sample
        select: str = "mbr"  # best (lowest distance) | mbr (minimum Bayes risk, see _Trail.mbr)
        mbr_temperature: float = 0.15  # mbr: weight exp(-(d - d_min) / (t * d_min)) of each candidate
        temporal_weight: float = 1.0  # weight of the echo/flux/modulation feature groups (mel features)
        n_mels: int = 48
        seed: int = 0
        workers: int = 0  # render threads; 0 = all cores
        encoder_checkpoint: str = ""  # a checkpoint of the proposed system, for feature = embedding/auto
        # hidden processing (the wild set): the chain of known effects searched instead, in this order
        wild_chain: list = field(default_factory=lambda: ["peq4", "compressor", "delay", "reverb"])

        def validate(self, where: str) -> None:
            if self.feature not in FEATURES:
                raise ValueError(f"{where}.feature: {self.feature!r}; valid: {', '.join(FEATURES)}")
            if self.renders < 2:
                raise ValueError(f"{where}.renders: need at least 2 renders per example, got {self.renders}")
            if self.popsize < 0 or self.popsize == 1:
                raise ValueError(f"{where}.popsize: 0 (CMA-ES default) or at least 2, got {self.popsize}")
            if not 0 < self.sigma0 <= 1:
                raise ValueError(f"{where}.sigma0: must be in (0, 1], got {self.sigma0}")
            if self.start not in ("default", "centre"):
                raise ValueError(f"{where}.start: {self.start!r}; valid: default, centre")
            if self.workers < 0:
                raise ValueError(f"{where}.workers: must be >= 0 (0 = all cores), got {self.workers}")
            if not 0 <= self.init_fraction < 1:
                raise ValueError(f"{where}.init_fraction: must be in [0, 1), got {self.init_fraction}")
            if self.prior not in PRIORS:
                raise ValueError(f"{where}.prior: {self.prior!r}; valid: {', '.join(PRIORS)}")
            if self.select not in SELECT:
                raise ValueError(f"{where}.select: {self.select!r}; valid: {', '.join(SELECT)}")
            if self.prior_weight < 0:
                raise ValueError(f"{where}.prior_weight: must be >= 0, got {self.prior_weight}")
            if self.prior_presets and self.prior != "gaussian":
                raise ValueError(f"{where}.prior_presets: only read with prior = \"gaussian\", got prior = "
                                 f"{self.prior!r}")
            if self.mbr_temperature <= 0:
                raise ValueError(f"{where}.mbr_temperature: must be positive, got {self.mbr_temperature}")
            if not self.wild_chain or not all(isinstance(n, str) for n in self.wild_chain):
                raise ValueError(f"{where}.wild_chain: a list of effect names, got {self.wild_chain!r}")

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        c = self.cfg
        self.workers = c.workers or default_workers()
        self._pool: ThreadPoolExecutor | None = None
        self._priors: dict[tuple, np.ndarray] = {}
        self._gaussians: dict[tuple, GaussianPrior] = {}
        self.encoder: EncoderEmbedding | None = None
        kind = "mel" if c.feature in ("auto", "embedding") else c.feature
        self.stats = StyleFeatures(self.sample_rate, FeatureSpec(kind=kind, n_mels=c.n_mels,
                                                                 temporal_weight=c.temporal_weight))
        if c.encoder_checkpoint:
            self.load(Path(c.encoder_checkpoint))

    @property
    def wild_chain(self) -> Chain:
        if getattr(self, "_chain", None) is None:
            self._chain = Chain(list(self.cfg.wild_chain))
        return self._chain

    # --- checkpoint: only the optional encoder ----------------------------------------------------------------
    def load(self, path: Path) -> None:
        """Use the proposed model's encoder at ``path`` as the feature (the runner's ``checkpoint`` key)."""
        self.encoder = EncoderEmbedding(path, self.sample_rate, self.device)

    @property
    def feature(self) -> str:
        f = self.cfg.feature
        if f == "auto":
            return "embedding" if self.encoder is not None else self.stats.spec.kind
        return f

    @classmethod
    def search_space(cls, trial) -> dict:
        return {
            "renders": trial.suggest_categorical("renders", [64, 128, 256, 512]),
            "popsize": trial.suggest_categorical("popsize", [0, 8, 12, 16, 24]),
            "sigma0": trial.suggest_float("sigma0", 0.05, 0.5, log=True),
            "feature": trial.suggest_categorical("feature", ["mel", "mfcc"]),
            "temporal_weight": trial.suggest_float("temporal_weight", 0.25, 4.0, log=True),
        }

    # --- the search ---------------------------------------------------------------------------------------
    @property
    def pool(self) -> ThreadPoolExecutor | None:
        if self.workers > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ito")
        return self._pool

    def _featurise(self, audio: np.ndarray) -> np.ndarray:
        if self.feature == "embedding":
            if self.encoder is None:
                raise SystemError_("ito_cmaes: feature = 'embedding' needs encoder_checkpoint (or the runner's "
                                   "checkpoint key) naming a checkpoint of the proposed system")
            return self.encoder(audio)
        return self.stats(audio)

    def _distance(self, feats: np.ndarray, ref: np.ndarray) -> np.ndarray:
        if self.feature == "embedding":
            return self.encoder.distance(feats, ref)
        return self.stats.distance(feats, ref)

    def _evaluate(self, effect: Effect, x: np.ndarray, params: np.ndarray, ref_feat: np.ndarray):
        """Render ``x`` with each row of ``params`` and score it.

        Returns renders (N, n), distances (N,) and log-mel spectrograms (N, T, M)."""
        sr = self.sample_rate
        embed = self.feature == "embedding"

        def chunk(rows):  # one thread: render its share of the generation, then featurise it as one batch
            y = np.stack([effect.process_one(x, sr, p) for p in rows])
            f, db = self.stats.analyse(y)
            return y, f, db

        pool = self.pool
        parts = np.array_split(np.asarray(params), min(self.workers, len(params)))
        outs = list(pool.map(chunk, parts)) if pool is not None and len(parts) > 1 else [chunk(params)]
        audio = np.concatenate([o[0] for o in outs])
        feats = self._featurise(audio) if embed else np.concatenate([o[1] for o in outs])
        return audio, self._distance(feats, ref_feat), np.concatenate([o[2] for o in outs])

    def _seed(self, input: np.ndarray, reference: np.ndarray) -> np.random.Generator:
        """Per example: a function of the seed and the example's audio, so results do not depend on order."""
        key = zlib.crc32(np.ascontiguousarray(input, dtype=np.float32).tobytes())
        key = zlib.crc32(np.ascontiguousarray(reference, dtype=np.float32).tobytes(), key)
        return np.random.default_rng([self.cfg.seed, key])

    def match(self, input: np.ndarray, reference: np.ndarray, effect: Effect) -> Estimate:
        # the feature's small matmuls run in the worker threads: BLAS's own threads would only oversubscribe
        with one_blas_thread():
            return self._match(input, reference, effect)

    def _match(self, input: np.ndarray, reference: np.ndarray, effect: Effect) -> Estimate:
        t0, c0 = time.perf_counter(), time.process_time()
        x = np.asarray(input, dtype=np.float32)
        if effect.n_params == 0:  # hidden processing: search the configured chain instead
            chain = self.wild_chain
            est = self._match(x, reference, chain)
            stages = zip(chain.stages, chain.split(est.params01), strict=True)
            est.info["searched"] = chain.name
            est.info["chain"] = [{"effect": st.name, "params01": [round(float(v), 5) for v in p]} for st, p in stages]
            est.info["seconds"], est.info["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
            return Estimate(None, est.output, est.info)
        c = self.cfg
        rng = self._seed(x, reference)
        first, lo, hi = self._first_look(effect, rng)
        return self._search(effect, x, reference, first, lo, hi, c.sigma0, c.renders, rng, c.select, t0, c0)

    def _first_look(self, effect: Effect, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The settings rendered before CMA-ES (rows), and the box [lo, hi] it searches: draws from the effect's own
        data distribution (``prior = sample``: what the random baseline draws), from the Gaussian prior
        (``gaussian``: its mean first), or a scrambled Sobol set (``uniform``), with the starting point first when
        it lies in the box."""
        c, P = self.cfg, effect.n_params
        x0 = effect.default01().astype(np.float64) if c.start == "default" else np.full(P, 0.5)
        lo, hi = np.zeros(P), np.ones(P)
        n_init = max(1, min(c.renders - 2, int(round(c.init_fraction * c.renders))))
        if c.prior == "sample":
            pool = self._prior(effect)
            lo, hi = _support(pool)
            first = pool[rng.permutation(len(pool))[:n_init]]
            if np.all((x0 >= lo) & (x0 <= hi)):
                first = np.concatenate([x0[None], first[: n_init - 1]])
        elif c.prior == "gaussian":
            g = self._gaussian(effect)
            draws = rng.multivariate_normal(g.mean, g.cov, size=max(0, n_init - 1), method="cholesky")
            first = np.clip(np.concatenate([g.mean[None], draws]), 0.0, 1.0)
        else:
            first = x0[None]
            if n_init > 1:
                from scipy.stats import qmc

                m = int(np.ceil(np.log2(n_init - 1))) if n_init > 2 else 0
                sobol = qmc.Sobol(P, scramble=True, seed=rng).random_base2(m)[: n_init - 1]
                first = np.concatenate([first, sobol])
        return first, lo, hi

    def _search(self, effect: Effect, x: np.ndarray, reference: np.ndarray, first: np.ndarray, lo: np.ndarray,
                hi: np.ndarray, sigma, renders: int, rng: np.random.Generator, select: str, t0: float,
                c0: float) -> Estimate:
        """Render ``first``, then CMA-ES from the best of it with step size ``sigma`` (a number, or one per
        parameter) inside [lo, hi] for the rest of ``renders``; the answer is a rendered candidate."""
        ref_feat = self._featurise(np.asarray(reference, dtype=np.float32)[None])[0]
        trail = _Trail()  # every candidate evaluated: params, objective, render, log-mel
        first = first[: max(1, renders)]
        trail.add(first, *self._scored(effect, x, first, ref_feat))

        # CMA-ES from the best point seen, inside the box [lo, hi], for the rest of the budget
        generations = self._cmaes(effect, x, ref_feat, trail.best_params(), lo, hi, renders - len(trail), rng,
                                  trail, sigma)

        # the answer: the lowest objective, or the minimum-Bayes-risk choice
        i = trail.best() if select == "best" else trail.mbr(self.cfg.mbr_temperature, n_first=len(first))
        # every number here becomes a cost/<key> row in scores.parquet, so only costs go in
        info = {"renders": len(trail), "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                "generations": generations}
        return Estimate(trail.params[i].astype(np.float32), trail.audio[i].astype(np.float32, copy=True), info)

    def _scored(self, effect: Effect, x: np.ndarray, params: np.ndarray, ref_feat: np.ndarray):
        """:meth:`_evaluate`, its distances plus the prior's penalty (maximum a posteriori) when there is one."""
        audio, dist, db = self._evaluate(effect, x, params, ref_feat)
        if self.cfg.prior == "gaussian":
            dist = dist + self._gaussian(effect).penalty(params, self.cfg.prior_weight)
        return audio, dist, db

    def _prior(self, effect: Effect) -> np.ndarray:
        """``prior_pool`` settings from ``effect.sample`` (drawn once per effect, from the system's seed)."""
        key = (effect.name, effect.n_params, self.sample_rate)
        if key not in self._priors:
            rng = np.random.default_rng([self.cfg.seed, zlib.crc32(effect.name.encode())])
            try:
                pool = np.stack([effect.sample(rng, self.sample_rate) for _ in range(self.cfg.prior_pool)])
            except Exception:  # an effect whose sample() fails: fall back to the uniform box
                pool = rng.uniform(size=(self.cfg.prior_pool, effect.n_params))
            self._priors[key] = pool.astype(np.float64)
        return self._priors[key]

    def _gaussian(self, effect: Effect) -> GaussianPrior:
        """The Gaussian prior of ``effect``: fitted to its presets in ``prior_presets`` (at least 2 of them), else to
        the sample pool (what the training settings are drawn from)."""
        key = (effect.name, effect.n_params)
        if key not in self._gaussians:
            settings = None
            if self.cfg.prior_presets:
                found = read_presets(self.cfg.prior_presets, effect)
                if len(found) >= 2:
                    settings = found
                else:
                    import warnings

                    warnings.warn(f"{self.name}: {len(found)} preset(s) of {effect.name} in {self.cfg.prior_presets}; "
                                  "its prior is fitted to effect.sample() draws instead", stacklevel=2)
            self._gaussians[key] = GaussianPrior.fit(self._prior(effect) if settings is None else settings)
        return self._gaussians[key]

    def _cmaes(self, effect, x, ref_feat, start, lo, hi, budget, rng, trail, sigma) -> int:
        import cma

        c = self.cfg
        P = effect.n_params
        D = max(P, 2)  # cma does not search 1-D spaces: a dummy coordinate (ignored by the effect) makes it 2-D
        popsize = c.popsize or (4 + int(3 * np.log(D)))
        if budget < popsize:
            return 0
        span = np.maximum(hi - lo, 1e-6)  # CMA-ES works in the unit box, mapped onto [lo, hi]
        x0 = np.concatenate([np.clip((start - lo) / span, 0.0, 1.0), np.full(D - P, 0.5)])
        sigma = np.asarray(sigma, dtype=np.float64)
        stds = {}
        if sigma.ndim:  # one step size per parameter (in [0, 1] units): CMA-ES's own per-coordinate scaling
            per = np.concatenate([sigma / span, np.full(D - P, float(sigma.mean()))])
            sigma, stds = float(per.max()), {"CMA_stds": per / per.max()}
        es = cma.CMAEvolutionStrategy(x0, float(sigma), {**stds,
            "bounds": [0.0, 1.0], "popsize": popsize, "randn": lambda *shape: rng.standard_normal(shape),
            "seed": np.nan, "verbose": -9, "verb_log": 0, "verb_disp": 0, "tolx": c.tolx, "tolfun": 0.0,
            "tolfunhist": 0.0, "tolflatfitness": 10**9, "tolstagnation": 10**9,
        })
        generations = 0
        while budget >= popsize and not es.stop():
            X = np.asarray(es.ask(), dtype=np.float64)
            params = np.clip(lo + X[:, :P] * span, 0.0, 1.0)
            audio, dist, db = self._scored(effect, x, params, ref_feat)
            trail.add(params, audio, dist, db)
            budget -= len(params)
            generations += 1
            es.tell(list(X), dist.tolist())
        return generations

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)


class _Trail:
    """Every candidate one search evaluated, in order."""

    def __init__(self):
        self._p, self._a, self._d, self._s = [], [], [], []

    def add(self, params, audio, dist, db) -> None:
        self._p.append(np.asarray(params, np.float64))
        self._a.append(audio)
        self._d.append(np.asarray(dist, np.float64))
        self._s.append(db)

    def __len__(self) -> int:
        return sum(len(d) for d in self._d)

    @property
    def params(self) -> np.ndarray:
        return np.concatenate(self._p)

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self._a)

    @property
    def dist(self) -> np.ndarray:
        return np.concatenate(self._d)

    def best(self) -> int:
        return int(np.argmin(self.dist))

    def best_params(self) -> np.ndarray:
        return self.params[self.best()]

    def mbr(self, temperature: float, n_first: int) -> int:
        """Minimum Bayes risk selection.

        The first ``n_first`` candidates are draws from the prior (the first look), so weighting them by a
        likelihood ``exp(-(d - d_min) / (temperature * d_min))`` gives a rough sample of the posterior over
        settings; the search's best candidate joins them. Their weighted mean log-mel spectrogram estimates
        the expected output, and the answer is the candidate (of all evaluated) closest to it in squared error:
        the least expected spectrogram error under that posterior. Candidates share the input, so their
        spectrogram differences measure processing alone, with no content mismatch.

        When the distance singles out one setting (gain, EQ, distortion), the best candidate outweighs the
        draws and is returned; when many settings fit about equally well (chorus, phaser: the best one mostly
        fitted the content mismatch between the segments), the answer moves to the middle of them instead of
        an extreme setting. CMA-ES's own candidates are not used for the mean: they crowd around its optimum
        and would pull the mean there whatever the evidence."""
        d = self.dist
        spec = np.concatenate(self._s).reshape(len(d), -1)
        best = int(np.argmin(d))
        dmin = max(float(d[best]), 1e-9)
        cidx = np.unique(np.append(np.arange(min(n_first, len(d))), best))
        w = np.exp(-(d[cidx] - dmin) / (temperature * dmin))
        centre = (w[:, None] * spec[cidx]).sum(axis=0) / w.sum()
        return int(np.argmin(((spec - centre) ** 2).mean(axis=1)))


def _support(pool: np.ndarray, margin: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The per-parameter range of the prior's samples, widened by ``margin`` of the unit range."""
    return np.clip(pool.min(axis=0) - margin, 0.0, 1.0), np.clip(pool.max(axis=0) + margin, 0.0, 1.0)
