"""The population lifecycle with DEAP: NSGA-II over (Sharpe lower bound, drawdown, turnover).

- **Seeding**: the catalogue genomes, then uniform random genes up to the population size.
- **Variation**: parents in random pairs; simulated binary crossover (probability
  ``cx_prob``) and polynomial mutation (each gene with probability 1/G), both bounded
  to [0, 1] so every child decodes to a valid genome (Deb and Agrawal 1995).
- **Selection**: NSGA-II on parents + children (Deb et al. 2002): elitist, and its
  crowding distance keeps the front spread out (niching). Every individual also
  carries a **species**, the catalogue seed nearest in gene space, to follow how
  the families fare.
- **Lineage**: every individual has an id, its parents' ids, the operator that made
  it and its generation. **Experiment log**: every evaluation of this run is a row, with
  its objectives and per-bar return moments; the trial registry (``registry``) keeps
  them across runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from deap import base, creator, tools

from emp_core.evolution.fitness import Universe, evaluate
from emp_core.evolution.genome import BOUNDS, CATALOGUE, GENE_NAMES, Genome
from emp_core.evolution.registry import return_moments

WEIGHTS = (1.0, 1.0, -1.0)  # maximise Sharpe lower bound, maximise (negative) drawdown, minimise turnover
if not hasattr(creator, "EmpFitness"):
    creator.create("EmpFitness", base.Fitness, weights=WEIGHTS)
    creator.create("EmpIndividual", list, fitness=creator.EmpFitness)

_SEED_VECTORS = {name: g.to_vector() for name, g in CATALOGUE.items()}


@dataclass
class ExperimentLog:
    """Every evaluation of every individual in one run (the registry counts trials across runs)."""

    rows: list[dict] = field(default_factory=list)

    def add(self, individual, *, window: int, phase: str, metrics: dict, moments: dict) -> None:
        """One evaluation: the individual's genes (in [0, 1]), objectives and per-bar return moments."""
        self.rows.append({
            "evaluation": len(self.rows), "individual": individual.id, "generation": individual.generation,
            "window_id": window, "phase": phase, "species": individual.species, "operator": individual.operator,
            "parents": list(individual.parents), **dict(zip(GENE_NAMES, map(float, individual), strict=True)),
            **metrics, **moments,
        })

    @property
    def evaluations(self) -> int:
        """Training evaluations in this run."""
        return sum(1 for r in self.rows if r["phase"] == "train")

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, infer_schema_length=None)


class _Ids:
    def __init__(self) -> None:
        self.next = 0

    def __call__(self) -> int:
        self.next += 1
        return self.next - 1


def _individual(genes, ids: _Ids, generation: int, parents: tuple[int, ...], operator: str):
    ind = creator.EmpIndividual(float(x) for x in np.clip(genes, 0.0, 1.0))
    ind.id, ind.generation, ind.parents, ind.operator = ids(), generation, parents, operator
    ind.species = min(_SEED_VECTORS, key=lambda k: float(np.sum((np.asarray(ind) - _SEED_VECTORS[k]) ** 2)))
    return ind


def genome_of(ind) -> Genome:
    return Genome.from_vector(ind, name=f"g{ind.id}")


def _score(individuals, universe: Universe, window: tuple, log: ExperimentLog, window_id: int, phase: str,
           evaluator=evaluate, **costs) -> None:
    if not individuals:
        return
    ev = evaluator([genome_of(i) for i in individuals], universe, *window, **costs)
    moments = return_moments(ev.returns[1:])
    for k, ind in enumerate(individuals):
        ind.fitness.values = tuple(float(x) for x in ev.objectives[k])
        log.add(ind, window=window_id, phase=phase, metrics=ev.metrics(k),
                moments={name: values[k].item() for name, values in moments.items()})


@dataclass(frozen=True)
class EvolutionResult:
    population: list  # the final population (creator.EmpIndividual, fitness set)
    front: list  # its first Pareto front
    best_per_generation: list[float]  # best Sharpe lower bound of each generation's population


def evolve(universe: Universe, window: tuple[np.datetime64, np.datetime64], *, size: int = 40, generations: int = 5,
           seed: int = 0, log: ExperimentLog | None = None, window_id: int = 0, cx_prob: float = 0.9,
           eta: float = 20.0, ids: _Ids | None = None, evaluator=evaluate, **costs) -> EvolutionResult:
    """Evolve a population on ``window`` (the training window) and return the final one.

    ``evaluator`` scores a list of genomes (``fitness.evaluate``, or ``spark.spark_evaluator(...)``
    to spread the symbols over a Spark cluster with identical results)."""
    # DEAP's operators draw from the global ``random`` module: seed it for this run and put the
    # caller's state back afterwards, so a seed reproduces a run without leaking into other code.
    saved = random.getstate()
    random.seed(seed)
    try:
        return _evolve(universe, window, size, generations, seed, log, window_id, cx_prob, eta, ids,
                       costs | {"evaluator": evaluator})
    finally:
        random.setstate(saved)


def _evolve(universe, window, size, generations, seed, log, window_id, cx_prob, eta, ids, costs) -> EvolutionResult:
    log = log if log is not None else ExperimentLog()
    ids = ids or _Ids()
    np_rng = np.random.default_rng(seed)
    n_genes = len(BOUNDS)
    population = [_individual(v, ids, 0, (), f"seed:{k}") for k, v in _SEED_VECTORS.items()][:size]
    population += [_individual(np_rng.random(n_genes), ids, 0, (), "random") for _ in range(size - len(population))]
    _score(population, universe, window, log, window_id, "train", **costs)
    best = [max(i.fitness.values[0] for i in population)]
    for gen in range(1, generations + 1):
        parents = population[:]
        random.shuffle(parents)
        children = []
        for a, b in zip(parents[::2], parents[1::2], strict=False):
            x, y = list(a), list(b)
            crossed = random.random() < cx_prob
            if crossed:
                tools.cxSimulatedBinaryBounded(x, y, eta=eta, low=0.0, up=1.0)
            for child in (x, y):
                tools.mutPolynomialBounded(child, eta=eta, low=0.0, up=1.0, indpb=1.0 / n_genes)
            op = "sbx+polynomial" if crossed else "polynomial"
            children += [_individual(x, ids, gen, (a.id, b.id), op), _individual(y, ids, gen, (a.id, b.id), op)]
        _score(children, universe, window, log, window_id, "train", **costs)
        population = tools.selNSGA2(population + children, size)
        best.append(max(i.fitness.values[0] for i in population))
    front = tools.sortNondominated(population, len(population), first_front_only=True)[0]
    return EvolutionResult(population=population, front=front, best_per_generation=best)


def front_mask(sharpe_lb: np.ndarray, max_drawdown: np.ndarray, turnover: np.ndarray) -> np.ndarray:
    """Which points lie on the first Pareto front of the three objectives under ``WEIGHTS`` (higher Sharpe
    lower bound, higher (less negative) drawdown, lower turnover), by NSGA-II's own non-dominated sort."""
    points = []
    for values in zip(sharpe_lb, max_drawdown, turnover, strict=True):
        ind = creator.EmpIndividual([])
        ind.fitness.values = tuple(float(v) for v in values)
        points.append(ind)
    front = {id(ind) for ind in tools.sortNondominated(points, len(points), first_front_only=True)[0]} \
        if points else set()
    return np.array([id(ind) in front for ind in points], dtype=bool)
