"""Med-RwR training library: the agent protocol, one rollout for training and evaluation, rewards, GRPO
stages.

Modules: ``protocol`` (prompts, tag grammar, span parser, answer extraction), ``generation`` (HF generate
backend, token in / token out), ``rollout`` (the batched reasoning-with-retrieval loop, TRL ``rollout_func``,
answer scoring, CDIR continuation), ``retrievers`` (random control), ``lexicon`` (offline
UMLS-keyed entity lexicon + Aho-Corasick NER), ``rewards`` (format, accuracy, query semantic, confidence
gain), ``data`` (stage item selection and leakage proof), ``config`` (stage configs on TRL's GRPOConfig),
``trainer`` (the one GRPO trainer construction), ``smoke`` (every smoke-size value),
``tiny_model`` (smoke-profile model builder, model loader), ``launch`` (the stage entry point), and
``vllm_backend`` (optional); the evaluation library is the ``training.evaluation`` package. No Dagster import
here; the launched process reports through ``dagster_pipes``.
"""
