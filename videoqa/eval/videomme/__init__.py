"""Video-MME: the release's question table and files (:mod:`.dataset`), the resumable, shardable run
(:mod:`.run`), scoring and the report (:mod:`.score`), the ``videoqa eval`` command line (:mod:`.cli`)
and a fake answerer for checking a download (:mod:`.dryrun`)."""
