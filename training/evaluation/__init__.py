"""Evaluation library: benchmark items through the training rollout, scored ``eval_results`` rows, report.

Modules: ``items`` (benchmark items, their schema), ``modes`` (the evaluation-mode registry), ``evaluate``
(items through the rollout in every mode), ``cdir`` (CDIR continuation), ``results`` (the ``eval_results``
contract: schema, scoring, validation), ``judge`` (optional open-answer judge), ``metrics`` / ``calibration``
(pure metric functions), ``report`` / ``document`` / ``plots`` (Markdown + HTML report) and
``paper_numbers`` (the paper's reference numbers). No Dagster import here.
"""
