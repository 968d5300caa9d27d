"""End-to-end experiments that chain training, evaluation and analysis runs.

Each experiment is a list of stages (`stages.Stage`) run in order by
`stages.run`, which skips stages whose outputs exist, so an experiment can
be run in parts over several sittings.
"""
