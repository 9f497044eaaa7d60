"""Analysis of finished fine-tuning runs, without MLflow: measures over histories (``measures``), the statistics
behind every interval (``stats``), P(True) against SliCK (``p_true``) and the verdicts on the paper's findings
(``findings``)."""
