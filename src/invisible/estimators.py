"""Estimators that feel like scikit-learn, trained over a federation.

The conventions every estimator of this toolkit follows:

- it is made from the federation, where the data is (per party) and its
  hyperparameters as keyword arguments, which ``get_params()`` returns;
- ``fit()`` runs the training job on the party nodes and returns the
  estimator; what it learned ends with an underscore: ``coef_``,
  ``intercept_``, ``history_`` (a DataFrame, a row per round: the loss, the
  slowest party's seconds, the bytes all parties sent), ``n_rounds_``,
  ``job_id_``, ``result_`` (the job's result, with its receipts);
- where the model is public to its recipient, ``predict_proba(X)``,
  ``predict(X)`` and ``decision_function(X)`` work on local arrays (or
  DataFrames holding the feature columns), and ``score(X, y)`` is the ROC
  AUC (scikit-learn's ``roc_auc_score``);
- ``fit`` shows a progress bar per round (tqdm) in a terminal or a
  notebook, not when output goes to a file; ``progress=False`` turns it off;
- ``plot_history(path)`` writes the loss per round as a PNG (matplotlib,
  the optional ``plot`` extra: ``pip install 'invisible[plot]'``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from invisible.errors import ConfigError
from invisible.kinds.horizontal_lr import HorizontalLrParams, HorizontalLrResult
from invisible.kinds.params import ColumnsRef
from invisible.kinds.vertical_evaluate import VerticalEvaluateParams, VerticalEvaluateResult
from invisible.kinds.vertical_lr import VerticalLrParams
from invisible.kinds.vertical_predict import VerticalPredictParams, VerticalPredictResult

if TYPE_CHECKING:
    import pandas

    from invisible.coordinator.federation import Federation

#: Per party: (dataset, label column, feature columns).
PartyData = tuple[str, str, Sequence[str]]


def _interactive() -> bool:
    """Whether a progress bar has someone to show itself to (a terminal or a notebook)."""
    if "ipykernel" in sys.modules:
        return True
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class HorizontalLogisticRegression:
    """Logistic regression by federated averaging over parties that hold the same columns
    about different people (the ``horizontal_lr`` kind): ``data`` maps each party to
    (dataset, label column, feature columns). With ``bounds`` (one public bound on |value|
    per feature) the features are standardised by their pooled means and deviations; the
    model is always of the raw features."""

    def __init__(self, federation: Federation, data: Mapping[str, PartyData], *,
                 rounds: int = 10, local_epochs: int = 1, batch_size: int = 1024,
                 learning_rate: float = 0.1, l2: float = 0.0, clip: float = 10.0,
                 seed: int = 0, bounds: Sequence[float] | None = None,
                 max_rows: int = 100_000, progress: bool | None = None) -> None:
        self.federation = federation
        self.data = dict(data)
        self.rounds = rounds
        self.local_epochs = local_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.l2 = l2
        self.clip = clip
        self.seed = seed
        self.bounds = bounds
        self.max_rows = max_rows
        self.progress = progress

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyperparameters, as scikit-learn's estimators give them."""
        return {name: getattr(self, name) for name in (
            "data", "rounds", "local_epochs", "batch_size", "learning_rate", "l2", "clip",
            "seed", "bounds", "max_rows", "progress")}

    def params(self) -> HorizontalLrParams:
        """The job these hyperparameters make (what `invisible job run` would run)."""
        bounds = None if self.bounds is None else tuple(float(b) for b in self.bounds)
        return HorizontalLrParams(
            inputs={p: ColumnsRef(dataset, tuple(features), bounds, label)
                    for p, (dataset, label, features) in self.data.items()},
            rounds=self.rounds, local_epochs=self.local_epochs, batch_size=self.batch_size,
            learning_rate=float(self.learning_rate), l2=float(self.l2), clip=float(self.clip),
            seed=self.seed, max_rows=self.max_rows)

    def fit(self, job_id: str | None = None) -> HorizontalLogisticRegression:
        """Train on the parties' data (one job); the model comes back to this requester."""
        with _progress_bar(self.rounds, "horizontal_lr", "round", self.progress) as bar:
            def advance(done: int, total: int) -> None:
                bar.update(max(0, done - bar.n))

            result = self.federation.run(self.params(), job_id=job_id, progress=advance)
            bar.update(self.rounds - bar.n)
        self._fitted(result)
        return self

    def _fitted(self, result: HorizontalLrResult) -> None:
        self.result_ = result
        self.coef_ = result.coef
        self.intercept_ = result.intercept
        self.history_ = result.history()
        self.n_rounds_ = len(result.losses)
        self.job_id_ = result.job_id
        self.feature_names_in_ = list(result.features)

    def _features(self, x: Any) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise ConfigError("this estimator is not fitted yet: call fit() first")
        if hasattr(x, "columns"):  # a DataFrame: its feature columns, in the model's order
            missing = [c for c in self.feature_names_in_ if c not in x.columns]
            if missing:
                raise ConfigError(f"the data lacks the feature column(s) {', '.join(missing)}")
            x = x[self.feature_names_in_]
        array = np.asarray(x, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != self.coef_.shape[0]:
            raise ConfigError(f"expected rows of {self.coef_.shape[0]} features")
        return array

    def decision_function(self, x: Any) -> np.ndarray:
        return np.asarray(self._features(x) @ self.coef_ + self.intercept_)

    def predict_proba(self, x: Any) -> np.ndarray:
        """(rows, 2): P(y = 0) and P(y = 1) of each row, as scikit-learn's."""
        positive = 0.5 * (1.0 + np.tanh(0.5 * self.decision_function(x)))
        return np.column_stack([1.0 - positive, positive])

    def predict(self, x: Any) -> np.ndarray:
        return (self.decision_function(x) > 0).astype(np.int64)

    def score(self, x: Any, y: Any) -> float:
        """The ROC AUC of the model on these rows."""
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(np.asarray(y), self.decision_function(x)))

    def plot_history(self, path: str | Path) -> Path:
        """The training loss per round, as a PNG at `path`."""
        return _plot_loss(self.history_, "round", "training loss (weighted over parties)",
                          f"horizontal_lr job {self.job_id_}", path)


def _plot_loss(history: pandas.DataFrame, step: str, label: str, title: str,
               path: str | Path) -> Path:
    """history[step] against history["loss"], as a PNG at `path` (no pyplot: no backend is
    switched in the user's session)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("plot_history needs matplotlib: pip install 'invisible[plot]'"
                          ) from None
    figure = Figure(figsize=(6, 3.5), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(history[step], history["loss"], marker="o")
    axes.set_xlabel(step)
    axes.set_ylabel(label)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    target = Path(path)
    figure.savefig(target, dpi=120)
    return target


def _progress_bar(total: int, desc: str, unit: str, shown: bool | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit,
                disable=not (shown if shown is not None else _interactive()))


class VerticalLogisticRegression:
    """Logistic regression trained on secret shares by institutions holding different columns
    about the same people (the ``vertical_lr`` kind), over an alignment (a psi job's result
    or its name): ``label`` is (party, column) at the label holder, ``features`` maps each
    party to its columns and ``bounds`` to their public bounds. The model stays at the
    parties as shares; ``predict_proba`` sends every row's score to the label
    holder alone; ``score`` returns the AUC computed on shares (``evaluation_`` keeps every
    metric). With ``holdout`` > 0 the label holder holds that fraction of the alignment out
    of training, stratified by label, and ``score`` on the same alignment scores those rows.
    Follows the conventions of this module."""

    def __init__(self, federation: Federation, *, label: tuple[str, str],
                 features: Mapping[str, Sequence[str]],
                 bounds: Mapping[str, Sequence[float]], dealer: str, epochs: int = 10,
                 batch_size: int = 1024, learning_rate: float = 0.1, l2: float = 0.0,
                 seed: int = 0, weight_bound: float = 8.0, name: str | None = None,
                 holdout: float = 0.0, threshold: float = 0.5,
                 standardise: bool = False, progress: bool | None = None) -> None:
        self.federation = federation
        self.label = label
        self.features = {p: list(c) for p, c in features.items()}
        self.bounds = {p: list(b) for p, b in bounds.items()}
        self.dealer = dealer
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.l2 = l2
        self.seed = seed
        self.weight_bound = weight_bound
        self.name = name
        self.holdout = holdout
        self.threshold = threshold
        self.standardise = standardise
        self.progress = progress

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (
            "label", "features", "bounds", "dealer", "epochs", "batch_size", "learning_rate",
            "l2", "seed", "weight_bound", "name", "holdout", "threshold",
            "standardise", "progress")}

    @staticmethod
    def _alignment(alignment: Any) -> str:
        from invisible.kinds.alignments import ALIGNMENT_PREFIX
        from invisible.kinds.psi import PsiResult

        name = alignment.alignment if isinstance(alignment, PsiResult) else str(alignment)
        return ALIGNMENT_PREFIX + name.removeprefix(ALIGNMENT_PREFIX)

    def _inputs(self, alignment: Any, with_label: bool) -> dict[str, ColumnsRef]:
        dataset = self._alignment(alignment)
        holder, column = self.label
        return {p: ColumnsRef(dataset, tuple(cols), tuple(float(b) for b in self.bounds[p]),
                              column if with_label and p == holder else None)
                for p, cols in self.features.items()}

    def params(self, alignment: Any) -> VerticalLrParams:
        """The training job these hyperparameters make on `alignment`."""
        return VerticalLrParams(
            inputs=self._inputs(alignment, True), dealer=self.dealer, epochs=self.epochs,
            batch_size=self.batch_size, learning_rate=float(self.learning_rate),
            l2=float(self.l2), seed=self.seed, weight_bound=float(self.weight_bound),
            model=self.name, split=float(self.holdout), standardise=self.standardise)

    def fit(self, alignment: Any, job_id: str | None = None) -> VerticalLogisticRegression:
        """Train on the rows of `alignment`; the model stays at the parties as `model_`."""
        with _progress_bar(self.epochs, "vertical_lr", "epoch", self.progress) as bar:
            result = self.federation.run(
                self.params(alignment), job_id=job_id,
                progress=lambda done, total: bar.update(max(0, done - bar.n)))
            bar.update(self.epochs - bar.n)
        self.result_ = result
        self.model_ = result.model
        self.job_id_ = result.job_id
        self.history_ = result.history()
        self.n_epochs_ = self.epochs
        self.alignment_ = self._alignment(alignment)
        return self

    def evaluate(self, alignment: Any, job_id: str | None = None) -> VerticalEvaluateResult:
        """AUC (with its error bound), accuracy at `threshold` and log loss on the rows of
        `alignment`, computed on shares: the held-out rows when it is the alignment `fit`
        held rows out of, else every row. Only the four aggregates reach this requester."""
        if not hasattr(self, "model_"):
            raise ConfigError("this estimator is not fitted yet: call fit() first")
        held_out = self.holdout if self._alignment(alignment) == self.alignment_ else 0.0
        params = VerticalEvaluateParams(
            inputs=self._inputs(alignment, True), model=self.model_, dealer=self.dealer,
            threshold=float(self.threshold), split=float(held_out))
        self.evaluation_ = self.federation.run(params, job_id=job_id)
        return self.evaluation_

    def score(self, alignment: Any, job_id: str | None = None) -> float:
        """The AUC on `alignment`'s rows (see `evaluate`), computed on shares."""
        return self.evaluate(alignment, job_id).auc

    def predict_proba(self, alignment: Any, job_id: str | None = None) -> VerticalPredictResult:
        """Score the rows of `alignment` (a later psi's): every row's score and probability
        go to the label holder alone (its results' predictions/<job>.csv); this requester
        gets where they went, nothing of them."""
        if not hasattr(self, "model_"):
            raise ConfigError("this estimator is not fitted yet: call fit() first")
        params = VerticalPredictParams(
            inputs=self._inputs(alignment, False), model=self.model_, dealer=self.dealer,
            recipient=self.label[0])
        return self.federation.run(params, job_id=job_id)

    def plot_history(self, path: str | Path) -> Path:
        """The training loss per epoch, as a PNG at `path`."""
        return _plot_loss(self.history_, "epoch", "training loss (quadratic approximation)",
                          f"vertical_lr job {self.job_id_}", path)
