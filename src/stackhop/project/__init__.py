"""One project, all phases: ``stackhop project migrate`` (job 2 of the design, completed).

:mod:`.phases` runs the phases in order against the journal, so that a re-run
continues at the first phase not finished; :mod:`.migrate` says what each
phase does, calling the resources, images, volumes and usage libraries;
:mod:`.report` gathers every object the migration touched into the final
report.
"""
