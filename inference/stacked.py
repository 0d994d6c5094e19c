"""The engine of a stacked model: R runs trained in one step (issue 12).

:class:`StackTrainer` is the :class:`~inference.engine.Trainer` of a
:class:`~pyro_pstn.models.stacked.Stacked` model. Member r keeps its own training set, its own
batch order (the one a single run with its seed draws: ``randperm`` seeded by seed and epoch), its
own KL weight w_r and its own history (training loss, validation metrics); the members share the
architecture, learning rates, batch size, epochs and annealing schedule. The loss is the sum of the
members' −ELBO / B, so each member gets the gradient its single run would get for the same random
draws (``tests/test_members.py``); the draws themselves come from one generator for the stack, so a
member is a statistically equivalent run, not a bit-identical replay of a single run.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Callable, Sequence

import pyro
import torch
import torch.nn as nn
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence
from torch.utils.data import Dataset

from pyro_pstn.data import ImageSet
from pyro_pstn.models.stacked import Stacked

from .batchnorm import batch_norm_layers
from .engine import CHECKPOINT, ELBOS, EpochRecord, History, TrainConfig, Trainer, epoch_order, model_kl_weight, validate
from .loading import as_image_set, check_dataset
from .runs import check_same_config, identity, locked, save_atomic, write_json
from .spec import read_json

#: What the members of a stack may differ in; every other TrainConfig field is shared.
MEMBER_FIELDS = ("seed", "kl_weight")


class MemberELBO:
    """What makes an ELBO one of a stack (mixed into Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO``,
    as Pyro's own variants subclass them): :meth:`member_elbos` is the ELBO of each member, ``[R]``,
    from the same traces the ELBO draws (log p − log q of the draws at every latent site, the estimator
    for reparameterised sites, which are all a stackable model has; the analytic −KL(q ‖ p) wherever
    torch knows it with ``TraceMeanField_ELBO``); the loss is the sum of the members' −ELBO."""

    analytic = False

    def member_elbos(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        total, particles = 0.0, 0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            terms = []  # each [(S,) R, B] or [R, 1]: summed over all but the member dim (−2) below
            for name, site in model_trace.nodes.items():
                if site["type"] != "sample":
                    continue
                if site["is_observed"]:
                    terms.append(site["log_prob"])
                    continue
                q = guide_trace.nodes[name]
                if not q["fn"].has_rsample:
                    raise ValueError(f"guide site {name!r} is not reparameterised: a stack needs rsample")
                kl = _analytic_kl(q, site) if self.analytic else None
                terms += [site["log_prob"], -q["log_prob"]] if kl is None else [-kl]
            terms += [-q["log_prob"] for name, q in guide_trace.nodes.items()  # auxiliary guide sites
                      if q["type"] == "sample" and name not in model_trace.nodes]
            for term in terms:
                total = total + term.sum(-1).reshape(-1, term.shape[-2]).sum(0)
            particles += self.num_particles if self.vectorize_particles else 1
        return total / particles

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        return -self.member_elbos(model, guide, *args, **kwargs).sum()


class MemberTrace_ELBO(MemberELBO, Trace_ELBO):
    """``Trace_ELBO`` of a stack, member by member."""


class MemberTraceMeanField_ELBO(MemberELBO, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` of a stack, member by member."""

    analytic = True


#: The stack's ELBO of each of :data:`inference.engine.ELBOS`.
MEMBER_ELBOS = {"trace": MemberTrace_ELBO, "meanfield": MemberTraceMeanField_ELBO}


def _analytic_kl(guide_site: dict, model_site: dict) -> torch.Tensor | None:
    """KL(q ‖ p) of one site with the guide site's scale and mask (KL weight, members with w = 0),
    or None where torch has no closed form (the Monte Carlo terms are used instead)."""
    try:
        kl = kl_divergence(guide_site["fn"], model_site["fn"])
    except NotImplementedError:
        return None
    return scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"])


class StackTrainer(Trainer):
    """Fits a :class:`Stacked` model: one :class:`TrainConfig` per member (they may differ only in
    ``seed`` and ``kl_weight``); ``fit`` takes one training (and validation) set per member."""

    max_plate_nesting = 2
    elbos = MEMBER_ELBOS

    def __init__(self, model: Stacked, configs: list[TrainConfig], step_hooks: Sequence[Callable] = ()):
        if len(configs) != model.members:
            raise ValueError(f"a stack of {model.members} members needs {model.members} configs, got {len(configs)}")
        shared = {k: v for k, v in dataclasses.asdict(configs[0]).items() if k not in MEMBER_FIELDS}
        for c in configs:
            differing = [k for k, v in dataclasses.asdict(c).items() if k not in MEMBER_FIELDS and shared[k] != v]
            if differing:
                raise ValueError(f"members of a stack may differ only in {', '.join(MEMBER_FIELDS)}, not in {differing}")
        super().__init__(model, configs[0], step_hooks)
        self.configs = list(configs)
        self.kl_weight = torch.tensor([[model_kl_weight(model.base, c.kl_weight)] for c in configs],
                                      dtype=next(model.parameters()).dtype, device=self.device)
        self.member_histories = [History() for _ in configs]
        self._member_losses = torch.zeros(model.members, device=self.device)

    # ---- one step ------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, y: torch.Tensor, **schedule) -> torch.Tensor:
        """Σ_r −ELBO_r / B for images ``[R, B, C, H, W]``; each member's term is kept for its history."""
        loss = self.elbo  # the loss module of a member ELBO
        per_member = -loss.elbo.member_elbos(loss.model, loss.guide, x, y, **self.accepted(schedule)) / x.shape[-4]
        self._member_losses = per_member.detach()
        return per_member.sum()

    # ---- epochs --------------------------------------------------------------------------
    def prepare(self, train: list[Dataset], val: list[Dataset] | None) -> tuple[list, list | None]:
        """One training (and validation) set per member, any torch Datasets of (x, y) pairs, each
        checked as a single run checks its data and held in memory (a step stacks the members' batches)."""
        if len(train) != self.model.members or (val is not None and len(val) != self.model.members):
            raise ValueError(f"a stack of {self.model.members} members needs one training (and validation) set each")
        # an ordinary model, for the data to be checked as a single run's; building it draws initial
        # weights, so the random state is put back (a resumed stack draws what an uninterrupted one does)
        state = pyro.util.get_rng_state()
        member = self.model.member(0)
        pyro.util.set_rng_state(state)
        for split in [*train, *(val or [])]:
            check_dataset(member, split)
        train = [as_image_set(t) for t in train]
        val = None if val is None else [as_image_set(v) for v in val]
        if len({len(t) for t in train}) != 1:
            raise ValueError(f"the members' training sets differ in size ({sorted({len(t) for t in train})}): "
                             "stack runs whose epochs have the same number of steps")
        return [t.to(self.device) for t in train], (None if val is None else [v.to(self.device) for v in val])

    def train_epoch(self, train: list[ImageSet]) -> tuple[float, float]:
        """One pass; member r's batches in the order of a single run with its seed."""
        c, n = self.config, len(train[0])
        self.model.train()
        orders = [epoch_order(m.seed, self.epoch, n).to(self.device) for m in self.configs]
        annealing = self._annealing(-(-n // c.batch_size))
        totals, factor = torch.zeros(self.model.members, device=self.device), 1.0
        for start in range(0, n, c.batch_size):
            idx = [order[start : start + c.batch_size] for order in orders]
            x = torch.stack([t.images[i] for t, i in zip(train, idx)])
            y = torch.stack([t.labels[i] for t, i in zip(train, idx)])
            factor = annealing(self.step)
            self.train_step(x, y, factor)
            totals += self._member_losses * len(idx[0])
        self._epoch_member_losses = (totals / n).tolist()
        return sum(self._epoch_member_losses) / len(self._epoch_member_losses), factor

    def recompute_batch_norm(self, train: list[ImageSet]) -> int:
        """Nothing to do: the stackable networks have no batch norm (a stacked BN layer would pool
        the members' batches)."""
        if batch_norm_layers(self.model):
            raise NotImplementedError("precise BN of a stack with batch-norm layers: set precise_bn=False, or fit "
                                      "the runs one at a time")
        return 0

    def validate(self, val: list[ImageSet], batch_size: int = 500) -> dict[str, float]:
        """Each member validated as the ordinary model it is; the mean over members for the bar."""
        self._member_validation = []
        for r, split in enumerate(val):
            member = self.model.member(r)
            elbo = ELBOS[self.config.elbo](max_plate_nesting=Trainer.max_plate_nesting)(member.model, member.guide)
            schedule = self.accepted({**self.loss_args, "kl_weight": float(self.loss_args["kl_weight"][r, 0])})
            self._member_validation.append(validate(member, elbo, split, batch_size, **schedule))
        keys = self._member_validation[0].keys()
        return {k: sum(v[k] for v in self._member_validation) / len(val) for k in keys}

    def run_epoch(self, train: Dataset, val: Dataset) -> EpochRecord:
        self._member_validation = None
        record = super().run_epoch(train, val)
        for r, history in enumerate(self.member_histories):
            member_record = EpochRecord(record.epoch, record.step, self._epoch_member_losses[r], record.kl_factor,
                                        record.seconds / self.model.members)
            if self._member_validation is not None:
                v = self._member_validation[r]
                member_record.val_loss, member_record.val_accuracy, member_record.val_nll = (
                    v["loss"], v.get("accuracy"), v.get("nll"))
            history.records.append(member_record)
            history.train_seconds += member_record.seconds
        return record

    # ---- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {**super().state_dict(), "member_configs": [dataclasses.asdict(c) for c in self.configs],
                "member_histories": [{"records": [dataclasses.asdict(r) for r in h.records],
                                      "train_seconds": h.train_seconds} for h in self.member_histories]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.member_histories = [History([EpochRecord(**r) for r in h["records"]], h["train_seconds"])
                                 for h in state["member_histories"]]


#: A stack directory's description: the members' configs and run directories.
STACK_FILE = "stack.json"


def stack_dir_name(members: Sequence[str]) -> str:
    """A stack's own directory name, from its members' names (run or result-file names), so a rerun of
    the same members finds it again: ``stack<R>-<first member>-<digest of them all>``."""
    digest = hashlib.sha1("\n".join(members).encode()).hexdigest()[:8]
    return f"stack{len(members)}-{members[0]}-{digest}"


def fit_stack(models: list[nn.Module], trains: list[TrainConfig], configs: list[dict], run_dirs: Sequence[str | Path],
              stack_dir: str | Path, train_sets: list[Dataset], val_sets: list[Dataset] | None,
              resume: bool | None = False, progress: bool | None = None,
              on_epoch_end: Callable[..., object] | None = None) -> StackTrainer:
    """Fit R models of one kind, each initialised as its single run, as one stack, and leave in each
    member's run directory its ``config.json`` (``configs[r]``) and the checkpoint its single run would
    leave (model, epoch and history; not Adam's moments: a stack resumes from ``stack_dir``, which holds
    its own checkpoint and :data:`STACK_FILE`). ``resume``: True continues the stack there, False starts
    one (refusing a directory that exists), None continues a stack of these ``configs`` if one is there
    (a stack of others is refused, naming what differs) and starts one otherwise. Returns the trainer:
    ``model.member(r)`` and ``member_histories[r]`` are member r's; what to measure on it is the caller's."""
    stack_dir, run_dirs = Path(stack_dir), [Path(d) for d in run_dirs]
    trainer = StackTrainer(Stacked.from_models(list(models)), list(trains))
    with locked(stack_dir, what="stack"):
        if resume is None:
            resume = (stack_dir / STACK_FILE).is_file()
            if resume:
                stored = read_json(stack_dir / STACK_FILE, "stack description").get("configs", [])
                check_same_config(stack_dir, {"runs": [identity(c) for c in stored]},
                                  {"runs": [identity(c) for c in configs]}, "Delete that stack directory to fit these runs")
        if resume:
            trainer.resume(stack_dir / CHECKPOINT)
        else:
            try:
                stack_dir.mkdir(parents=True, exist_ok=False)
            except FileExistsError:
                raise ValueError(f"stack directory {stack_dir} already exists: --resume it") from None
            write_json(stack_dir / STACK_FILE, {"configs": configs, "run_dirs": [str(d) for d in run_dirs]})
        trainer.fit(train_sets, val_sets, run_dir=stack_dir, progress=progress, on_epoch_end=on_epoch_end)
    for r, (config, run_dir, train) in enumerate(zip(configs, run_dirs, trains)):
        member_trainer = Trainer(trainer.model.member(r).eval(), train)
        member_trainer.epoch, member_trainer.step = trainer.epoch, trainer.step
        member_trainer.history = trainer.member_histories[r]
        state = member_trainer.state_dict()
        del state["optimizer"]  # the stack's Adam state lives in stack_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", config)
        save_atomic(state, run_dir / CHECKPOINT)
    return trainer
