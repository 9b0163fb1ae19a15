"""The curriculum planner: ``plan(spec, rounds) -> [PlannedStep]`` — a pure, deterministic function.

Given a validated ``CoEExperiment`` (and what the finished STEeR rounds decided), it lists every
step of the curriculum in run order, each with the exact step config a pod or the local
executor's subprocess receives. Names are deterministic and DNS-1035-friendly; every input and
output is a URI under ``<store>/<experiment>/<step>/`` (see docs/architecture.md).

STEeR rounds. How many rounds run depends on results: round N+1 is planned only when round N's
``round-N.json`` says ``continue: true``. Before a round's decision is known, ``plan`` still
shows the rest of the curriculum, planned as if every undecided round continued up to
``steer.rounds``, and marks each step after the first undecided round ``tentative=True``. A
tentative step must never be started: executors run only non-tentative steps and re-plan
(with ``observe_rounds``) after each STEeR round, which turns tentative steps into definite
ones or drops the rounds that will not run.

Adapters. Each training stage starts from the base model with the previous stage's LoRA
adapter loaded and keeps training it (no merge). Inside STEeR, round N continues round N-1's
adapter, or — with ``steer.restartFromBase`` — restarts every round from the adapter STEeR
started from. The stage after STEeR continues the final round's adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from coe_runtime import step as rt
from coe_runtime.errors import StoreError
from coe_runtime.fingerprint import fingerprint_of, identity
from coe_runtime.step import StepConfig
from coe_runtime.store import join

if TYPE_CHECKING:
    from coe_controller.spec import CoEExperiment, ResourcesSpec

    from coe_runtime.store import Store

# Step name of each training stage (speaker_id is spelled DNS-1035-friendly).
STAGE_STEP_NAMES = {"roleplay": "roleplay", "speaker_id": "speaker-id", "mixed": "mixed", "erc": "erc"}


@dataclass(frozen=True)
class PlannedStep:
    """One node of the plan DAG: the exact step config a pod or local subprocess receives."""

    name: str  # deterministic, DNS-1035-friendly (e.g. "steer-r2-train")
    config: StepConfig
    needs: tuple[str, ...] = ()  # names of steps whose outputs must be published first
    # Planned past an undecided STEeR round: may change or vanish; never start it.
    tentative: bool = False
    # Where it runs (the spec's resources with this step's override applied); None = defaults.
    resources: ResourcesSpec | None = field(default=None, compare=False)
    stage: str = ""  # model | clues | prepare | roleplay | speaker_id | steer | mixed | erc | test
    round: int | None = None  # STEeR round of steer-rN-train / steer-rN
    # A ``model`` step of a Hub id: (Secret name, key) of the Hub token its pod gets as HF_TOKEN.
    hf_token_secret: tuple[str, str] | None = field(default=None, compare=False)

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def output(self) -> str:
        return self.config.output


# Steps that run as one CPU process whatever resources the training steps ask for.
CPU_ONLY_STEPS = ("model", "prepare")


def experiment_prefix(spec: CoEExperiment) -> str:
    """``<store>/<experiment-name>``: everything the experiment writes lives under it."""
    return join(spec.spec.store, spec.metadata.name)


def step_output(spec: CoEExperiment, step_name: str) -> str:
    return join(experiment_prefix(spec), step_name)


def step_inputs(config: StepConfig) -> list[str]:
    """Every artifact URI a step config reads from the store (not raw dataset files)."""
    c = config
    uris: list[str | None]
    if isinstance(c, rt.TrainStep):
        uris = [*c.train_files, c.init_adapter, c.eval_file]
    elif isinstance(c, rt.GenerateStep):
        uris = [c.input_file, c.adapter]
    elif isinstance(c, rt.SteerRoundStep):
        uris = [c.memory, c.pool, c.adapter]
    elif isinstance(c, rt.PrepareStep):
        uris = [c.clues]
    else:
        uris = []
    if "://" in c.base_model.name_or_path:  # a model folder in the store (e.g. a ``model`` step's snapshot)
        uris.append(c.base_model.name_or_path)
    return [u for u in uris if u]


def _model(model: Any, target: type[BaseModel]) -> Any:
    """Convert a spec building block into the runtime model it subclasses."""
    return target.model_validate(model.model_dump())


def prepared_tasks(order: Sequence[str]) -> list[rt.TaskName]:
    """The task sets the prepare step writes for a curriculum (ERC always; mixed needs both others)."""
    tasks: list[rt.TaskName] = ["erc"]
    if "roleplay" in order or "mixed" in order:
        tasks.append("roleplay")
    if "speaker_id" in order or "mixed" in order:
        tasks.append("speaker_id")
    if "steer" in order:
        tasks.append("steer")
    return tasks


class _Planner:
    """Accumulates steps; one instance per ``plan`` call (keeps ``plan`` itself pure)."""

    def __init__(self, spec: CoEExperiment, rounds: dict[int, dict]):
        self.spec = spec
        self.s = spec.spec
        self.rounds = rounds
        self.steps: list[PlannedStep] = []
        self.outputs: dict[str, str] = {}  # step name -> its output prefix (ends in its fingerprint)
        self.prefix = experiment_prefix(spec)
        self.tentative = False
        self.base_model = self.s.base_model.to_ref()  # a Hub id becomes its snapshot in build()
        self.label_set = _model(self.s.dataset.label_set, rt.LabelSetRef)
        self.lora = _model(self.s.lora, rt.LoraSettings)
        self.eval_generation = _model(self.s.evaluation.generation, rt.GenerationSettings)
        self.steer = self.s.steer.options()

    # -- helpers ---------------------------------------------------------------------------
    def out(self, name: str, file: str = "") -> str:
        """Where a step planned earlier published (its fingerprint folder), or a file in it."""
        prefix = self.outputs[name]
        return join(prefix, file) if file else prefix

    def resources(self, key: str) -> ResourcesSpec:
        res = self.s.resources
        if key in CPU_ONLY_STEPS:
            # Snapshotting a model and preparing data need no accelerator: one CPU process.
            # resources.overrides.<step> (e.g. more memory, or a deadline for a 70B download) applies
            # on top of that, not instead of it.
            cpu_only = {"gpus_per_pod": 0, "nodes": 1, "nproc_per_node": 1, "deepspeed": None}
            return res.model_copy(update={**cpu_only, "deepspeed_inline": None}).for_step(key)
        return res.for_step(key)

    def distributed(self, res: ResourcesSpec, training: bool) -> rt.DistributedSettings:
        deepspeed = (res.deepspeed_inline or res.deepspeed) if training else None
        return rt.DistributedSettings(
            nproc_per_node=res.procs_per_node,
            nnodes=res.nodes,
            deepspeed=deepspeed,
            torch_threads=res.threads_per_process,
        )

    def optim(self, stage: str) -> rt.OptimSettings:
        o = self.s.optimizer
        st = getattr(self.s.training, stage)
        return rt.OptimSettings(
            epochs=st.epochs,
            learning_rate=st.learning_rate or o.learning_rate,
            betas=(o.betas[0], o.betas[1]),  # the spec checks there are two
            weight_decay=o.weight_decay,
            warmup_ratio=o.warmup_ratio,
            per_device_batch_size=st.per_device_batch_size or o.per_device_batch_size,
            gradient_accumulation_steps=st.gradient_accumulation_steps or o.gradient_accumulation_steps,
            max_length=self.s.dataset.max_length,
            gradient_checkpointing=o.gradient_checkpointing,
            group_by_length=o.group_by_length,
            seed=o.seed,
            checkpoint_every_steps=o.checkpoint_every_steps,
            max_steps=st.max_steps,
        )

    def add(self, config: StepConfig, stage: str, key: str, round_: int | None = None) -> PlannedStep:
        """Append a step; it needs the producers of its inputs and the step before it.

        The step's output is ``<experiment>/<step>/<fingerprint>``: the fingerprint is taken over
        the config without its output (whose inputs already end in their producers' fingerprints).
        """
        fp = fingerprint_of(identity(config, self.prefix))
        config = config.model_copy(
            update={"output": join(step_output(self.spec, config.name), fp), "fingerprint": fp}
        )
        self.outputs[config.name] = config.output
        producers = {s.output: s.name for s in self.steps}
        needs = {
            producers[p]
            for uri in step_inputs(config)
            for p in producers
            if uri == p or uri.startswith(p + "/")
        }
        if self.steps:
            needs.add(self.steps[-1].name)
        order = [s.name for s in self.steps]
        step = PlannedStep(
            name=config.name,
            config=config,
            needs=tuple(sorted(needs, key=order.index)),
            tentative=self.tentative,
            resources=self.resources(key),
            stage=stage,
            round=round_,
        )
        self.steps.append(step)
        return step

    def train(
        self,
        name: str,
        stage: str,
        files: list[str],
        init: str | None,
        round_: int | None = None,
        eval_file: str | None = None,
    ) -> PlannedStep:
        res = self.resources(stage)
        config = rt.TrainStep(
            name=name,
            output=step_output(self.spec, name),
            base_model=self.base_model,
            distributed=self.distributed(res, training=True),
            train_files=files,
            init_adapter=init,
            eval_file=eval_file,
            label_set=self.label_set,
            lora=self.lora,
            optim=self.optim(stage),
            generation=self.eval_generation,
        )
        if eval_file:  # the dev evaluation answers like the test step (other stages keep their identity)
            config = config.model_copy(
                update={"label_format": self.s.dataset.label_format, "decoding": self.s.evaluation.decoding}
            )
        return self.add(config, stage, stage, round_)

    def model_source(self, model: Any, name: str, secret: Any = None) -> rt.ModelRef:
        """The ModelRef later steps use for a spec's model: a Hub id is snapshotted into the store
        once per experiment by a ``model`` step planned here (its fingerprint covers only the id and
        the revision, so every run of the experiment reuses it), and the steps read its output."""
        from coe_runtime.models.hub import is_hub_id

        ref = model.to_ref()
        if not is_hub_id(ref.name_or_path):
            return ref
        for done in self.steps:  # the same Hub model for clues and training: one snapshot
            c = done.config
            if isinstance(c, rt.ModelStep) and (c.base_model.name_or_path, c.revision) == (
                ref.name_or_path,
                model.revision,
            ):
                return ref.model_copy(update={"name_or_path": c.output})
        config = rt.ModelStep(
            name=name,
            output=step_output(self.spec, name),
            base_model=rt.ModelRef(name_or_path=ref.name_or_path),  # dtype/seed do not change the files
            revision=model.revision,
        )
        step = self.add(config, "model", "model")
        token = model.hf_token_secret or secret
        if token is not None:
            self.steps[-1] = replace(step, hf_token_secret=(token.name, token.key))
        return ref.model_copy(update={"name_or_path": step.output})

    # -- the curriculum --------------------------------------------------------------------
    def build(self) -> list[PlannedStep]:
        """The whole plan, in its parts: the models, the clues, prepare, the stages, the test."""
        self.base_model = self.model_source(self.s.base_model, "model")
        clue_uri = self.plan_clues()
        self.plan_prepare(clue_uri)
        adapter = self.plan_stages()
        if self.s.evaluation.test:
            self.plan_test(adapter)
        return self.steps

    def plan_clues(self) -> str | None:
        """The clue generation the spec asks for (after its model's snapshot, for a Hub id of its
        own); returns the URI of the clue file later steps read, None without clues."""
        s = self.s
        if s.clues.source == "file":
            return s.clues.uri
        if s.clues.source != "generate":
            return None
        model = self.base_model
        if s.clues.model:
            model = self.model_source(s.clues.model, "clues-model", s.base_model.hf_token_secret)
        config = rt.CluesStep(
            name="clues",
            output=step_output(self.spec, "clues"),
            base_model=model,
            distributed=self.distributed(self.resources("clues"), training=False),
            dataset=s.dataset.to_source(),
            generation=_model(s.clues.generation, rt.GenerationSettings),
            future_turns=s.clues.future_turns,
            prompt_version=s.clues.prompt_version,
            cache=s.clues.cache,
        )
        self.add(config, "clues", "clues")
        return self.out("clues", "clues.json")

    def plan_prepare(self, clue_uri: str | None) -> None:
        s = self.s
        self.add(
            rt.PrepareStep(
                name="prepare",
                output=step_output(self.spec, "prepare"),
                base_model=self.base_model,
                distributed=self.distributed(self.resources("prepare"), training=False),
                dataset=s.dataset.to_source(),
                clues=clue_uri,
                tasks=prepared_tasks(s.stage_order),
                steer=self.steer,
                label_format=s.dataset.label_format,
            ),
            "prepare",
            "prepare",
        )

    def prep(self, file: str) -> str:
        """A file the prepare step writes."""
        return self.out("prepare", file)

    def plan_stages(self) -> str | None:
        """The training stages in the curriculum's order; returns the LoRA adapter the last one writes."""
        adapter: str | None = None  # the LoRA adapter the next stage continues
        memory: str | None = None  # the final STEeR memory (for the mixed stage)
        for stage in self.s.stage_order:
            if stage == "steer":
                adapter, memory = self.steer_rounds(
                    adapter, self.prep("memory-r0.jsonl"), self.prep("pool-r0.jsonl")
                )
                continue
            name = STAGE_STEP_NAMES[stage]
            files, eval_file = self.stage_files(stage, memory)
            step = self.train(name, stage, files, adapter, eval_file=eval_file)
            adapter = join(step.output, "adapter")
        return adapter

    def stage_files(self, stage: str, memory: str | None) -> tuple[list[str], str | None]:
        """(training files, dev file) of a stage other than STEeR; ``memory``: STEeR's final memory."""
        if stage == "roleplay":
            return [self.prep("roleplay-train.jsonl")], None
        if stage == "speaker_id":
            return [self.prep("speaker_id-train.jsonl")], None
        if stage == "mixed":
            files = [self.prep("roleplay-train.jsonl"), self.prep("speaker_id-train.jsonl")]
            return (files + [memory] if memory else files), None
        # erc
        eval_file = self.prep("erc-dev.jsonl") if self.s.evaluation.dev_each_epoch else None
        return [self.prep("erc-train.jsonl")], eval_file

    def plan_test(self, adapter: str | None) -> None:
        s = self.s
        res = self.resources("test")
        self.add(
            rt.GenerateStep(
                name="test",
                output=step_output(self.spec, "test"),
                base_model=self.base_model,
                distributed=self.distributed(res, training=False),
                input_file=self.prep("erc-test.jsonl"),
                adapter=adapter,
                label_set=self.label_set,
                generation=self.eval_generation,
                with_metrics=True,
                label_format=s.dataset.label_format,
                decoding=s.evaluation.decoding,
            ),
            "test",
            "test",
        )

    def steer_rounds(self, entry_adapter: str | None, memory: str, pool: str) -> tuple[str | None, str]:
        """Plan rounds 1..K; returns (final adapter, final memory)."""
        opts = self.steer
        generation = self.eval_generation.model_copy(update={"max_new_tokens": opts.rationale_max_new_tokens})
        adapter = entry_adapter
        for n in range(1, opts.rounds + 1):
            init = entry_adapter if opts.restart_from_base else adapter
            train = self.train(f"steer-r{n}-train", "steer", [memory], init, round_=n)
            adapter = join(train.output, "adapter")
            name = f"steer-r{n}"
            res = self.resources("steer")
            self.add(
                rt.SteerRoundStep(
                    name=name,
                    output=step_output(self.spec, name),
                    base_model=self.base_model,
                    distributed=self.distributed(res, training=False),
                    round=n,
                    memory=memory,
                    pool=pool,
                    adapter=adapter,
                    previous_rounds=[self.out(f"steer-r{k}") for k in range(1, n)],
                    label_set=self.label_set,
                    steer=opts,
                    generation=generation,
                    consistent=self.s.steer.consistent,
                ),
                "steer",
                "steer",
                n,
            )
            memory, pool = self.out(name, f"memory-r{n}.jsonl"), self.out(name, f"pool-r{n}.jsonl")
            if n == opts.rounds:
                break
            decided = self.rounds.get(n)
            if decided is None:
                self.tentative = True  # round n has not reported: assume it continues
            elif not decided.get("continue", False):
                break
        return adapter, memory


def plan(spec: CoEExperiment, rounds: dict[int, dict] | None = None) -> list[PlannedStep]:
    """The curriculum's steps in run order.

    ``rounds`` maps a finished STEeR round's number to its ``round-N.json`` (see
    ``observe_rounds``); rounds not in it are undecided and the steps after them tentative.
    """
    return _Planner(spec, dict(rounds or {})).build()


def observe_rounds(spec: CoEExperiment, store: Store | None = None) -> dict[int, dict]:
    """The ``round-N.json`` of every STEeR round of *this* plan that is published, in order.

    Round N's output folder depends on the rounds before it (its fingerprint covers their memory),
    so the rounds are found one at a time: plan with the decisions known so far, look at round N.
    """
    from coe_runtime.store import get_store

    store = store or get_store(spec.spec.store)
    rounds: dict[int, dict] = {}
    for n in range(1, spec.spec.steer.rounds + 1):
        step = next((s for s in plan(spec, rounds) if s.name == f"steer-r{n}"), None)
        if step is None or not store.is_published(step.output):
            break
        uri = join(step.output, f"round-{n}.json")
        try:
            decision = store.read_json(uri)
        except (ValueError, StoreError) as e:
            raise StoreError(f"{uri}: published round has no readable decision ({e})") from None
        if not isinstance(decision, dict) or "continue" not in decision:
            raise StoreError(f"{uri}: expected an object with a boolean 'continue' field")
        rounds[n] = decision
        if not decision["continue"]:
            break
    return rounds


def plan_as_dicts(steps: list[PlannedStep]) -> list[dict[str, Any]]:
    """JSON-friendly view of a plan (``coe-ctl plan --output json``)."""
    out = []
    for s in steps:
        res = s.resources
        out.append(
            {
                "name": s.name,
                "kind": s.kind,
                "stage": s.stage,
                "round": s.round,
                "needs": list(s.needs),
                "tentative": s.tentative,
                "fingerprint": s.config.fingerprint,
                "output": s.output,
                "inputs": step_inputs(s.config),
                "init_adapter": getattr(s.config, "init_adapter", None) or getattr(s.config, "adapter", None),
                "resources": res.model_dump(mode="json", by_alias=True, exclude_none=True) if res else None,
                "config": s.config.model_dump(mode="json"),
            }
        )
    return out
