"""What runs leave behind, in one place: ``run`` writes a run's summary, tables and plots; ``sweep``
compares many runs' jobs; ``figures`` draws for both (and for the freshness study) without pyplot,
so importing a report never changes matplotlib's backend for the rest of the process."""
