"""Stage configurations: TRL's ``GRPOConfig`` with the paper's values as defaults (docs/method.md §2).

Sampling is temperature only: TRL scores ``log_softmax(logits / temperature)``, so a config that sets top-p,
top-k, min-p, a repetition penalty or ``generation_kwargs`` is refused (the policy that samples must be the
policy that is scored).

A config only states what differs from the paper: 8 generations per prompt, lr 1e-6, KL beta 1e-3 (k3
estimator, a reference model), clip epsilon 0.2, token-level loss (``loss_type="dapo"``), group-normalised
advantages, temperature 1.0, top-p 1.0, bf16, 1 epoch, 5 % warm-up, 4 prompts x 8 generations per device
step, gradient accumulation 2. The fields added for the agent loop (rounds, passages per query, round budget)
live here too, so one object (and its hash) describes a stage run.

Two fields exist for **ablations only** (the learning check's controls, ``benchmarks/learning_check_real.py``;
a real stage run leaves them at their defaults): ``retriever`` (``"kb"``, the pinned KB, or ``"random"``,
passages drawn at random from the same KB version whatever the query) and ``train_on_inserted`` (False;
True trains the policy on the system-inserted tokens too). Set, they are hashed (they change what is
trained); at their defaults they are left out of the hash, so a production config hashes as before they
existed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

from trl import GRPOConfig

from .rewards import STAGE_REWARDS, stage_weights
from .rollout.settings import RolloutSettings

# GRPOConfig fields that do not change what is trained (where it is written, how often it is logged)
_NOT_HASHED = {
    "output_dir",
    "logging_dir",
    "run_name",
    "report_to",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "push_to_hub",
    "hub_model_id",
    "overwrite_output_dir",
    "dataloader_num_workers",
}


ABLATION_DEFAULTS: dict[str, Any] = {"retriever": "kb", "train_on_inserted": False}
"""The ablation-only fields and their production values."""
RETRIEVERS = ("kb", "random")
"""Values of :attr:`StageConfig.retriever`: ``kb`` (production) and ``random`` (ablation only)."""


@dataclass
class StageConfig(GRPOConfig):
    """A GRPO stage of Med-RwR. ``stage``: 1 (text MCQs; format + accuracy) or 2 (multimodal; all four
    rewards, from the stage-1 checkpoint). ``reward_weights`` (TRL's own field, in the order of
    :data:`training.rewards.STAGE_REWARDS`): unset means the paper's for the stage; a list of another length
    is refused. ``retriever`` and ``train_on_inserted`` are ablation switches (module docstring)."""

    stage: int = field(default=1, metadata={"help": "1 = text-only stage, 2 = multimodal stage."})
    max_rounds: int = field(
        default=3, metadata={"help": "Generation rounds per trajectory (retrieval after all but the last)."}
    )
    retrieval_k: int = field(default=3, metadata={"help": "Passages per query."})
    search_mode: str = field(default="dense", metadata={"help": "Retriever mode: dense, lexical or hybrid."})
    max_new_tokens_per_round: int = field(
        default=1024, metadata={"help": "Token budget of one generation round."}
    )
    # the paper's values (TRL's own defaults differ)
    num_generations: int | None = field(default=8, metadata={"help": "Completions per prompt."})
    learning_rate: float = field(default=1e-6, metadata={"help": "Peak learning rate."})
    beta: float = field(default=1e-3, metadata={"help": "KL coefficient (k3 estimator)."})
    epsilon: float = field(default=0.2, metadata={"help": "PPO clip range."})
    loss_type: str = field(default="dapo", metadata={"help": "Token-level loss aggregation."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling."})
    scale_rewards: str = field(default="group", metadata={"help": "(r - mean) / (std + 1e-4) per group."})
    max_completion_length: int | None = field(
        default=8192, metadata={"help": "Sampled tokens per trajectory."}
    )
    per_device_train_batch_size: int = field(
        default=32, metadata={"help": "Completions per device step (4 prompts x 8)."}
    )
    gradient_accumulation_steps: int = field(default=2, metadata={"help": "Gradient accumulation."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the stage items."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Linear warm-up fraction."})
    bf16: bool | None = field(default=True, metadata={"help": "bf16 mixed precision (set False on CPU)."})
    logging_steps: float = field(
        default=1, metadata={"help": "Log (and report through Pipes) every n steps."}
    )
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoint by steps."})
    save_steps: float = field(default=50, metadata={"help": "Checkpoint every n steps (resume granularity)."})
    report_to: Any = field(default="none", metadata={"help": "Loggers besides Pipes."})
    # ---- ablation only: the learning check's controls; a real stage run leaves both at their defaults ----
    retriever: str = field(
        default=ABLATION_DEFAULTS["retriever"],
        metadata={
            "help": "ABLATION ONLY. 'kb' (default, production): the rollout searches the KB retriever the "
            "launcher pinned. 'random': every query gets retrieval_k passages drawn uniformly at random "
            "(seeded by `seed`) from the same KB table version, whatever it asks "
            "(training.evaluation.evaluate.KBRandomRetriever), so nothing can be learned through retrieval."
        },
    )
    train_on_inserted: bool = field(
        default=ABLATION_DEFAULTS["train_on_inserted"],
        metadata={
            "help": "ABLATION ONLY. False (default, production): the loss covers only the tokens the policy "
            "sampled (env_mask 0 on retrieved passages, forced answer openers and the closing EOS). True: "
            "env_mask forced to 1, so the policy is also trained on the system-inserted text."
        },
    )

    def __post_init__(self):
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        paper = stage_weights(self.stage)
        if self.reward_weights is None:
            self.reward_weights = paper
        elif len(self.reward_weights) != len(paper):
            given = list(self.reward_weights)
            raise ValueError(
                f"reward_weights {given} has {len(given)} weights; stage {self.stage} has "
                f"{len(paper)} rewards {list(STAGE_REWARDS[self.stage])} (paper: {paper}); "
                "leave it unset for the paper's"
            )
        if self.max_rounds < 1 or self.retrieval_k < 1:
            raise ValueError("max_rounds and retrieval_k must be >= 1")
        if self.search_mode not in ("dense", "lexical", "hybrid"):
            raise ValueError(f"search_mode must be dense, lexical or hybrid, got {self.search_mode!r}")
        off_policy = {
            name: value
            for name, value, neutral in (
                ("top_p", self.top_p, (1.0,)),
                ("top_k", self.top_k, (0, None)),
                ("min_p", self.min_p, (None, 0.0)),
                ("repetition_penalty", self.repetition_penalty, (1.0,)),
            )
            if value not in neutral
        }
        if self.generation_kwargs:
            off_policy["generation_kwargs"] = self.generation_kwargs
        if off_policy:
            raise ValueError(
                f"sampling settings {off_policy} would make the rollout sample from another distribution "
                "than the one TRL's loss scores (log_softmax(logits / temperature)): a silently biased "
                "gradient. "
                "Set only temperature; leave top_p=1.0, top_k=0, min_p and repetition_penalty unset"
            )
        if self.retriever not in RETRIEVERS:
            raise ValueError(
                f"retriever must be one of {list(RETRIEVERS)} ('random' is an ablation), "
                f"got {self.retriever!r}"
            )
        super().__post_init__()

    def hashed_values(self) -> dict[str, Any]:
        """The values that define the training run (paths and logging cadence left out; the ablation fields
        only when set away from production)."""
        out = {}
        for f in fields(self):
            if f.name in _NOT_HASHED or f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            if f.name in ABLATION_DEFAULTS and value == ABLATION_DEFAULTS[f.name]:
                continue  # production value: the hash of a production config does not depend on these fields
            out[f.name] = (
                value
                if isinstance(value, str | int | float | bool | type(None) | list | dict)
                else str(value)
            )
        return out

    def config_hash(self) -> str:
        """sha256 (first 16 hex) of :meth:`hashed_values` as sorted JSON."""
        blob = json.dumps(self.hashed_values(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def rollout_settings(self) -> RolloutSettings:
        """The rollout budgets of this stage; the one place GRPOConfig's ``max_completion_length`` becomes
        ``max_completion_tokens`` (unset: 8192, this config's default)."""
        return RolloutSettings(
            max_rounds=self.max_rounds,
            retrieval_k=self.retrieval_k,
            max_new_tokens_per_round=self.max_new_tokens_per_round,
            max_completion_tokens=self.max_completion_length or 8192,
            search_mode=self.search_mode,
        )


SET_BY_LAUNCH = frozenset({"stage", "output_dir"})
"""Fields :func:`stage_config` sets from the launch arguments (``--stage``, ``--output-dir``), not
overrides."""


def field_names() -> frozenset[str]:
    """Every field a stage run can set: ``StageConfig``'s (the agent fields) and ``trl.GRPOConfig``'s."""
    return frozenset(f.name for f in fields(StageConfig))


def check_overrides(overrides: dict[str, Any], where: str = "overrides") -> None:
    """Refuse names that are not fields of :class:`StageConfig` (with ``trl.GRPOConfig``'s), naming them."""
    unknown = sorted(set(overrides) - field_names())
    if unknown:
        raise ValueError(
            f"unknown config fields {unknown} in {where}; the valid names are the fields of "
            "training.config.StageConfig and trl.GRPOConfig (training.config.field_names())"
        )


def stage_config(stage: int, output_dir: str, **overrides: Any) -> StageConfig:
    """The stage's config with ``overrides`` (any ``StageConfig``/``GRPOConfig`` field); unknown keys fail."""
    check_overrides(overrides)
    return StageConfig(stage=stage, output_dir=output_dir, **overrides)
